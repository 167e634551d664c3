"""Options shared by the face0 commands (defined once) and the small helpers every command adapter uses."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from face0cli.config import SAMPLE_DEFAULTS, Scheduler
from face0cli.errors import BadInput

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
ThumbnailOpt = Annotated[
    bool,
    typer.Option(
        "--thumbnail/--no-thumbnail",
        help="Keep a thumbnail rendered by the model (when the face is of its embedder) in the library.",
    ),
]
NameOpt = Annotated[str, typer.Option("--name", help="Name of the character to save.", show_default=False)]
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
CountOpt = Annotated[int, typer.Option("--n", help="Images to make.")]
BatchOpt = Annotated[
    int,
    typer.Option(
        "--batch",
        help="Images of one setting rendered together (1: one at a time). Faster; each image keeps its own seed "
        "and differs from the unbatched one by float rounding only.",
    ),
]
PromptOpt = Annotated[str, typer.Option("--prompt", "-p", help="What to draw.")]

# the sampler's options (paper §2.2); defaults from SampleConfig
WOpt = Annotated[float, typer.Option("--w", help="Guidance scale w (paper §2.2).")]
COpt = Annotated[
    float, typer.Option("--c", help="Weight of text+face against the rest: 1 photo-real, 0.4-0.7 stylised.")
]
AOpt = Annotated[
    float, typer.Option("--a", help="Face-only against text-only in the rest: 0 or 1 (c=1.4, a=1: very stylised).")
]
VarietyOpt = Annotated[float, typer.Option("--variety", help="Std of Gaussian noise added to the face embedding.")]
StepsOpt = Annotated[
    int | None, typer.Option("--steps", help="Sampling steps (default: the model's, from its face0.json, else 50).")
]
SchedulerOpt = Annotated[Scheduler, typer.Option("--scheduler", help="The sampler (the paper uses DDIM).")]
SizeOpt = Annotated[str | None, typer.Option("--size", help="512 or WIDTHxHEIGHT; default: the model's.")]
NegativeOpt = Annotated[str, typer.Option("--negative", help="Negative prompt (the 'no text' branch).")]
DEFAULT_SCHEDULER = Scheduler(SAMPLE_DEFAULTS.scheduler)


def open_store(path: Path | None):  # -> FaceStore
    from face0cli.library.store import FaceStore, default_store_path

    return FaceStore(path if path is not None else default_store_path())


def store_for_new(path: Path | None, name: str, force: bool):  # -> FaceStore
    """The library, once NAME is checked to be valid and free (or --force): fail before any heavy work."""
    from face0cli.errors import CharacterExists
    from face0cli.library.store import check_name

    check_name(name)
    lib = open_store(path)
    if not force and name in lib:
        raise CharacterExists(f"a character named '{name}' exists already; use --force to replace it.")
    return lib


def check_writable(path: Path, *, folder: bool, option: str = "--out") -> None:
    """BadInput unless PATH (a folder, or a file's folder) exists as a folder or can be created: the first
    existing ancestor must be a writable folder. Checked before any work, and nothing is created."""
    target = path if folder else path.parent
    if target.exists() and not target.is_dir():
        raise BadInput(f"{option} {path}: {target} is a file, not a folder.")
    p = target
    while not p.exists() and p != p.parent:
        p = p.parent
    if not p.is_dir():
        raise BadInput(f"{option} {path}: the folder cannot be created, {p} is a file.")
    if not os.access(p, os.W_OK | os.X_OK):
        raise BadInput(f"{option} {path}: the folder cannot be created, {p} is not writable.")


def is_main_process() -> bool:
    """False on the other ranks of `accelerate launch` / torchrun, which print nothing: rank 0 reports."""
    return int(os.environ.get("RANK", "0")) == 0


def print_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")
    sys.stdout.flush()
