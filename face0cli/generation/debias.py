"""Debiasing (paper §3.1): every image of a prompt gets a fresh random face from the model's GMM."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from face0cli.errors import ParameterError
from face0cli.generation.context import ModelContext, check_free, render_all
from face0cli.generation.generate import Request, save_debias_faces, save_png
from face0cli.generation.grids import make_grid


@dataclass
class DebiasRun:
    """What a debias run wrote: the images, their grid and the faces file (any face can be kept later)."""

    grid: Path
    faces: Path
    images: list[dict[str, Any]]  # one result per image (path, seed, face, prompt, UNet calls; "image": PIL)

    def to_json(self) -> dict[str, Any]:
        return {
            "grid": str(self.grid),
            "faces": str(self.faces),
            "images": [{k: v for k, v in r.items() if k != "image"} for r in self.images],
        }


def debias(
    ctx: ModelContext,
    base: Request,
    n: int,
    out: Path,
    *,
    force: bool = False,
    show_progress: bool = True,
    batch: int = 1,
) -> DebiasRun:
    """Render N images of BASE's prompt, image i at seed base.seed + i with the GMM's face of that seed, into OUT:
    debias-000.png..., grid.png (4 columns) and faces.safetensors. BATCH: images per pipeline call (render_all).
    BASE is sampled as its SampleConfig says: `face0 debias` gives it config.DEBIAS_C / DEBIAS_A (half the guidance
    from the face alone), SampleConfig's own default is the paper's plain c = 1, a = 0.

    Raises:
        ParameterError: n < 1. ModelError: the model has no GMM. BadInput: an output exists and not FORCE.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ParameterError(f"--n must be >= 1, got {n}.")
    base.check()
    seed = base.seed
    reqs = [base.replace(n=1, seed=seed + i, face=ctx.face(f"random:{seed + i}"), model=ctx.model) for i in range(n)]
    paths = [[out / f"debias-{i:03d}.png"] for i in range(n)]
    grid_path, faces_path = out / "grid.png", out / "faces.safetensors"
    check_free([p[0] for p in paths] + [grid_path, faces_path], force)
    results = render_all(ctx, reqs, paths, show_progress, batch)
    cols = min(n, 4)
    rows = -(-n // cols)
    images = [r["image"] for r in results]
    images += [images[0].copy().point(lambda _: 255)] * (rows * cols - n)
    labels = [f"#{i} face seed {seed + i}" for i in range(n)] + [""] * (rows * cols - n)
    grid = make_grid(images, rows, cols, tile_labels=labels, title=f"{base.prompt} | a fresh face per image")
    save_png(grid, {"prompt": base.prompt, "seeds": [seed + i for i in range(n)], "model": ctx.model}, grid_path)
    gmm = ctx.pipe.gmm
    assert gmm is not None  # ctx.face("random:...") refused a model without one
    save_debias_faces(faces_path, reqs, ctx.embedder_id, gmm.identity)
    return DebiasRun(grid_path, faces_path, results)
