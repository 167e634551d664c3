"""Interpolation strips (paper Fig. 5/6): N images at one seed, the face moving linearly between two embeddings."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from face0cli.config import SampleConfig
from face0cli.errors import EmbedderMismatch, ParameterError
from face0cli.generation.context import ModelContext, render_all
from face0cli.generation.generate import Face, Request, save_png
from face0cli.generation.grids import make_grid
from face0cli.library.face_space import lerp


def render_strip(
    ctx: ModelContext,
    start: np.ndarray,
    end: np.ndarray,
    n: int,
    path: Path,
    *,
    prompt: str = "a photo of a person",
    seed: int = 0,
    sample: SampleConfig | None = None,
    title: str = "",
) -> Path:
    """Write a one-row grid of N images at SEED, image k conditioned on lerp(START, END, k / (N-1)), to PATH.

    Args:
        start, end: (D,) face embeddings of the model's embedder.
    """
    if n < 2:
        raise ParameterError(f"--strip must be at least 2 images, got {n}.")
    if start.shape[0] != ctx.dim:
        raise EmbedderMismatch(f"the characters have dimension {start.shape[0]}, but the model expects {ctx.dim}.")
    sample = sample or SampleConfig()
    ts = [k / (n - 1) for k in range(n)]
    reqs = [
        Request(prompt=prompt, face=Face(lerp(start, end, t), f"t={t:.2f}"), seed=seed, sample=sample, model=ctx.model)
        for t in ts
    ]
    results = render_all(ctx, reqs, [[] for _ in reqs], show_progress=False)
    labels = [f"t={t:.2f}" for t in ts]
    grid = make_grid([r["image"] for r in results], 1, n, col_labels=labels, title=f"{title}: {prompt} | seed {seed}")
    params: dict[str, Any] = {"strip": title, "prompt": prompt, "seed": seed, "steps": sample.steps, "t": ts}
    return save_png(grid, params | {"model": ctx.model}, path)
