"""`face0 embed`, `face0 mix` and `face0 character ...`: the character library from the command line (paper §3)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from face0cli.cli.group import Face0Group
from face0cli.cli.options import (
    EmbedderWeightsOpt,
    ForceOpt,
    JsonOpt,
    ModelOpt,
    NameOpt,
    NoteOpt,
    StoreOpt,
    ThumbnailOpt,
    check_writable,
    open_store,
    print_json,
    store_for_new,
)
from face0cli.console import console

character_app = typer.Typer(
    cls=Face0Group, help="Keep a library of characters: real people and invented faces.", no_args_is_help=True
)


def embed(
    photos: Annotated[list[Path], typer.Argument(help="One or more photos of the same person.", show_default=False)],
    name: NameOpt,
    force: ForceOpt = False,
    save_crop: Annotated[
        Path | None, typer.Option("--save-crop", help="Also save the 160x160 face crops in this folder.")
    ] = None,
    note: NoteOpt = "",
    store: StoreOpt = None,
    embedder_weights: EmbedderWeightsOpt = None,
    model: ModelOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Embed the face in PHOTO(s) and save it as a character (several photos: their mean, paper §3.3).

    The embedder is the one of --model (default: the embedded default model's synthetic embedder), or
    InceptionResnetV1 with VGGFace2 weights when --embedder-weights (or $FACE0_EMBEDDER_WEIGHTS) is given."""
    lib = store_for_new(store, name, force)
    if save_crop is not None:
        check_writable(save_crop, folder=True, option="--save-crop")

    from face0cli.faces.registry import embedder_for_embed
    from face0cli.library.characters import embed_character

    embedder = embedder_for_embed(model, weights=embedder_weights)
    made = embed_character(photos, name, embedder, note=note)
    char, results = made.character, made.photos
    crops: list[str] = []
    if save_crop is not None:
        crops = _save_crops(save_crop, name, [r.crop for r in results], force)
    lib.add(char, force=force, thumbnail=results[0].crop)  # the first face crop is the character's thumbnail

    if as_json:
        print_json({"character": char.to_json(), "photos": [r.to_json() for r in results], "crops": crops})
        return
    from rich.table import Table

    table = Table(title=f"face0 embed -> {name}", title_justify="left")
    for col in ("photo", "box (x0, y0, x1, y1)", "prob", "face px", "norm"):
        table.add_column(col)
    import numpy as np

    for r in results:
        d = r.detection
        table.add_row(
            r.source,
            ", ".join(f"{v:.0f}" for v in d.box),
            f"{d.prob:.3f}",
            f"{d.size:.0f}",
            f"{float(np.linalg.norm(r.vector)):.2f}",
        )
    console.print(table)
    kind = f"mean of {len(results)} photos" if len(results) > 1 else "1 photo"
    norm = float(np.linalg.norm(char.vector))
    console.print(_saved(name, f"({kind}, {char.dim}-d, norm {norm:.2f}, embedder {char.embedder_id}) to {lib.path}"))
    for c in crops:
        console.print(f"crop: {c}")


def mix(
    specs: Annotated[
        list[str] | None,
        typer.Argument(
            help="Characters with weights, e.g. alice=0.7 bob=0.3 (a bare name weighs 1).", show_default=False
        ),
    ] = None,
    name: Annotated[str, typer.Option("--name", help="Name of the new character.", show_default=False)] = "",
    t: Annotated[
        float | None,
        typer.Option("--t", help="Interpolate between exactly two characters: (1-t)*A + t*B, t in [0, 1]."),
    ] = None,
    extrapolate: Annotated[
        bool, typer.Option("--extrapolate", help="Allow --t outside [0, 1] (beyond the two faces).")
    ] = False,
    base: Annotated[str | None, typer.Option("--base", help="Direction edit: the character to edit.")] = None,
    towards: Annotated[str | None, typer.Option("--towards", help="Direction edit: move towards this one.")] = None,
    origin: Annotated[
        str | None,
        typer.Option("--origin", help="Direction edit: the direction is TOWARDS - ORIGIN (else TOWARDS - BASE)."),
    ] = None,
    amount: Annotated[float, typer.Option("--amount", help="Direction edit: how far to move.")] = 0.5,
    strip: Annotated[
        int, typer.Option("--strip", help="With --model: render an N-image strip from the start to the result.")
    ] = 0,
    model: ModelOpt = None,
    prompt: Annotated[str, typer.Option("--prompt", "-p", help="Prompt of the strip.")] = "a photo of a person",
    seed: Annotated[int, typer.Option("--seed", "-s", help="The strip's fixed seed.")] = 0,
    steps: Annotated[
        int | None, typer.Option("--steps", help="Sampling steps of the strip (default: the model's, else 50).")
    ] = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="The strip PNG (default: NAME-strip.png).")] = None,
    thumbnail: ThumbnailOpt = True,
    force: ForceOpt = False,
    note: NoteOpt = "",
    store: StoreOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Make a new character from others: weighted mean, interpolation, or a direction edit (paper §3.3).

    With --strip N and a model, also render an interpolation strip at a fixed seed (paper Fig. 5/6).
    """
    from face0cli.errors import BadInput, ParameterError
    from face0cli.library.characters import mix_characters

    if not name:
        raise BadInput("give the new character a name with --name.")
    from face0cli.generation.context import example_characters

    lib = store_for_new(store, name, force)
    made = mix_characters(
        lib, specs or [], t=t, base=base, towards=towards, origin=origin, amount=amount, extrapolate=extrapolate,
        examples=example_characters(model),
    )  # fmt: skip
    char = made.character(name, note=note)
    strip_path = None
    ctx = None
    if strip:
        if strip < 2:
            raise ParameterError(f"--strip must be at least 2 images, got {strip}.")
        from face0cli.config import SampleConfig
        from face0cli.generation.context import ModelContext, check_free
        from face0cli.generation.strip import render_strip

        strip_path = out or Path(f"{name}-strip.png")
        check_writable(strip_path, folder=False)
        check_free([strip_path], force)
        ctx = ModelContext(model, "cpu", "fp32", store, None)
        start, end = made.strip_ends()
        sample = SampleConfig(steps=ctx.steps(steps))
        render_strip(ctx, start, end, strip, strip_path, prompt=prompt, seed=seed, sample=sample, title=name)
    lib.add(char, force=force, thumbnail=_rendered_thumbnail(ctx, model, store, char) if thumbnail else None)
    if as_json:
        print_json(char.to_json() | {"strip": str(strip_path) if strip_path else None})
    else:
        console.print(_saved(name, f"({made.op}) to {lib.path}"))
        if strip_path:
            console.print(f"strip: {strip_path}")


TagFilterOpt = Annotated[str | None, typer.Option("--tag", help="Only characters with this tag.")]
KindFilterOpt = Annotated[
    str | None, typer.Option("--kind", help="Only characters of this kind (photo, random, mix...).")
]
GrepOpt = Annotated[
    str | None, typer.Option("--grep", help="Only characters whose name, note, tags or provenance contain TEXT.")
]


@character_app.command("list")
def character_list(
    tag: TagFilterOpt = None,
    kind: KindFilterOpt = None,
    grep: GrepOpt = None,
    model: ModelOpt = None,
    store: StoreOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """List the characters in the library (all, or those matching --tag, --kind and --grep), then the model's
    example characters that a name finds when the library lacks it (--json: the library only)."""
    from face0cli.generation.context import example_characters
    from face0cli.library.characters import unshadowed_examples

    lib = open_store(store)
    chars = lib.find(tag=tag, kind=kind, grep=grep)
    if as_json:
        print_json([c.to_json() for c in chars])
        return
    filtered = any(x is not None for x in (tag, kind, grep))
    if chars:
        console.print(_character_table(chars, f"{len(chars)} characters in {lib.path}"))
    else:
        console.print(f"no characters {'match' if filtered else 'in'} {lib.path}")
    extra = unshadowed_examples(lib, example_characters(model), tag=tag, kind=kind, grep=grep)
    if extra:
        title = f"{len(extra)} example characters of the model, found by name when your library lacks it"
        console.print(_character_table(extra, title))


def _saved(name: str, rest: str) -> Any:
    """ "saved NAME REST", the name in bold (a rich Text: the console prints plain text, brackets and all)."""
    from rich.text import Text

    return Text.assemble("saved ", (name, "bold"), f" {rest}")


def _character_table(chars: list[Any], title: str) -> Any:
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    for col in ("name", "kind", "tags", "thumb", "embedder", "dim", "created", "note"):
        table.add_column(col, overflow="fold")
    for c in chars:
        table.add_row(
            c.name,
            c.kind,
            ", ".join(c.tags),
            "yes" if c.has_thumbnail else "",
            c.embedder_id,
            str(c.dim),
            c.created[:19].replace("T", " "),
            c.note,
        )
    return table


@character_app.command("tag")
def character_tag(
    name: Annotated[str, typer.Argument(help="The character's name.", show_default=False)],
    tags: Annotated[list[str] | None, typer.Argument(help="Tags to add (or remove).", show_default=False)] = None,
    remove: Annotated[bool, typer.Option("--remove", help="Remove these tags instead of adding them.")] = False,
    replace: Annotated[bool, typer.Option("--set", help="Replace all the character's tags by these.")] = False,
    store: StoreOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Add tags to a character (lower-case words: hero, cast-2024...), remove them, or set them; prints its tags."""
    from face0cli.errors import BadInput

    if remove and replace:
        raise BadInput("give --remove or --set, not both.")
    if not tags and not replace:
        raise BadInput("give one or more tags (or --set with none to clear them).")
    lib = open_store(store)
    if replace:
        now = lib.set_tags(name, tags or [])
    elif remove:
        now = lib.remove_tags(name, tags or [])
    else:
        now = lib.add_tags(name, tags or [])
    if as_json:
        print_json({"name": name, "tags": list(now)})
    else:
        console.print(f"{name}: {', '.join(now) if now else '(no tags)'}")


@character_app.command("sheet")
def character_sheet(
    names: Annotated[
        list[str] | None, typer.Argument(help="These characters, in this order (default: all).", show_default=False)
    ] = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="The sheet PNG to write.")] = Path("sheet.png"),
    tag: TagFilterOpt = None,
    kind: KindFilterOpt = None,
    grep: GrepOpt = None,
    columns: Annotated[int | None, typer.Option("--columns", help="Tiles a row (default: about square).")] = None,
    tile: Annotated[int, typer.Option("--tile", help="Tile size in pixels.")] = 128,
    force: ForceOpt = False,
    model: ModelOpt = None,
    store: StoreOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """A contact sheet of the library: each character's thumbnail with its name, kind and tags, then the model's
    example characters that your library does not shadow (as `character list`)."""
    from face0cli.generation.context import check_free, example_characters
    from face0cli.library.sheet import contact_sheet, save_contact_sheet

    check_writable(out, folder=False)
    check_free([out], force)
    lib = open_store(store)
    examples = example_characters(model)
    sheet = contact_sheet(
        lib, names or None, tag=tag, kind=kind, grep=grep, columns=columns, tile=tile, examples=examples
    )
    path = save_contact_sheet(sheet, out)
    if as_json:
        print_json({"sheet": str(path), "size": list(sheet.size)})
    else:
        console.print(f"contact sheet ({sheet.width}x{sheet.height}) -> {path}")


@character_app.command("show")
def character_show(
    name: Annotated[str, typer.Argument(help="The character's name.", show_default=False)],
    model: ModelOpt = None,
    store: StoreOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Show one character (of the library, else the model's example of that name): kind, embedder, provenance,
    note."""
    from face0cli.generation.context import example_characters
    from face0cli.library.characters import with_examples

    lib = open_store(store)
    char = with_examples(lib, example_characters(model)).get(name)
    data = char.to_json()
    if as_json:
        print_json(data)
        return
    from rich.table import Table

    example = name not in lib
    title = f"{name} (an example character of the model)" if example else name
    table = Table(show_header=False, title=title, title_justify="left")
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    for k, v in data.items():
        if k in ("name",):
            continue
        table.add_row(k, json.dumps(v, indent=1) if isinstance(v, (dict, list)) else str(v))
    console.print(table)


@character_app.command("rm")
def character_rm(
    names: Annotated[list[str], typer.Argument(help="Characters to remove.", show_default=False)],
    store: StoreOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Remove characters from the library."""
    lib = open_store(store)
    for n in names:
        lib.get(n)  # every name must exist before anything is removed
    for n in names:
        lib.remove(n)
    if as_json:
        print_json({"removed": names})
    else:
        console.print(f"removed {', '.join(names)}")


@character_app.command("rename")
def character_rename(
    old: Annotated[str, typer.Argument(help="Current name.", show_default=False)],
    new: Annotated[str, typer.Argument(help="New name.", show_default=False)],
    force: ForceOpt = False,
    store: StoreOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Rename a character."""
    open_store(store).rename(old, new, force=force)
    if as_json:
        print_json({"renamed": old, "to": new})
    else:
        console.print(f"renamed {old} -> {new}")


@character_app.command("export")
def character_export(
    names: Annotated[list[str], typer.Argument(help="Characters to export.", show_default=False)],
    out: Annotated[Path, typer.Option("--out", "-o", help="The library file to write.", show_default=False)],
    force: ForceOpt = False,
    store: StoreOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Write characters into a separate library file (to share them or move them between libraries)."""
    exported = open_store(store).export(names, out, force=force)
    if as_json:
        print_json({"exported": exported, "file": str(out)})
    else:
        console.print(f"exported {len(exported)} character(s) to {out}")


@character_app.command("import")
def character_import(
    file: Annotated[Path, typer.Argument(help="A library file written by face0.", show_default=False)],
    names: Annotated[
        list[str] | None, typer.Option("--name", help="Import only these characters (repeatable).")
    ] = None,
    force: ForceOpt = False,
    store: StoreOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Add the characters of another library file to this library."""
    added = open_store(store).import_from(file, force=force, names=names or None)
    if as_json:
        print_json({"imported": added})
    else:
        console.print(f"imported {len(added)} character(s): {', '.join(added)}")


@character_app.command("new")
def character_new(
    name: Annotated[str, typer.Argument(help="Name of the new character.", show_default=False)],
    seed: Annotated[
        int | None,
        typer.Option("--seed", "-s", help="Seed for the GMM sample; default: a random one, recorded."),
    ] = None,
    from_image: Annotated[
        Path | None,
        typer.Option("--from-image", help="Keep the face in a (generated) image instead (paper §3.2)."),
    ] = None,
    from_debias: Annotated[Path | None, typer.Option("--from-debias", help="A folder written by face0 debias.")] = None,
    index: Annotated[int, typer.Option("--index", help="With --from-debias: which image's face.")] = 0,
    model: ModelOpt = None,
    thumbnail: ThumbnailOpt = True,
    force: ForceOpt = False,
    note: NoteOpt = "",
    store: StoreOpt = None,
    embedder_weights: EmbedderWeightsOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Invent a consistent character: a random face from the model's GMM (paper §3.1, §3.2)."""
    from face0cli.errors import BadInput
    from face0cli.library.store import Character

    lib = store_for_new(store, name, force)
    thumb: Any = None
    if sum(x is not None for x in (seed, from_image, from_debias)) > 1:
        raise BadInput("give at most one of --seed, --from-image and --from-debias.")
    if from_debias is not None:
        from face0cli.generation.generate import load_debias_face

        vector, embedder_id, prov = load_debias_face(
            from_debias / "faces.safetensors" if from_debias.is_dir() else from_debias, index
        )
        char = Character.new(name, vector, embedder_id, "random", prov, note=note)
    else:
        from face0cli.generation.context import ModelContext

        ctx = ModelContext(model, "cpu", "fp32", store, embedder_weights)
        if from_image is not None:
            vector, prov = ctx.embed_photo(from_image)
            char = Character.new(
                name, vector, ctx.embedder_id, "photo", {"from_image": prov, "model": ctx.model}, note=note
            )
            if thumbnail:
                from face0cli.faces.images import load_image

                thumb = load_image(from_image)
        else:
            face = ctx.face(f"random:{seed}" if seed is not None else "random")
            prov = {
                "sampler": "gmm",
                "seed": face.source["seed"],
                "gmm": face.source["gmm"],
                "model": ctx.model,
            }
            assert face.vector is not None  # a GMM sample
            char = Character.new(name, face.vector, ctx.embedder_id, "random", prov, note=note)
            thumb = _rendered_thumbnail(ctx, model, store, char) if thumbnail else None
    lib.add(char, force=force, thumbnail=thumb)
    if as_json:
        print_json(char.to_json())
    else:
        console.print(_saved(name, f"({char.kind}, {char.dim}-d) to {lib.path}: {json.dumps(char.provenance)}"))


def _rendered_thumbnail(ctx: Any, model: str | None, store: Path | None, char: Any) -> Any:
    """A thumbnail for a character without a photo: the model's portrait of its face (None when the model is not
    of the character's embedder; a model is loaded only if none is yet)."""
    from face0cli.generation.context import ModelContext, render_thumbnail

    if ctx is None:
        if not _draws(model, char.embedder_id):
            return None
        ctx = ModelContext(model, "cpu", "fp32", store, None)
    return render_thumbnail(ctx, char.vector, char.embedder_id)


def _draws(model: str | None, embedder_id: str) -> bool:
    """Whether MODEL (None: the embedded default) is a local face0 model of this embedder: its face0.json says,
    so no weights are loaded for a character the model cannot draw."""
    from face0cli.model.pipeline import FACE0_JSON, Face0Config
    from face0cli.synthetic.default import DEFAULT_MODEL_DIR

    f = (Path(model) if model else DEFAULT_MODEL_DIR) / FACE0_JSON
    return f.is_file() and Face0Config.load(f).embedder_id == embedder_id


def _save_crops(folder: Path, name: str, crops: list[Any], force: bool) -> list[str]:
    from face0cli.errors import BadInput

    if folder.exists() and not folder.is_dir():
        raise BadInput(f"--save-crop {folder} exists and is not a folder.")
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / (f"{name}.png" if len(crops) == 1 else f"{name}-{i}.png") for i in range(len(crops))]
    for p in paths:
        if p.exists() and not force:
            raise BadInput(f"{p} exists already; use --force to replace it.")
    for p, crop in zip(paths, crops):
        tmp = p.with_name(p.name + ".tmp")
        crop.save(tmp, format="PNG")
        tmp.replace(p)
    return [str(p) for p in paths]
