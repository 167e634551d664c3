"""The face0 command line: each command parses its options, calls one library function and shows the result.

Heavy libraries (torch, diffusers, facenet-pytorch) are imported inside the commands that need them, so
`face0 --help` and `face0 character list` start fast.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

try:  # typer >= 0.20 carries its own copy of click, whose exceptions are not click's
    from typer._click import exceptions as click_exc
except ImportError:  # pragma: no cover - older typer on plain click
    from click import exceptions as click_exc  # type: ignore[no-redef]

from face0cli import __version__
from face0cli.config import SAMPLE_DEFAULTS, Scheduler, TrainMode
from face0cli.console import console, error
from face0cli.errors import Face0Error


class Face0Group(TyperGroup):
    """Turns domain errors and usage errors into one red line on stderr and a non-zero exit code."""

    def main(self, *args: Any, standalone_mode: bool = True, **kwargs: Any) -> Any:  # type: ignore[override]
        try:
            rv = super().main(*args, standalone_mode=False, **kwargs)  # type: ignore[misc]
        except Face0Error as e:
            error(str(e))
            sys.exit(e.exit_code)
        except click_exc.NoArgsIsHelpError:
            sys.exit(0)  # typer has printed the help while raising this
        except click_exc.ClickException as e:
            ctx = getattr(e, "ctx", None)
            hint = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
            error(f"{e.format_message().replace('Value error, ', '')}{hint}")
            sys.exit(e.exit_code)
        except (typer.Abort, KeyboardInterrupt):
            error("interrupted; nothing was left half-written.")
            sys.exit(130)
        code = rv if isinstance(rv, int) else 0
        if standalone_mode:
            sys.exit(code)
        return code


from face0cli.cli.synth import synth_app  # noqa: E402

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
app.add_typer(synth_app, name="synth")


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
    from face0cli.library.store import FaceStore, default_store_path

    return FaceStore(path if path is not None else default_store_path())


def _store_for_new(path: Path | None, name: str, force: bool):  # -> FaceStore
    """The library, once NAME is checked to be valid and free (or --force): fail before any heavy work."""
    from face0cli.errors import CharacterExists
    from face0cli.library.store import check_name

    check_name(name)
    lib = _store(path)
    if not force and name in lib:
        raise CharacterExists(f"a character named '{name}' exists already; use --force to replace it.")
    return lib


def _is_main_process() -> bool:
    """False on the other ranks of `accelerate launch` / torchrun, which print nothing: rank 0 reports."""
    import os

    return int(os.environ.get("RANK", "0")) == 0


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
    from face0cli.library.store import Character

    lib = _store_for_new(store, name, force)

    from face0cli.faces.embedders import FacenetEmbedder, embed_photos, mean_embedding

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
    kind = f"mean of {len(results)} photos" if len(results) > 1 else "1 photo"
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
    as_json: JsonOpt = False,
) -> None:
    """Remove characters from the library."""
    lib = _store(store)
    for n in names:
        lib.get(n)  # every name must exist before anything is removed
    for n in names:
        lib.remove(n)
    if as_json:
        _print_json({"removed": names})
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
    _store(store).rename(old, new, force=force)
    if as_json:
        _print_json({"renamed": old, "to": new})
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
    exported = _store(store).export(names, out, force=force)
    if as_json:
        _print_json({"exported": exported, "file": str(out)})
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
        typer.Argument(
            help="Characters with weights, e.g. alice=0.7 bob=0.3 (a bare name weighs 1).", show_default=False
        ),
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
    strip: Annotated[
        int, typer.Option("--strip", help="With --model: render an N-image strip from the start to the result.")
    ] = 0,
    model: ModelOpt = None,
    prompt: Annotated[str, typer.Option("--prompt", "-p", help="Prompt of the strip.")] = "a photo of a person",
    seed: Annotated[int, typer.Option("--seed", "-s", help="The strip's fixed seed.")] = 0,
    steps: Annotated[int, typer.Option("--steps", help="Sampling steps of the strip.")] = SAMPLE_DEFAULTS.steps,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="The strip PNG (default: NAME-strip.png).")] = None,
    force: ForceOpt = False,
    note: NoteOpt = "",
    store: StoreOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Make a new character from others: weighted mean, interpolation, or a direction edit (paper §3.3).

    With --strip N and a model, also render an interpolation strip at a fixed seed (paper Fig. 5/6).
    """
    import numpy as np

    from face0cli.errors import BadInput, ParameterError
    from face0cli.library.face_space import check_compatible, direction_edit, lerp, parse_weighted, weighted_mean
    from face0cli.library.store import Character

    if not name:
        raise BadInput("give the new character a name with --name.")
    lib = _store_for_new(store, name, force)
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
        vector = direction_edit(parts[0].vector, parts[1].vector, amount, parts[2].vector if origin else None)
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
        provenance = {
            "op": "weighted_mean",
            "parents": [n for n, _ in pairs],
            "weights": [w for _, w in pairs],
        }
    char = Character.new(name, vector, parts[0].embedder_id, "mix", provenance, note=note)
    strip_path = None
    if strip:
        if strip < 2:
            raise ParameterError(f"--strip must be at least 2 images, got {strip}.")
        # lerp: from A to B; weighted mean and direction: from the first parent (the base) to the result
        start = parts[0].vector
        end = parts[1].vector if provenance["op"] == "lerp" else vector
        strip_path = out or Path(f"{name}-strip.png")
        _check_free([strip_path], force)
        _render_strip(model, start, end, strip, prompt, seed, steps, strip_path, name, store)
    lib.add(char, force=force)
    if as_json:
        _print_json(char.to_json() | {"strip": str(strip_path) if strip_path else None})
    else:
        console.print(f"saved [bold]{name}[/] ({provenance['op']}) to {lib.path}")
        if strip_path:
            console.print(f"strip: {strip_path}")


def _render_strip(
    model: str | None,
    start: Any,
    end: Any,
    n: int,
    prompt: str,
    seed: int,
    steps: int,
    path: Path,
    name: str,
    store: Path | None,
) -> None:
    """N images at one seed with the face moving linearly from `start` to `end` (paper Fig. 5/6)."""
    from face0cli.errors import EmbedderMismatch
    from face0cli.generation.generate import Face, Request, make_grid, save_png
    from face0cli.library.face_space import lerp

    ctx = _ModelContext(model, "cpu", "fp32", store, None)
    if start.shape[0] != ctx.dim:
        raise EmbedderMismatch(f"the characters have dimension {start.shape[0]}, but the model expects {ctx.dim}.")
    ts = [k / (n - 1) for k in range(n)]
    reqs = [
        Request(prompt=prompt, face=Face(lerp(start, end, t), f"t={t:.2f}"), seed=seed, steps=steps, model=ctx.model)
        for t in ts
    ]
    results = _render_all(ctx, reqs, [[] for _ in reqs], True)
    grid = make_grid(
        [r["image"] for r in results],
        1,
        n,
        col_labels=[f"t={t:.2f}" for t in ts],
        title=f"{name}: {prompt} | seed {seed}",
    )
    save_png(grid, {"strip": name, "prompt": prompt, "seed": seed, "steps": steps, "t": ts, "model": ctx.model}, path)


# ------------------------------------------------------------------------------------------ model commands

ModelOpt = Annotated[
    str | None,
    typer.Option(
        "--model",
        "-m",
        help="A face0 model directory or hub id. Default: $FACE0_MODEL, else the embedded default model.",
        envvar="FACE0_MODEL",
        show_default=False,
    ),
]
DeviceOpt = Annotated[str, typer.Option("--device", help="cpu, cuda, cuda:1, mps ...")]
DtypeOpt = Annotated[str, typer.Option("--dtype", help="fp32, fp16 or bf16 (fp16/bf16 on GPUs).")]
SeedOpt = Annotated[int, typer.Option("--seed", "-s", help="Seed of the first image; image i uses seed+i.")]


class _ModelContext:
    """A loaded model plus what is needed to turn --face into an embedding for it."""

    def __init__(self, model: str | None, device: str, dtype: str, store: Path | None, weights: Path | None):
        from face0cli.console import quiet_model_loading
        from face0cli.errors import ModelError
        from face0cli.model.pipeline import Face0Pipeline

        quiet_model_loading()

        if not model:
            from face0cli.synthetic.default import default_model

            model = str(default_model())
        self.model = str(Path(model).resolve()) if Path(model).exists() else model
        self.pipe = Face0Pipeline.load(self.model, device=device, dtype=dtype)
        self.store = _store(store)
        self.weights = weights
        self._embedder: Any = None

    @property
    def embedder_id(self) -> str:
        return self.pipe.face0_config.embedder_id

    @property
    def dim(self) -> int:
        return self.pipe.face0_config.embed_dim

    def embedder(self) -> Any:
        """The face embedder the model was trained with (its id must match the model's)."""
        if self._embedder is None:
            from face0cli.faces.registry import embedder_for_model

            local = Path(self.model) if Path(self.model).is_dir() else None
            self._embedder = embedder_for_model(self.embedder_id, local, weights=self.weights)
        return self._embedder

    def embed_photo(self, path: Path) -> tuple[Any, dict[str, Any]]:
        from face0cli.faces.embedders import embed_photo

        r = embed_photo(self.embedder(), path)
        return r.vector, r.to_json()

    def face(self, spec: str | None) -> Any:
        from face0cli.generation.generate import resolve_face

        return resolve_face(
            spec,
            store=self.store,
            model_embedder_id=self.embedder_id,
            model_dim=self.dim,
            gmm=self.pipe.gmm,
            embed_photo=self.embed_photo,
        )


def _check_free(paths: list[Path], force: bool) -> None:
    from face0cli.errors import BadInput

    for p in paths:
        if p.exists() and not force:
            raise BadInput(f"{p} exists already; use --force to replace it.")


def _render_all(ctx: _ModelContext, reqs: list[Any], paths: list[list[Path]], quiet: bool) -> list[dict[str, Any]]:
    """Render requests with one progress bar, save every image with its parameters; return the results."""
    from face0cli.console import progress
    from face0cli.generation.generate import render, save_png

    results: list[dict[str, Any]] = []
    total = sum(r.n * r.steps for r in reqs)
    with progress() as bar:
        task = bar.add_task("generating", total=total)
        for req, req_paths in zip(reqs, paths):
            for i, image, info in render(ctx.pipe, req, on_step=lambda: bar.advance(task)):
                params = req.params(i) | {"model": ctx.model}
                path = save_png(image, params | info, req_paths[i]) if req_paths else None
                results.append(
                    {
                        "path": str(path) if path else None,
                        "seed": params["seed"],
                        "face": req.face.label,
                        "prompt": req.prompt,
                        **info,
                        "image": image,
                    }
                )
    return results


@app.command()
def generate(
    prompt: Annotated[str, typer.Option("--prompt", "-p", help="What to draw.")] = "",
    face: Annotated[
        str | None,
        typer.Option("--face", help="A character name, a photo, random[:SEED] (the model's GMM) or none."),
    ] = None,
    model: ModelOpt = None,
    w: Annotated[float, typer.Option("--w", help="Guidance scale w (paper §2.2).")] = SAMPLE_DEFAULTS.w,
    c: Annotated[
        float,
        typer.Option("--c", help="Weight of text+face against the rest: 1 photo-real, 0.4-0.7 stylised."),
    ] = SAMPLE_DEFAULTS.c,
    a: Annotated[
        float,
        typer.Option("--a", help="Face-only against text-only in the rest: 0 or 1 (c=1.4, a=1: very stylised)."),
    ] = SAMPLE_DEFAULTS.a,
    variety: Annotated[
        float, typer.Option("--variety", help="Std of Gaussian noise added to the face embedding.")
    ] = SAMPLE_DEFAULTS.variety,
    seed: SeedOpt = 0,
    n: Annotated[int, typer.Option("--n", help="Images to make.")] = 1,
    steps: Annotated[int, typer.Option("--steps", help="Sampling steps.")] = SAMPLE_DEFAULTS.steps,
    scheduler: Annotated[Scheduler, typer.Option("--scheduler", help="The sampler (the paper uses DDIM).")] = Scheduler(
        SAMPLE_DEFAULTS.scheduler
    ),
    size: Annotated[str | None, typer.Option("--size", help="512 or WIDTHxHEIGHT; default: the model's.")] = None,
    negative: Annotated[str, typer.Option("--negative", help="Negative prompt (the 'no text' branch).")] = "",
    out: Annotated[Path, typer.Option("--out", "-o", help="A .png file, or a folder for several images.")] = Path(
        "face0-out"
    ),
    sweep: Annotated[
        list[str] | None,
        typer.Option("--sweep", help="A labelled grid: --sweep c=0,0.5,1 --sweep a=0,1 (paper Fig. 7)."),
    ] = None,
    from_png: Annotated[
        Path | None, typer.Option("--from-png", help="Reproduce an image from the parameters in its PNG.")
    ] = None,
    jobs: Annotated[
        Path | None, typer.Option("--jobs", help="A JSONL file of jobs; one JSON result per line on stdout.")
    ] = None,
    force: ForceOpt = False,
    device: DeviceOpt = "cpu",
    dtype: DtypeOpt = "fp32",
    store: StoreOpt = None,
    embedder_weights: EmbedderWeightsOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Generate images of a face from a prompt (paper §2.2). Same seed and prompt with another --face retargets."""
    from face0cli.errors import BadInput
    from face0cli.generation.generate import Face, Request, parse_size, read_png_params, request_from_params

    height, width = parse_size(size)
    base_req: Request | None = None
    if from_png is not None:
        params = read_png_params(from_png)
        base_req = request_from_params(params)
        model = model or params.get("model")
    if jobs is not None:
        code = _run_jobs(jobs, model, out, force, device, dtype, store, embedder_weights)
        raise typer.Exit(code)
    if base_req is None:
        if not prompt:
            raise BadInput("give a prompt with --prompt (or --from-png / --jobs).")
        base_req = Request(
            prompt=prompt,
            face=Face(None, "none"),
            seed=seed,
            n=n,
            w=w,
            c=c,
            a=a,
            variety=variety,
            steps=steps,
            scheduler=scheduler.value,
            height=height,
            width=width,
            negative=negative,
        )
        base_req.check()
    ctx = _ModelContext(model, device, dtype, store, embedder_weights)
    if from_png is None:
        base_req.face = ctx.face(face)
    base_req.model = ctx.model
    if sweep:
        _generate_sweep(ctx, base_req, sweep, out, force, as_json)
        return
    from face0cli.generation.generate import output_paths

    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", base_req.face.label)[:40] + f"-s{base_req.seed}"
    if from_png is not None and out == Path("face0-out"):
        out = from_png.with_name(from_png.stem + "-again.png")
    paths = output_paths(out, stem, base_req.n)
    _check_free(paths, force)
    results = _render_all(ctx, [base_req], [paths], as_json)
    _show_results(results, as_json)


def _show_results(results: list[dict[str, Any]], as_json: bool) -> None:
    rows = [{k: v for k, v in r.items() if k != "image"} for r in results]
    if as_json:
        _print_json(rows)
        return
    from rich.table import Table

    table = Table(title="face0 generate", title_justify="left")
    for col in ("image", "face", "seed", "UNet calls/step"):
        table.add_column(col, overflow="fold")
    for r in rows:
        table.add_row(str(r["path"]), r["face"], str(r["seed"]), str(r.get("unet_calls_per_step")))
    console.print(table)


def _generate_sweep(ctx: _ModelContext, base: Any, sweep: list[str], out: Path, force: bool, as_json: bool) -> None:
    from face0cli.generation.generate import make_grid, parse_sweep, save_png, sweep_requests

    reqs, rows, cols, rl, cl = sweep_requests(base, parse_sweep(sweep))
    path = out if out.suffix.lower() == ".png" else out / "sweep.png"
    _check_free([path], force)
    results = _render_all(ctx, reqs, [[] for _ in reqs], True)
    grid = make_grid(
        [r["image"] for r in results],
        rows,
        cols,
        row_labels=rl,
        col_labels=cl,
        title=f"{base.prompt} | face {base.face.label} | seed {base.seed}",
    )
    params = base.params(0) | {"model": ctx.model, "sweep": sweep}
    save_png(grid, params, path)
    if as_json:
        _print_json({"grid": str(path), "rows": rl, "cols": cl})
    else:
        console.print(f"sweep grid ({rows}x{cols}) -> {path}")


def _run_jobs(
    jobs: Path,
    model: str | None,
    out: Path,
    force: bool,
    device: str,
    dtype: str,
    store: Path | None,
    weights: Path | None,
) -> int:
    """Run a JSONL batch: one job per line, one JSON result per line on stdout; 1 when any job failed."""
    from face0cli.errors import BadInput, Face0Error
    from face0cli.generation.generate import Request, output_paths, parse_size, read_text_file

    lines = read_text_file(jobs).splitlines()
    ctx = _ModelContext(model, device, dtype, store, weights)
    failed = 0
    fields = {
        "prompt",
        "face",
        "seed",
        "n",
        "w",
        "c",
        "a",
        "variety",
        "steps",
        "scheduler",
        "size",
        "negative",
        "out",
    }
    for lineno, line in enumerate(lines, start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        try:
            try:
                job = json.loads(line)
            except json.JSONDecodeError as e:
                raise BadInput(f"not valid JSON ({e.msg})") from None
            if not isinstance(job, dict):
                raise BadInput("a job must be a JSON object")
            unknown = set(job) - fields
            if unknown:
                raise BadInput(f"unknown field(s) {', '.join(sorted(unknown))}")
            if not job.get("prompt"):
                raise BadInput("a job needs a prompt")
            h, w_ = parse_size(job.get("size"))
            kw = {k: job[k] for k in ("seed", "n", "w", "c", "a", "variety", "steps", "scheduler") if k in job}
            req = Request(
                prompt=job["prompt"],
                face=ctx.face(job.get("face")),
                height=h,
                width=w_,
                negative=job.get("negative", ""),
                model=ctx.model,
                **kw,
            )
            req.check()
            target = Path(job["out"]) if job.get("out") else out / f"job-{lineno:04d}"
            stem = re.sub(r"[^A-Za-z0-9._-]+", "_", req.face.label)[:40] + f"-s{req.seed}"
            paths = output_paths(target, stem, req.n)
            _check_free(paths, force)
            results = _render_all(ctx, [req], [paths], True)
            sys.stdout.write(json.dumps({"line": lineno, "ok": True, "images": [r["path"] for r in results]}) + "\n")
        except Face0Error as e:
            failed += 1
            sys.stdout.write(json.dumps({"line": lineno, "ok": False, "error": str(e)}) + "\n")
            error(f"{jobs}:{lineno}: {e}")
        sys.stdout.flush()
    return 1 if failed else 0


@app.command()
def debias(
    prompt: Annotated[
        str,
        typer.Option("--prompt", "-p", help="A prompt that names no one, e.g. 'a stock photo of a doctor'."),
    ],
    n: Annotated[int, typer.Option("--n", help="Images, each with a fresh face from the model's GMM.")] = 8,
    model: ModelOpt = None,
    seed: SeedOpt = 0,
    w: Annotated[float, typer.Option("--w", help="Guidance scale w.")] = SAMPLE_DEFAULTS.w,
    c: Annotated[float, typer.Option("--c", help="Weight of text+face (paper §2.2).")] = SAMPLE_DEFAULTS.c,
    a: Annotated[float, typer.Option("--a", help="Face-only against text-only.")] = SAMPLE_DEFAULTS.a,
    steps: Annotated[int, typer.Option("--steps", help="Sampling steps.")] = SAMPLE_DEFAULTS.steps,
    scheduler: Annotated[Scheduler, typer.Option("--scheduler", help="The sampler (the paper uses DDIM).")] = Scheduler(
        SAMPLE_DEFAULTS.scheduler
    ),
    size: Annotated[str | None, typer.Option("--size", help="512 or WIDTHxHEIGHT; default: the model's.")] = None,
    negative: Annotated[str, typer.Option("--negative", help="Negative prompt.")] = "",
    out: Annotated[
        Path, typer.Option("--out", "-o", help="Folder for the images, grid.png and faces.safetensors.")
    ] = Path("face0-debias"),
    force: ForceOpt = False,
    device: DeviceOpt = "cpu",
    dtype: DtypeOpt = "fp32",
    as_json: JsonOpt = False,
) -> None:
    """Counter the model's bias: every image gets a fresh random face from the GMM (paper §3.1)."""
    from face0cli.generation.generate import Face, Request, make_grid, parse_size, save_debias_faces

    height, width = parse_size(size)
    base = Request(
        prompt=prompt,
        face=Face(None, "none"),
        seed=seed,
        n=1,
        w=w,
        c=c,
        a=a,
        steps=steps,
        scheduler=scheduler.value,
        height=height,
        width=width,
        negative=negative,
    )
    base.check()
    if n < 1:
        from face0cli.errors import ParameterError

        raise ParameterError(f"--n must be >= 1, got {n}.")
    ctx = _ModelContext(model, device, dtype, None, None)
    import dataclasses

    reqs = [
        dataclasses.replace(base, seed=seed + i, face=ctx.face(f"random:{seed + i}"), model=ctx.model) for i in range(n)
    ]
    paths = [[out / f"debias-{i:03d}.png"] for i in range(n)]
    grid_path, faces_path = out / "grid.png", out / "faces.safetensors"
    _check_free([p[0] for p in paths] + [grid_path, faces_path], force)
    results = _render_all(ctx, reqs, paths, as_json)
    cols = min(n, 4)
    rows = -(-n // cols)
    images = [r["image"] for r in results]
    images += [images[0].copy().point(lambda _: 255)] * (rows * cols - n)
    labels = [f"#{i} face seed {seed + i}" for i in range(n)] + [""] * (rows * cols - n)
    grid = make_grid(images, rows, cols, tile_labels=labels, title=f"{prompt} | a fresh face per image")
    from face0cli.generation.generate import save_png

    save_png(grid, {"prompt": prompt, "seeds": [seed + i for i in range(n)], "model": ctx.model}, grid_path)
    gmm = ctx.pipe.gmm
    assert gmm is not None  # ctx.face("random:...") refused a model without one
    save_debias_faces(faces_path, reqs, ctx.embedder_id, gmm.identity)
    if as_json:
        _print_json(
            {
                "grid": str(grid_path),
                "faces": str(faces_path),
                "images": [{k: v for k, v in r.items() if k != "image"} for r in results],
            }
        )
        return
    console.print(f"{n} images, {n} fresh faces -> {out}/ (grid: {grid_path})")
    console.print(f"keep face #i with: face0 character new NAME --from-debias {out} --index i")


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
    force: ForceOpt = False,
    note: NoteOpt = "",
    store: StoreOpt = None,
    embedder_weights: EmbedderWeightsOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Invent a consistent character: a random face from the model's GMM (paper §3.1, §3.2)."""
    from face0cli.errors import BadInput
    from face0cli.library.store import Character

    lib = _store_for_new(store, name, force)
    if sum(x is not None for x in (seed, from_image, from_debias)) > 1:
        raise BadInput("give at most one of --seed, --from-image and --from-debias.")
    if from_debias is not None:
        from face0cli.generation.generate import load_debias_face

        vector, embedder_id, prov = load_debias_face(
            from_debias / "faces.safetensors" if from_debias.is_dir() else from_debias, index
        )
        char = Character.new(name, vector, embedder_id, "random", prov, note=note)
    else:
        ctx = _ModelContext(model, "cpu", "fp32", store, embedder_weights)
        if from_image is not None:
            vector, prov = ctx.embed_photo(from_image)
            char = Character.new(
                name, vector, ctx.embedder_id, "photo", {"from_image": prov, "model": ctx.model}, note=note
            )
        else:
            face = ctx.face(f"random:{seed}" if seed is not None else "random")
            prov = {
                "sampler": "gmm",
                "seed": face.source["seed"],
                "gmm": face.source["gmm"],
                "model": ctx.model,
            }
            char = Character.new(name, face.vector, ctx.embedder_id, "random", prov, note=note)
    lib.add(char, force=force)
    if as_json:
        _print_json(char.to_json())
    else:
        console.print(f"saved [bold]{name}[/] ({char.kind}, {char.dim}-d) to {lib.path}: {json.dumps(char.provenance)}")


# ----------------------------------------------------------------------------------------- prep and train


@app.command()
def prep(
    dataset: Annotated[
        list[str],
        typer.Argument(
            help="A folder of images + .txt/.json captions, .tar shards (files, a glob or a folder), "
            "or a .csv/.parquet table.",
            show_default=False,
        ),
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="The triplet file to write (HDF5).", show_default=False)],
    shard: Annotated[
        str | None, typer.Option("--shard", help="i/N: prepare only shard i of N (a part file beside --out).")
    ] = None,
    merge: Annotated[
        int | None, typer.Option("--merge", help="Merge the N part files of a sharded prep into --out, then stop.")
    ] = None,
    image_column: Annotated[str, typer.Option("--image-column", help="Table column with image paths.")] = "image",
    caption_column: Annotated[str, typer.Option("--caption-column", help="Table column with captions.")] = "caption",
    score_column: Annotated[
        str | None, typer.Option("--score-column", help="Column / JSON field with a score, e.g. aesthetics.")
    ] = None,
    min_score: Annotated[
        float | None, typer.Option("--min-score", help="Keep pairs whose score is >= this (the paper: 5.5).")
    ] = None,
    min_face: Annotated[int, typer.Option("--min-face", help="Drop images whose largest face is smaller (px).")] = 20,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Faces per embedder call.")] = 32,
    no_resume: Annotated[
        bool, typer.Option("--no-resume", help="Start over instead of continuing a stopped run.")
    ] = False,
    latents: Annotated[
        str | None, typer.Option("--latents", help="Also store VAE latents of this model (training skips the encoder).")
    ] = None,
    resolution: Annotated[int, typer.Option("--resolution", help="Training resolution of --latents (px).")] = 512,
    device: Annotated[
        str, typer.Option("--device", help="auto (each process its own GPU, else CPU), cpu, cuda:N.")
    ] = "auto",
    embedder_spec: Annotated[
        str | None,
        typer.Option(
            "--embedder",
            help="facenet (InceptionResnetV1, VGGFace2), a synthetic embedder folder, or a face0 model with one.",
        ),
    ] = None,
    embedder_weights: EmbedderWeightsOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Turn image-caption data into (face, embedding, caption) triplets for training (paper §2.1, §2.3).

    Under `accelerate launch` (or torchrun) each process takes its own shard and the main process merges them.
    """
    from face0cli.config import PrepConfig
    from face0cli.data.prep import merge_parts
    from face0cli.data.prep import prep as run_prep
    from face0cli.data.readers import open_dataset, parse_shard

    if merge is not None:
        summary = merge_parts(out, merge)
    else:
        ds = open_dataset(
            dataset if len(dataset) > 1 else dataset[0],
            image_column=image_column,
            caption_column=caption_column,
            score_column=score_column,
            min_score=min_score,
        )
        from face0cli.config import CropConfig
        from face0cli.faces.registry import open_embedder

        if device == "auto":  # under accelerate launch each process takes its own GPU
            import os

            import torch

            device = f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}" if torch.cuda.is_available() else "cpu"
        embedder = open_embedder(
            embedder_spec, weights=embedder_weights, device=device, cfg=CropConfig(min_face=min_face)
        )
        summary = run_prep(
            ds,
            out,
            embedder,
            PrepConfig(min_face=min_face),
            parse_shard(shard) if shard else None,
            resume=not no_resume,
            batch_size=batch_size,
            encode_latents=_latent_encoder(latents, resolution, device) if latents else None,
            show_progress=not as_json,
        )
    if not _is_main_process():
        return
    if as_json:
        _print_json(summary.to_dict())
    else:
        console.print(summary.table())


def _latent_encoder(model: str, resolution: int, device: str) -> Any:
    from face0cli.console import quiet_model_loading
    from face0cli.errors import ParameterError
    from face0cli.training.train import VaeLatentEncoder

    quiet_model_loading()

    if resolution < 8 or resolution % 8:
        raise ParameterError(f"--resolution must be a positive multiple of 8, got {resolution}.")
    return VaeLatentEncoder(model, resolution, device)


@app.command()
def train(
    triplets: Annotated[
        Path, typer.Option("--triplets", "-t", help="The triplet file from face0 prep.", show_default=False)
    ],
    base: Annotated[
        str,
        typer.Option("--base", help="An SD 1.x diffusers directory or hub id, or a face0 model.", show_default=False),
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder: checkpoints/, validation/, logs/, model/.")],
    mode: Annotated[
        TrainMode, typer.Option("--train", help="unet (the paper), lora, or projector only.")
    ] = TrainMode.unet,
    max_steps: Annotated[int, typer.Option("--max-steps", help="Optimizer steps in total.")] = 10_000,
    batch_size: Annotated[
        int, typer.Option("--batch-size", help="Per process; the paper's 256 = this x accum x GPUs.")
    ] = 16,
    accum: Annotated[int, typer.Option("--grad-accum", help="Gradient accumulation steps.")] = 1,
    lr: Annotated[float, typer.Option("--lr", help="AdamW learning rate (paper: 2e-5).")] = 2e-5,
    warmup: Annotated[int, typer.Option("--warmup", help="Warm-up steps of the learning rate.")] = 500,
    resolution: Annotated[int, typer.Option("--resolution", help="Training image size (px).")] = 512,
    mixed_precision: Annotated[str, typer.Option("--mixed-precision", help="no, fp16 or bf16.")] = "no",
    gradient_checkpointing: Annotated[
        bool, typer.Option("--gradient-checkpointing", help="Trade compute for memory.")
    ] = False,
    ema: Annotated[bool, typer.Option("--ema/--no-ema", help="Keep an EMA of the weights (paper: 0.9999).")] = True,
    ema_decay: Annotated[float, typer.Option("--ema-decay", help="EMA decay.")] = 0.9999,
    face_drop: Annotated[
        float, typer.Option("--face-drop", help="Probability of zeroing the face tokens (paper: 0.1).")
    ] = 0.1,
    checkpoint_every: Annotated[
        int, typer.Option("--checkpoint-every", help="Steps between checkpoints (0: none).")
    ] = 500,
    validate_every: Annotated[
        int, typer.Option("--validate-every", help="Steps between validation grids (0: none).")
    ] = 500,
    workers: Annotated[int, typer.Option("--workers", help="DataLoader workers per process.")] = 4,
    lora_rank: Annotated[int, typer.Option("--lora-rank", help="LoRA rank (--train lora).")] = 16,
    lr_scheduler: Annotated[
        str, typer.Option("--lr-scheduler", help="constant_with_warmup, constant, linear, cosine, ...")
    ] = "constant_with_warmup",
    text_drop: Annotated[
        float, typer.Option("--text-drop", help="Probability of the empty caption (training from scratch).")
    ] = 0.0,
    train_text_encoder: Annotated[
        bool, typer.Option("--train-text-encoder", help="Train the text encoder too (a base model's stage).")
    ] = False,
    snr_gamma: Annotated[float, typer.Option("--snr-gamma", help="Min-SNR loss weighting (0: plain MSE).")] = 0.0,
    projector_normalize: Annotated[
        bool,
        typer.Option("--projector-normalize", help="Unit-variance input and LayerNorm'd tokens in a new projector."),
    ] = False,
    projector_lr: Annotated[
        float, typer.Option("--projector-lr", help="The projector's own learning rate (0: --lr).")
    ] = 0.0,
    projector_hidden_dim: Annotated[
        int, typer.Option("--projector-hidden-dim", help="Hidden width of a new projector (paper: 768).")
    ] = 768,
    log_every: Annotated[int, typer.Option("--log-every", help="Steps between log rows.")] = 10,
    seed: SeedOpt = 0,
    resume: Annotated[str | None, typer.Option("--resume", help="latest, or a checkpoint folder.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Train the UNet and the face projector jointly on triplets (paper §2.1, §2.3). Scales with accelerate launch."""
    from face0cli.config import TrainConfig
    from face0cli.console import quiet_model_loading
    from face0cli.training.train import train as run_train

    quiet_model_loading()

    cfg = TrainConfig(
        train=mode.value,
        max_steps=max_steps,
        batch_size=batch_size,
        gradient_accumulation_steps=accum,
        lr=lr,
        lr_warmup_steps=warmup,
        resolution=resolution,
        mixed_precision=mixed_precision,
        gradient_checkpointing=gradient_checkpointing,
        use_ema=ema,
        ema_decay=ema_decay,
        face_drop=face_drop,
        checkpoint_every=checkpoint_every,
        validate_every=validate_every,
        num_workers=workers,
        lora_rank=lora_rank,
        lr_scheduler=lr_scheduler,
        text_drop=text_drop,
        train_text_encoder=train_text_encoder,
        snr_gamma=snr_gamma,
        projector_normalize=projector_normalize,
        projector_lr=projector_lr,
        projector_hidden_dim=projector_hidden_dim,
        log_every=log_every,
        seed=seed,
    )
    result = run_train(cfg, triplets=triplets, out=out, base=base, resume=resume, show_progress=not as_json)
    if not _is_main_process():
        return
    if as_json:
        _print_json(result.to_dict())
    else:
        loss = "n/a" if result.loss is None else f"{result.loss:.4f}"
        console.print(
            f"trained {result.steps} steps (loss {loss}, {result.samples_per_s:.1f} samples/s) -> {result.model_dir}"
        )


@app.command("fit-gmm")
def fit_gmm(
    model: Annotated[Path, typer.Argument(help="A local face0 model directory.", show_default=False)],
    source: Annotated[
        Path,
        typer.Option("--from", help="A triplet file (face0 prep) or a character library.", show_default=False),
    ],
    min_components: Annotated[int, typer.Option("--min-components", help="Fewest mixture components.")] = 1,
    max_components: Annotated[int, typer.Option("--max-components", help="Most mixture components.")] = 8,
    covariance: Annotated[str, typer.Option("--covariance", help="diag, full, tied or spherical.")] = "diag",
    seed: SeedOpt = 0,
    as_json: JsonOpt = False,
) -> None:
    """Fit the model's GMM of faces (paper §3.1) to embeddings, the number of components chosen by BIC.

    Random characters, `--face random:SEED` and `face0 debias` sample from it. face0 train fits one to its
    training faces; this refits it, e.g. to a larger triplet file or to a library of characters.
    """
    from face0cli.config import GMMConfig
    from face0cli.errors import BadInput, EmbedderMismatch, ModelError
    from face0cli.library.face_space import FaceGMM
    from face0cli.model.pipeline import FACE0_JSON, GMM_DIR, Face0Config

    if not (model / FACE0_JSON).is_file():
        raise ModelError(f"{model} is not a local face0 model directory (no {FACE0_JSON}).")
    cfg = Face0Config.load(model / FACE0_JSON)
    x, embedder_id = _embeddings_of(source, cfg.embedder_id)
    if embedder_id != cfg.embedder_id or x.shape[1] != cfg.embed_dim:
        raise EmbedderMismatch(
            f"{source} holds {x.shape[1]}-d embeddings of {embedder_id}, but the model takes {cfg.embed_dim}-d "
            f"embeddings of {cfg.embedder_id}."
        )
    if len(x) < 2:
        raise BadInput(f"{source} has {len(x)} embedding(s) of the model's embedder; a GMM needs at least 2.")
    gmm_cfg = GMMConfig(min_components, max_components, covariance, seed)
    gmm = FaceGMM.fit(x, gmm_cfg, embedder_id=embedder_id)
    gmm.save(model / GMM_DIR)
    out = {
        "gmm": str(model / GMM_DIR),
        "n_train": len(x),
        "n_components": gmm.n_components,
        "identity": gmm.identity,
        "bic": gmm.bic,
    }
    if as_json:
        _print_json(out)
    else:
        console.print(
            f"GMM of {len(x)} faces: {gmm.n_components} component(s) (BIC over {min_components}..{max_components}), "
            f"identity {gmm.identity} -> {model / GMM_DIR}"
        )


def _embeddings_of(source: Path, embedder_id: str) -> tuple[Any, str]:
    """(N, D) embeddings and their embedder id from a triplet file, or a library's characters of EMBEDDER_ID."""
    import numpy as np

    from face0cli.data.prep import read_triplets
    from face0cli.errors import BadInput, StoreError
    from face0cli.library.store import FaceStore

    if not source.is_file():
        raise BadInput(f"{source} does not exist or is not a file.")
    try:
        chars = FaceStore(source).list()
    except StoreError:
        with read_triplets(source) as trip:
            return trip.embeddings(), trip.embedder_id
    same = [c.vector for c in chars if c.embedder_id == embedder_id]
    if not same:
        raise BadInput(f"{source} has no characters of the embedder {embedder_id}.")
    return np.stack(same), embedder_id


# ---------------------------------------------------------------------------------------------------- eval


@app.command("eval")
def eval_(
    args: Annotated[
        list[str],
        typer.Argument(help="SPEC (a YAML/JSON benchmark spec), or: compare A.json B.json.", show_default=False),
    ],
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Output folder of the run.")] = None,
    model: ModelOpt = None,
    no_resume: Annotated[bool, typer.Option("--no-resume", help="Regenerate every image.")] = False,
    device: DeviceOpt = "cpu",
    dtype: DtypeOpt = "fp32",
    store: StoreOpt = None,
    embedder_weights: EmbedderWeightsOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Score a model with the paper's protocol (§4.1-4.3): text, face and overall alignment, best-of-N.

    `face0 eval SPEC --out DIR` writes results.json, table.md (Table 1's shape) and contact_sheet.png;
    `face0 eval compare A.json B.json` prints two runs side by side with the differences.
    """
    from face0cli.console import quiet_model_loading, warn
    from face0cli.errors import BadInput

    if args[0] == "compare":
        if len(args) != 3:
            raise BadInput("usage: face0 eval compare A.json B.json")
        from face0cli.evaluation.evaluate import compare

        table, data = compare(args[1], args[2])
        if as_json:
            _print_json(data)
        else:
            console.print(table)
            for w in data.get("warnings", []):
                warn(w)
        return
    if len(args) != 1:
        raise BadInput("give one benchmark spec (or: face0 eval compare A.json B.json).")
    if out is None:
        raise BadInput("give the output folder with --out.")
    from face0cli.evaluation.evaluate import run_eval

    quiet_model_loading()
    res = run_eval(
        args[0],
        out,
        model=model,
        device=device,
        dtype=dtype,
        store=_store(store).path,
        embedder_weights=embedder_weights,
        resume=not no_resume,
        show_progress=not as_json,
        on_warning=warn,
    )
    if as_json:
        _print_json(res.to_json())
        return
    console.print(
        f"{len(res.images)} images ({res.generated} new, {res.reused} reused, {res.rescored} rescored)\\n"
        f"table: {res.table_md}\\nresults: {res.results_json}\\ncontact sheet: {res.contact_sheet}"
    )
    console.print(Path(res.table_md).read_text(encoding="utf-8"), markup=False, highlight=False)


def main() -> None:
    """Entry point of the `face0` console script."""
    app()


if __name__ == "__main__":
    main()
