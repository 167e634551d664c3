"""The face0 command line: each command parses its options, calls one library function and shows the result.

Heavy libraries (torch, diffusers, facenet-pytorch) are imported inside the commands that need them, so
`face0 --help` and `face0 character list` start fast.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import click
import typer
from typer.core import TyperGroup

from face0cli import __version__
from face0cli.console import console, error
from face0cli.errors import Face0Error


class Face0Group(TyperGroup):
    """Turns domain errors and usage errors into one red line on stderr and a non-zero exit code."""

    def main(self, *args: Any, standalone_mode: bool = True, **kwargs: Any) -> Any:  # type: ignore[override]
        try:
            rv = super().main(*args, standalone_mode=False, **kwargs)
        except Face0Error as e:
            error(str(e))
            sys.exit(e.exit_code)
        except click.exceptions.NoArgsIsHelpError as e:
            click.echo(e.ctx.get_help())
            sys.exit(0)
        except click.ClickException as e:
            hint = f" (see '{e.ctx.command_path} --help')" if getattr(e, "ctx", None) else ""
            error(f"{e.format_message()}{hint}")
            sys.exit(e.exit_code)
        except (click.Abort, KeyboardInterrupt):
            error("interrupted; nothing was left half-written.")
            sys.exit(130)
        code = rv if isinstance(rv, int) else 0
        if standalone_mode:
            sys.exit(code)
        return code


app = typer.Typer(
    cls=Face0Group,
    name="face0",
    help="Put a face into generated images from one photo and a prompt (Face0, Valevski et al. 2023).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
character_app = typer.Typer(
    cls=Face0Group, help="Keep a library of characters: real people and invented faces.", no_args_is_help=True
)
app.add_typer(character_app, name="character")


# ---------------------------------------------------------------------------------------------- shared options

StoreOpt = Annotated[
    Path | None,
    typer.Option(
        "--store",
        help="The character library (HDF5). Default: $FACE0_STORE, else ~/.local/share/face0/characters.h5.",
        envvar="FACE0_STORE",
        show_default=False,
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON on stdout.")]
ForceOpt = Annotated[bool, typer.Option("--force", "-f", help="Overwrite an existing character or file.")]
EmbedderWeightsOpt = Annotated[
    Path | None,
    typer.Option(
        "--embedder-weights",
        help="InceptionResnetV1 VGGFace2 weights (.pt or .safetensors). Default: $FACE0_EMBEDDER_WEIGHTS, "
        "else facenet-pytorch's cache file $TORCH_HOME/checkpoints/20180402-114759-vggface2.pt.",
        envvar="FACE0_EMBEDDER_WEIGHTS",
        show_default=False,
    ),
]
NoteOpt = Annotated[str, typer.Option("--note", help="A free-form note kept with the character.")]


def _store(path: Path | None):  # -> FaceStore
    from face0cli.store import FaceStore, default_store_path

    return FaceStore(path if path is not None else default_store_path())


def _print_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")
    sys.stdout.flush()


def _version(value: bool) -> None:
    if value:
        typer.echo(f"face0 {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version and exit.")
    ] = False,
) -> None:
    """Put a face into generated images from one photo and a prompt (Face0, Valevski et al. 2023)."""


# ---------------------------------------------------------------------------------------------------- embed


@app.command()
def embed(
    photos: Annotated[list[Path], typer.Argument(help="One or more photos of the same person.", show_default=False)],
    name: Annotated[str, typer.Option("--name", "-n", help="Name of the character to save.", show_default=False)],
    force: ForceOpt = False,
    save_crop: Annotated[
        Path | None, typer.Option("--save-crop", help="Also save the 160x160 face crops in this folder.")
    ] = None,
    note: NoteOpt = "",
    store: StoreOpt = None,
    embedder_weights: EmbedderWeightsOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Embed the face in PHOTO(s) and save it as a character (several photos: their mean, paper §3.3)."""
    from face0cli.store import Character, check_name
    from face0cli.errors import CharacterExists

    check_name(name)
    lib = _store(store)
    if not force and name in lib:
        raise CharacterExists(f"a character named '{name}' exists already; use --force to replace it.")

    from face0cli.faces import FacenetEmbedder, embed_photos, mean_embedding

    embedder = FacenetEmbedder(weights=embedder_weights)
    results = embed_photos(embedder, photos)
    vector = mean_embedding(results)
    provenance = {"sources": [r.to_json() for r in results], "embedder": embedder.id, "reduce": "mean"}
    char = Character.new(name, vector, embedder.id, "photo", provenance, note=note)
    crops: list[str] = []
    if save_crop is not None:
        crops = _save_crops(save_crop, name, [r.crop for r in results], force)
    lib.add(char, force=force)

    if as_json:
        _print_json({"character": char.to_json(), "photos": [r.to_json() for r in results], "crops": crops})
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
    kind = "mean of %d photos" % len(results) if len(results) > 1 else "1 photo"
    console.print(
        f"saved [bold]{name}[/] ({kind}, {char.dim}-d, norm {float(np.linalg.norm(char.vector)):.2f}, "
        f"embedder {char.embedder_id}) to {lib.path}"
    )
    for c in crops:
        console.print(f"crop: {c}")


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


# ------------------------------------------------------------------------------------------------ character


@character_app.command("list")
def character_list(store: StoreOpt = None, as_json: JsonOpt = False) -> None:
    """List the characters in the library."""
    lib = _store(store)
    chars = lib.list()
    if as_json:
        _print_json([c.to_json() for c in chars])
        return
    if not chars:
        console.print(f"no characters in {lib.path}")
        return
    from rich.table import Table

    table = Table(title=f"{len(chars)} characters in {lib.path}", title_justify="left")
    for col in ("name", "kind", "embedder", "dim", "created", "note"):
        table.add_column(col, overflow="fold")
    for c in chars:
        table.add_row(c.name, c.kind, c.embedder_id, str(c.dim), c.created[:19].replace("T", " "), c.note)
    console.print(table)


@character_app.command("show")
def character_show(
    name: Annotated[str, typer.Argument(help="The character's name.", show_default=False)],
    store: StoreOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Show one character: kind, embedder, provenance, note."""
    char = _store(store).get(name)
    data = char.to_json()
    if as_json:
        _print_json(data)
        return
    from rich.table import Table

    table = Table(show_header=False, title=name, title_justify="left")
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
) -> None:
    """Remove characters from the library."""
    lib = _store(store)
    for n in names:
        lib.get(n)  # every name must exist before anything is removed
    for n in names:
        lib.remove(n)
    console.print(f"removed {', '.join(names)}")


@character_app.command("rename")
def character_rename(
    old: Annotated[str, typer.Argument(help="Current name.", show_default=False)],
    new: Annotated[str, typer.Argument(help="New name.", show_default=False)],
    force: ForceOpt = False,
    store: StoreOpt = None,
) -> None:
    """Rename a character."""
    _store(store).rename(old, new, force=force)
    console.print(f"renamed {old} -> {new}")


@character_app.command("export")
def character_export(
    names: Annotated[list[str], typer.Argument(help="Characters to export.", show_default=False)],
    out: Annotated[Path, typer.Option("--out", "-o", help="The library file to write.", show_default=False)],
    force: ForceOpt = False,
    store: StoreOpt = None,
) -> None:
    """Write characters into a separate library file (to share them or move them between libraries)."""
    _store(store).export(names, out, force=force)
    console.print(f"exported {len(names)} character(s) to {out}")


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
    added = _store(store).import_from(file, force=force, names=names or None)
    if as_json:
        _print_json({"imported": added})
    else:
        console.print(f"imported {len(added)} character(s): {', '.join(added)}")


# ------------------------------------------------------------------------------------------------------ mix


@app.command()
def mix(
    specs: Annotated[
        list[str] | None,
        typer.Argument(help="Characters with weights, e.g. alice=0.7 bob=0.3 (a bare name weighs 1).", show_default=False),
    ] = None,
    name: Annotated[str, typer.Option("--name", "-n", help="Name of the new character.", show_default=False)] = "",
    t: Annotated[
        float | None, typer.Option("--t", help="Interpolate between exactly two characters: (1-t)*A + t*B.")
    ] = None,
    base: Annotated[str | None, typer.Option("--base", help="Direction edit: the character to edit.")] = None,
    towards: Annotated[str | None, typer.Option("--towards", help="Direction edit: move towards this one.")] = None,
    origin: Annotated[
        str | None,
        typer.Option("--origin", help="Direction edit: the direction is TOWARDS - ORIGIN (else TOWARDS - BASE)."),
    ] = None,
    amount: Annotated[float, typer.Option("--amount", help="Direction edit: how far to move.")] = 0.5,
    force: ForceOpt = False,
    note: NoteOpt = "",
    store: StoreOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Make a new character from others: weighted mean, interpolation, or a direction edit (paper §3.3)."""
    from face0cli.errors import BadInput, CharacterExists, ParameterError
    from face0cli.face_space import check_compatible, direction_edit, lerp, parse_weighted, weighted_mean
    from face0cli.store import Character, check_name
    import numpy as np

    if not name:
        raise BadInput("give the new character a name with --name.")
    check_name(name)
    lib = _store(store)
    if not force and name in lib:
        raise CharacterExists(f"a character named '{name}' exists already; use --force to replace it.")
    specs = specs or []
    provenance: dict[str, Any]
    if base is not None or towards is not None:
        if base is None or towards is None:
            raise BadInput("a direction edit needs both --base and --towards.")
        if specs:
            raise BadInput("a direction edit takes no positional characters; use --base/--towards/--origin.")
        if not np.isfinite(amount):
            raise ParameterError(f"--amount must be a finite number, got {amount}.")
        parts = [lib.get(base), lib.get(towards)] + ([lib.get(origin)] if origin else [])
        check_compatible(parts)
        vector = direction_edit(
            parts[0].vector, parts[1].vector, amount, parts[2].vector if origin else None
        )
        provenance = {"op": "direction", "base": base, "towards": towards, "origin": origin, "amount": amount}
    elif t is not None:
        if not np.isfinite(t):
            raise ParameterError(f"--t must be a finite number, got {t}.")
        pairs = parse_weighted(specs)
        if len(pairs) != 2 or any(w != 1.0 for _, w in pairs):
            raise BadInput("interpolation with --t takes exactly two plain character names.")
        parts = [lib.get(n) for n, _ in pairs]
        check_compatible(parts)
        vector = lerp(parts[0].vector, parts[1].vector, t)
        provenance = {"op": "lerp", "parents": [n for n, _ in pairs], "t": t}
    else:
        pairs = parse_weighted(specs)
        if len(pairs) < 2:
            raise BadInput("mix needs at least two characters (e.g. alice=0.7 bob=0.3), --t, or --base/--towards.")
        parts = [lib.get(n) for n, _ in pairs]
        check_compatible(parts)
        vector = weighted_mean(np.stack([p.vector for p in parts]), np.array([w for _, w in pairs]))
        provenance = {"op": "weighted_mean", "parents": [n for n, _ in pairs], "weights": [w for _, w in pairs]}
    char = Character.new(name, vector, parts[0].embedder_id, "mix", provenance, note=note)
    lib.add(char, force=force)
    if as_json:
        _print_json(char.to_json())
    else:
        console.print(f"saved [bold]{name}[/] ({provenance['op']}) to {lib.path}")


def main() -> None:
    """Entry point of the `face0` console script."""
    app()


if __name__ == "__main__":
    main()
