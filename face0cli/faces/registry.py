"""Which face embedder a model or a command uses: InceptionResnetV1 (VGGFace2) or the synthetic world's network.

An embedder id says which: "synthetic/facenet-<sha>" is the synthetic world's FaceNet, whose weights travel in
the model directory (embedder/model.safetensors + config.json); any other id is facenet-pytorch's
InceptionResnetV1 with the VGGFace2 weights found as faces.embedders.resolve_weights says.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from face0cli.config import CropConfig
from face0cli.errors import EmbedderMismatch, ModelError

EMBEDDER_DIR = "embedder"
SYNTHETIC_PREFIX = "synthetic/"


def is_synthetic(embedder_id: str) -> bool:
    return embedder_id.startswith(SYNTHETIC_PREFIX)


def open_embedder(
    spec: str | os.PathLike[str] | None = None,
    *,
    weights: str | os.PathLike[str] | None = None,
    device: str = "cpu",
    cfg: CropConfig = CropConfig(),
) -> Any:
    """The embedder SPEC names: None or "facenet" (InceptionResnetV1 + VGGFace2 weights), a synthetic embedder
    folder (config.json + model.safetensors), or a face0 model directory with an embedder/ folder.

    Raises:
        ModelError: SPEC is a path that holds no embedder.
    """
    if spec is None or str(spec) == "facenet":
        from face0cli.faces.embedders import FacenetEmbedder

        return FacenetEmbedder(weights=weights, device=device, cfg=cfg)
    path = Path(spec)
    for folder in (path, path / EMBEDDER_DIR):
        if (folder / "config.json").is_file() and (folder / "model.safetensors").is_file():
            from face0cli.synthetic.embedder import SyntheticEmbedder

            return SyntheticEmbedder(folder, device=device, cfg=cfg)
    raise ModelError(
        f"{spec} holds no face embedder: give 'facenet', a synthetic embedder folder (config.json + "
        "model.safetensors) or a face0 model directory with an embedder/ folder."
    )


def embedder_for_model(
    embedder_id: str,
    model_dir: str | os.PathLike[str] | None,
    *,
    weights: str | os.PathLike[str] | None = None,
    device: str = "cpu",
    cfg: CropConfig = CropConfig(),
) -> Any:
    """The embedder a model was trained with (paper §2.1: the conditioning encoder), checked against its id.

    Raises:
        ModelError: a synthetic-embedder model without its embedder/ folder.
        EmbedderMismatch: the embedder found is not the one the model names.
    """
    if is_synthetic(embedder_id):
        folder = Path(model_dir) / EMBEDDER_DIR if model_dir is not None else None
        if folder is None or not (folder / "model.safetensors").is_file():
            raise ModelError(f"the model's embedder {embedder_id} is missing: it belongs in {folder}.")
        emb = open_embedder(folder, device=device, cfg=cfg)
    else:
        emb = open_embedder(None, weights=weights, device=device, cfg=cfg)
    if emb.id != embedder_id:
        raise EmbedderMismatch(
            f"the model was trained with the embedder {embedder_id}, but the embedder found is {emb.id}."
        )
    return emb


def embedder_for_embed(
    model: str | os.PathLike[str] | None, *, weights: str | os.PathLike[str] | None = None, device: str = "cpu"
) -> Any:
    """The embedder `face0 embed` uses: VGGFace2 InceptionResnetV1 when its weights are given; otherwise the
    embedder of MODEL (a local face0 model directory; None: the embedded default model).

    A hub id is not opened here (no download): its embedder is taken to be InceptionResnetV1.
    """
    if weights is not None:
        return open_embedder(None, weights=weights, device=device)
    if model is None:
        from face0cli.synthetic.default import default_model

        model = default_model()
    path = Path(model)
    if not path.is_dir():
        return open_embedder(None, device=device)
    from face0cli.model.pipeline import FACE0_JSON, Face0Config

    if not (path / FACE0_JSON).is_file():
        raise ModelError(f"{path} is not a face0 model directory (no {FACE0_JSON}).")
    return embedder_for_model(Face0Config.load(path / FACE0_JSON).embedder_id, path, device=device)
