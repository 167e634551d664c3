"""face0: put a face into text-to-image diffusion at sample time (Valevski et al., 2023).

The public Python API. Names load on first use (PEP 562), so `import face0cli` pulls in no torch:

    from face0cli import Face0Pipeline, FaceStore, embed_character, generate

Everything the commands do is here: `embed_character` (face0 embed), `mix_characters` (face0 mix), `generate`,
`debias`, `run_jobs` (face0 generate / debias), `prep` (face0 prep), `train` (face0 train), `run_eval` and
`compare_runs` (face0 eval run / compare).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name -> (module, attribute)
_EXPORTS: dict[str, tuple[str, str]] = {
    # the model
    "Face0Pipeline": ("face0cli.model.pipeline", "Face0Pipeline"),
    "Face0PipelineOutput": ("face0cli.model.pipeline", "Face0PipelineOutput"),
    "Face0Config": ("face0cli.model.pipeline", "Face0Config"),
    "FaceProjector": ("face0cli.model.projector", "FaceProjector"),
    # faces and the library
    "FacenetEmbedder": ("face0cli.faces.embedders", "FacenetEmbedder"),
    "embed_photo": ("face0cli.faces.embedders", "embed_photo"),
    "FaceStore": ("face0cli.library.store", "FaceStore"),
    "Character": ("face0cli.library.store", "Character"),
    "FaceGMM": ("face0cli.library.face_space", "FaceGMM"),
    "embed_character": ("face0cli.library.characters", "embed_character"),
    "mix_characters": ("face0cli.library.characters", "mix_characters"),
    # settings
    "SampleConfig": ("face0cli.config", "SampleConfig"),
    "CropConfig": ("face0cli.config", "CropConfig"),
    "GMMConfig": ("face0cli.config", "GMMConfig"),
    "PrepConfig": ("face0cli.config", "PrepConfig"),
    "TrainConfig": ("face0cli.config", "TrainConfig"),
    # generation
    "ModelContext": ("face0cli.generation.context", "ModelContext"),
    "generate": ("face0cli.generation.context", "generate"),
    "Request": ("face0cli.generation.generate", "Request"),
    "Face": ("face0cli.generation.generate", "Face"),
    "render": ("face0cli.generation.generate", "render"),
    "save_png": ("face0cli.generation.generate", "save_png"),
    "read_png_params": ("face0cli.generation.generate", "read_png_params"),
    "make_grid": ("face0cli.generation.grids", "make_grid"),
    "debias": ("face0cli.generation.debias", "debias"),
    "render_strip": ("face0cli.generation.strip", "render_strip"),
    "run_jobs": ("face0cli.generation.jobs", "run_jobs"),
    # data and training
    "open_dataset": ("face0cli.data.readers", "open_dataset"),
    "prep": ("face0cli.data.prep", "prep"),
    "read_triplets": ("face0cli.data.prep", "read_triplets"),
    "train": ("face0cli.training.train", "train"),
    # evaluation
    "load_spec": ("face0cli.evaluation.spec", "load_spec"),
    "run_eval": ("face0cli.evaluation.runner", "run_eval"),
    "compare_runs": ("face0cli.evaluation.compare", "compare"),
    "register_judge": ("face0cli.evaluation.judges", "register_judge"),
    # errors
    "Face0Error": ("face0cli.errors", "Face0Error"),
    "BadInput": ("face0cli.errors", "BadInput"),
    "ParameterError": ("face0cli.errors", "ParameterError"),
    "ModelError": ("face0cli.errors", "ModelError"),
    "EmbedderMismatch": ("face0cli.errors", "EmbedderMismatch"),
    "NoFaceFound": ("face0cli.errors", "NoFaceFound"),
    "MissingWeights": ("face0cli.errors", "MissingWeights"),
    "MissingPackage": ("face0cli.errors", "MissingPackage"),
}

__all__ = [
    "__version__",
    "Face0Pipeline",
    "Face0PipelineOutput",
    "Face0Config",
    "FaceProjector",
    "FacenetEmbedder",
    "embed_photo",
    "FaceStore",
    "Character",
    "FaceGMM",
    "embed_character",
    "mix_characters",
    "SampleConfig",
    "CropConfig",
    "GMMConfig",
    "PrepConfig",
    "TrainConfig",
    "ModelContext",
    "generate",
    "Request",
    "Face",
    "render",
    "save_png",
    "read_png_params",
    "make_grid",
    "debias",
    "render_strip",
    "run_jobs",
    "open_dataset",
    "prep",
    "read_triplets",
    "train",
    "load_spec",
    "run_eval",
    "compare_runs",
    "register_judge",
    "Face0Error",
    "BadInput",
    "ParameterError",
    "ModelError",
    "EmbedderMismatch",
    "NoFaceFound",
    "MissingWeights",
    "MissingPackage",
]
"""The public names: __version__ and every lazily exported name (a test keeps the two lists in step)."""


def __getattr__(name: str) -> Any:
    """Import a public name's module on first use (PEP 562) and keep the name here."""
    try:
        module, attr = _EXPORTS[name]
    except KeyError:
        raise AttributeError(f"module 'face0cli' has no attribute {name!r}") from None
    value = getattr(importlib.import_module(module), attr)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))


if TYPE_CHECKING:  # for type checkers and editors: the same names, imported eagerly
    from face0cli.config import CropConfig, GMMConfig, PrepConfig, SampleConfig, TrainConfig
    from face0cli.data.prep import prep, read_triplets
    from face0cli.data.readers import open_dataset
    from face0cli.errors import (
        BadInput,
        EmbedderMismatch,
        Face0Error,
        MissingPackage,
        MissingWeights,
        ModelError,
        NoFaceFound,
        ParameterError,
    )
    from face0cli.evaluation.compare import compare as compare_runs
    from face0cli.evaluation.judges import register_judge
    from face0cli.evaluation.runner import run_eval
    from face0cli.evaluation.spec import load_spec
    from face0cli.faces.embedders import FacenetEmbedder, embed_photo
    from face0cli.generation.context import ModelContext, generate
    from face0cli.generation.debias import debias
    from face0cli.generation.generate import Face, Request, read_png_params, render, save_png
    from face0cli.generation.grids import make_grid
    from face0cli.generation.jobs import run_jobs
    from face0cli.generation.strip import render_strip
    from face0cli.library.characters import embed_character, mix_characters
    from face0cli.library.face_space import FaceGMM
    from face0cli.library.store import Character, FaceStore
    from face0cli.model.pipeline import Face0Config, Face0Pipeline, Face0PipelineOutput
    from face0cli.model.projector import FaceProjector
    from face0cli.training.train import train
