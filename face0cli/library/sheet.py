"""Contact sheets of the character library: a labelled grid of the characters' thumbnails (paper §3 uses).

Characters made from photos (§2.1), sampled from the face space (§3.1) or mixed (§3.3) are names and vectors;
a sheet shows what each one looks like, from the thumbnail the library keeps (face0cli.library.store), with a
placeholder tile for characters that have none. Needs Pillow only (no torch), like `face0 character list`.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from face0cli.errors import BadInput, ParameterError
from face0cli.library.characters import unshadowed_examples
from face0cli.library.store import Character, FaceStore

BACKGROUND = (255, 255, 255)
PLACEHOLDER = (214, 214, 218)
SILHOUETTE = (178, 178, 186)


@dataclass(frozen=True)
class SheetTile:
    """One tile of a sheet: an image (None: the placeholder), a name and a second caption line."""

    name: str
    caption: str = ""
    image: np.ndarray | Image.Image | None = None


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow without the scalable default font
        return ImageFont.load_default()


def placeholder(tile: int) -> Image.Image:
    """A grey tile with a head-and-shoulders silhouette, for a character without a thumbnail."""
    im = Image.new("RGB", (tile, tile), PLACEHOLDER)
    d = ImageDraw.Draw(im)
    r = tile * 0.18
    cx, cy = tile / 2, tile * 0.4
    d.ellipse((cx - r, cy - r, cx + r, cy + r), fill=SILHOUETTE)
    d.ellipse((tile * 0.2, tile * 0.66, tile * 0.8, tile * 1.2), fill=SILHOUETTE)
    return im


def _fit(text: str, font: ImageFont.ImageFont | ImageFont.FreeTypeFont, width: int, draw: ImageDraw.ImageDraw) -> str:
    """TEXT, cut with '…' so that it fits WIDTH pixels."""
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "…", font=font) > width:
        text = text[:-1]
    return text + "…"


def render_sheet(
    tiles: Sequence[SheetTile], *, columns: int | None = None, tile: int = 128, title: str = ""
) -> Image.Image:
    """Lay tiles out in a grid, each image fitted into a TILE x TILE square with two caption lines below.

    Args:
        tiles: the tiles, in reading order.
        columns: tiles per row (default: about square, at most 8).
        tile: the square's side in pixels (>= 32).
        title: a line above the grid.

    Raises:
        ParameterError: no tiles, or a bad columns / tile.
    """
    if not tiles:
        raise ParameterError("a contact sheet needs at least one character.")
    if columns is None:
        columns = min(8, math.ceil(math.sqrt(len(tiles))))
    if isinstance(columns, bool) or int(columns) != columns or columns < 1:
        raise ParameterError(f"columns must be a whole number >= 1, got {columns!r}.")
    if isinstance(tile, bool) or int(tile) != tile or tile < 32:
        raise ParameterError(f"the tile size must be a whole number >= 32, got {tile!r}.")
    columns = min(int(columns), len(tiles))
    rows = math.ceil(len(tiles) / columns)
    tile = int(tile)
    fsize = max(10, tile // 10)
    small_size = max(9, fsize * 4 // 5)
    font, small = _font(fsize), _font(small_size)
    pad = max(4, tile // 16)
    caption_h = fsize + small_size + 10
    top = fsize + 2 * pad if title else 0
    width = pad + columns * (tile + pad)
    height = top + pad + rows * (tile + caption_h + pad)
    sheet = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    if title:
        draw.text((pad, pad), _fit(title, font, width - 2 * pad, draw), fill=(0, 0, 0), font=font)
    for i, t in enumerate(tiles):
        x = pad + (i % columns) * (tile + pad)
        y = top + pad + (i // columns) * (tile + caption_h + pad)
        im = placeholder(tile) if t.image is None else _as_image(t.image)
        im = im.copy()
        im.thumbnail((tile, tile), Image.Resampling.LANCZOS if max(im.size) > tile else Image.Resampling.NEAREST)
        if max(im.size) < tile:  # small thumbnails are scaled up whole pixels, so they stay crisp
            k = tile / max(im.size)
            im = im.resize((max(1, round(im.width * k)), max(1, round(im.height * k))), Image.Resampling.NEAREST)
        sheet.paste(PLACEHOLDER if t.image is None else BACKGROUND, (x, y, x + tile, y + tile))
        sheet.paste(im, (x + (tile - im.width) // 2, y + (tile - im.height) // 2))
        draw.text((x, y + tile + 3), _fit(t.name, font, tile, draw), fill=(0, 0, 0), font=font)
        if t.caption:
            draw.text((x, y + tile + fsize + 6), _fit(t.caption, small, tile, draw), fill=(90, 90, 90), font=small)
    return sheet


def _as_image(image: np.ndarray | Image.Image) -> Image.Image:
    if isinstance(image, Image.Image):
        return image.convert("RGB")
    return Image.fromarray(np.asarray(image, dtype=np.uint8)).convert("RGB")


def character_caption(c: Character) -> str:
    """The second caption line of a character: its kind and tags ("photo · hero, villain")."""
    return c.kind + (" · " + ", ".join(c.tags) if c.tags else "")


def contact_sheet(
    store: FaceStore,
    names: Sequence[str] | None = None,
    *,
    tag: str | None = None,
    kind: str | None = None,
    grep: str | None = None,
    columns: int | None = None,
    tile: int = 128,
    title: str | None = None,
    examples: FaceStore | None = None,
) -> Image.Image:
    """A labelled grid of the library's characters' thumbnails (placeholder tiles for those without one).

    Args:
        store: the library.
        names: these characters in this order (None: every character, sorted, after the filters).
        tag, kind, grep: FaceStore.find filters, applied to NAMES too when given.
        columns, tile: see render_sheet.
        title: above the grid (default: the library file and the number of characters).
        examples: the model's example characters (or None): those the library does not shadow follow its own,
            captioned "example", and NAMES may name them, as a name finds them in `face0 generate`.

    Raises:
        UnknownCharacter: one of NAMES is in neither the library nor the examples.
        ParameterError: nothing is selected.
    """
    own = {c.name: c for c in store.find(tag=tag, kind=kind, grep=grep)}
    extra = {c.name: c for c in unshadowed_examples(store, examples, tag=tag, kind=kind, grep=grep)}
    if names is not None:
        every = set(store.names()) | (set(examples.names()) if examples is not None else set())
        for n in names:
            if n not in every:
                raise store._unknown(n, every)
        picked = [n for n in dict.fromkeys(names) if n in own or n in extra]
    else:
        picked = [*own, *extra]
    if not picked:
        raise ParameterError("no character matches; nothing to put on the sheet.")
    thumbs = store.thumbnails([n for n in picked if n in own and own[n].has_thumbnail])
    if examples is not None:
        thumbs |= examples.thumbnails([n for n in picked if n in extra and extra[n].has_thumbnail])
    tiles = []
    for n in picked:
        c = own.get(n) or extra[n]
        tiles.append(SheetTile(n, ("example · " if n in extra else "") + character_caption(c), thumbs.get(n)))
    if title is None:
        n_extra = sum(n in extra for n in picked)
        title = f"{store.path.name}: {len(picked) - n_extra} character{'s' if len(picked) - n_extra != 1 else ''}"
        if n_extra:
            title += f" + {n_extra} example{'s' if n_extra != 1 else ''} of the model"
    return render_sheet(tiles, columns=columns, tile=tile, title=title)


def save_contact_sheet(image: Image.Image, out: str | os.PathLike[str]) -> Path:
    """Write a sheet as PNG (atomically: a temporary file beside it, then a rename); returns the path.

    Raises:
        BadInput: OUT is a folder or cannot be written.
    """
    path = Path(out).expanduser()
    if path.is_dir():
        raise BadInput(f"{path} is a folder; give the sheet's file name (sheet.png).")
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        image.save(tmp, format="PNG")
        tmp.replace(path)
    except OSError as e:
        raise BadInput(f"cannot write {path} ({e.strerror or e}).") from e
    return path


__all__ = ["SheetTile", "character_caption", "contact_sheet", "placeholder", "render_sheet", "save_contact_sheet"]
