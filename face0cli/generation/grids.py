"""Labelled image grids (paper Fig. 5-7 style): sweeps, strips, debias runs, training validation, contact sheets."""

from __future__ import annotations

from collections.abc import Sequence

from PIL import Image, ImageDraw, ImageFont


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow without scalable default font
        return ImageFont.load_default()


def make_grid(
    images: Sequence[Image.Image],
    rows: int,
    cols: int,
    *,
    row_labels: Sequence[str] | None = None,
    col_labels: Sequence[str] | None = None,
    title: str = "",
    tile: int | None = None,
    tile_labels: Sequence[str] | None = None,
) -> Image.Image:
    """Lay images out in a labelled grid (paper Fig. 5-7 style): rows x cols tiles, labels on the left and top."""
    if len(images) != rows * cols:
        raise ValueError(f"{len(images)} images do not fill a {rows}x{cols} grid")
    w0, h0 = images[0].size
    tile = tile or max(w0, 128)
    scale = tile / w0
    tw, th = tile, int(round(h0 * scale))
    fsize = max(12, tile // 12)
    font = _font(fsize)
    left = (max((len(s) for s in row_labels), default=0) * fsize * 0.6 + 12) if row_labels else 0
    left = int(left)
    top = (fsize + 12 if col_labels else 0) + (fsize + 14 if title else 0)
    pad = 4
    W = left + cols * (tw + pad) + pad
    H = top + rows * (th + pad) + pad
    canvas = Image.new("RGB", (W, H), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    y_title = 6
    if title:
        draw.text((pad + 2, y_title), title, fill=(0, 0, 0), font=font)
    ycol = (fsize + 14 if title else 0) + 4
    for j in range(cols):
        x = left + pad + j * (tw + pad)
        if col_labels:
            draw.text((x + 2, ycol), col_labels[j], fill=(0, 0, 0), font=font)
    for i in range(rows):
        y = top + pad + i * (th + pad)
        if row_labels:
            draw.text((6, y + th // 2 - fsize // 2), row_labels[i], fill=(0, 0, 0), font=font)
        for j in range(cols):
            x = left + pad + j * (tw + pad)
            im = images[i * cols + j].convert("RGB")
            if im.size != (tw, th):
                im = im.resize((tw, th), Image.Resampling.NEAREST if scale >= 2 else Image.Resampling.LANCZOS)
            canvas.paste(im, (x, y))
            label = tile_labels[i * cols + j] if tile_labels else ""
            if label:
                small = _font(max(10, fsize * 3 // 4))
                x1, y1, x2, y2 = draw.textbbox((x + 3, y + 3), label, font=small)
                draw.rectangle((x1 - 2, y1 - 2, x2 + 2, y2 + 2), fill=(0, 0, 0))
                draw.text((x + 3, y + 3), label, fill=(255, 255, 255), font=small)
    return canvas
