"""`face0 generate` and `face0 debias`: images of a face from a prompt (paper §2.2, §3.1)."""

from __future__ import annotations

import dataclasses
import re
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from face0cli.cli.options import (
    DEFAULT_SCHEDULER,
    AOpt,
    BatchOpt,
    COpt,
    CountOpt,
    DeviceOpt,
    DtypeOpt,
    EmbedderWeightsOpt,
    ForceOpt,
    JsonOpt,
    ModelOpt,
    NegativeOpt,
    PromptOpt,
    SchedulerOpt,
    SeedOpt,
    SizeOpt,
    StepsOpt,
    StoreOpt,
    VarietyOpt,
    WOpt,
    check_writable,
    print_json,
)
from face0cli.config import DEBIAS_A, DEBIAS_C, SAMPLE_DEFAULTS
from face0cli.console import console, error

DEFAULT_OUT = Path("face0-out")


def generate(
    prompt: PromptOpt = "",
    face: Annotated[
        str | None,
        typer.Option("--face", help="A character name, a photo, random[:SEED] (the model's GMM) or none."),
    ] = None,
    model: ModelOpt = None,
    w: WOpt = SAMPLE_DEFAULTS.w,
    c: COpt = SAMPLE_DEFAULTS.c,
    a: AOpt = SAMPLE_DEFAULTS.a,
    variety: VarietyOpt = SAMPLE_DEFAULTS.variety,
    seed: SeedOpt = 0,
    n: CountOpt = 1,
    batch: BatchOpt = 1,
    steps: StepsOpt = None,
    scheduler: SchedulerOpt = DEFAULT_SCHEDULER,
    size: SizeOpt = None,
    negative: NegativeOpt = "",
    out: Annotated[
        Path, typer.Option("--out", "-o", help="A .png file, or a folder for several images.")
    ] = DEFAULT_OUT,
    sweep: Annotated[
        list[str] | None,
        typer.Option("--sweep", help="A labelled grid: --sweep c=0,0.5,1 --sweep a=0,1 (paper Fig. 7)."),
    ] = None,
    from_png: Annotated[
        Path | None, typer.Option("--from-png", help="Reproduce an image from the parameters in its PNG.")
    ] = None,
    jobs: Annotated[
        Path | None,
        typer.Option(
            "--jobs",
            help="A JSONL file of jobs (- reads standard input as it comes); one JSON result per line on stdout.",
        ),
    ] = None,
    init: Annotated[
        Path | None, typer.Option("--init", help="Image-to-image: start from this image (its size by default).")
    ] = None,
    strength: Annotated[
        float | None,
        typer.Option("--strength", help="With --init: how much to redraw, 0..1 (default 0.8; 1 = from noise)."),
    ] = None,
    mask: Annotated[
        Path | None, typer.Option("--mask", help="With --init: inpaint; white = redraw, black = keep.")
    ] = None,
    controlnet: Annotated[
        str | None, typer.Option("--controlnet", help="A diffusers ControlNet directory or hub id (SD 1.x).")
    ] = None,
    control: Annotated[
        Path | None, typer.Option("--control", help="The ControlNet's control image (pose, edges, depth...).")
    ] = None,
    control_scale: Annotated[
        float, typer.Option("--control-scale", help="The ControlNet residuals' scale (0 = off).")
    ] = 1.0,
    lora: Annotated[
        list[str] | None,
        typer.Option("--lora", help="A LoRA .safetensors file, FILE or FILE:SCALE (repeatable)."),
    ] = None,
    force: ForceOpt = False,
    device: DeviceOpt = "cpu",
    dtype: DtypeOpt = "fp32",
    store: StoreOpt = None,
    embedder_weights: EmbedderWeightsOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Generate images of a face from a prompt (paper §2.2). Same seed and prompt with another --face retargets.

    --init/--strength/--mask (img2img, inpainting), --controlnet/--control and --lora compose with the face
    guidance; all of them (input files by path and sha256) go into the PNG, so --from-png reproduces them."""
    from face0cli.config import SampleConfig
    from face0cli.console import warn
    from face0cli.errors import BadInput
    from face0cli.generation.generate import Face, Inputs, Request, check_batch, parse_size, request_from_png

    check_batch(batch)
    height, width = parse_size(size)
    base_req: Request | None = None
    from_a1111 = False
    if from_png is not None:
        found = request_from_png(from_png)
        base_req, from_a1111 = found.request, found.a1111
        if found.params is not None:
            model = model or found.params.get("model")
        else:
            note = "; ".join(found.unused) if found.unused else "nothing"
            from rich.markup import escape

            warn(
                escape(
                    f"{from_png} has no face0 parameters; used its A1111 text (prompt, steps, CFG, seed, size), "
                    f"not: {note}."
                )
            )
        if out == DEFAULT_OUT and not sweep:
            out = from_png.with_name(from_png.stem + "-again.png")
    if jobs is not None:
        check_writable(out, folder=True)
        raise typer.Exit(_run_jobs(jobs, model, out, force, device, dtype, store, embedder_weights, batch))
    if base_req is None:
        if not prompt:
            raise BadInput("give a prompt with --prompt (or --from-png / --jobs).")
        asked = steps if steps is not None else SAMPLE_DEFAULTS.steps  # checked now; the model's replace it later
        sample = SampleConfig(w, c, a, variety, asked, scheduler.value, height, width)
        inputs = Inputs.from_options(init, strength, mask, controlnet, control, control_scale, lora or ())
        base_req = Request(
            prompt=prompt, face=Face(None, "none"), seed=seed, n=n, sample=sample, negative=negative, inputs=inputs
        )
        base_req.check()
    single_file = out.suffix.lower() == ".png"
    check_writable(out, folder=not single_file)

    from face0cli.generation.context import ModelContext, check_free, render_all
    from face0cli.generation.generate import output_paths

    ctx = ModelContext(model, device, dtype, store, embedder_weights)
    if from_png is None or from_a1111:
        base_req.face = ctx.face(face)
    if from_png is None:  # an image's own steps are kept; otherwise the asked ones, else the model's
        base_req.sample = dataclasses.replace(base_req.sample, steps=ctx.steps(steps))
    base_req.model = ctx.model
    if sweep:
        _generate_sweep(ctx, base_req, sweep, out, force, as_json, batch)
        return
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", base_req.face.label)[:40] + f"-s{base_req.seed}"
    paths = output_paths(out, stem, base_req.n)
    check_free(paths, force)
    results = render_all(ctx, [base_req], [paths], not as_json, batch)
    _show_results(results, as_json)


def _show_results(results: list[dict[str, Any]], as_json: bool) -> None:
    rows = [{k: v for k, v in r.items() if k != "image"} for r in results]
    if as_json:
        print_json(rows)
        return
    from rich.table import Table

    table = Table(title="face0 generate", title_justify="left")
    for col in ("image", "face", "seed", "UNet calls/step"):
        table.add_column(col, overflow="fold")
    for r in rows:
        table.add_row(str(r["path"]), r["face"], str(r["seed"]), str(r.get("unet_calls_per_step")))
    console.print(table)


def _generate_sweep(
    ctx: Any, base: Any, sweep: list[str], out: Path, force: bool, as_json: bool, batch: int = 1
) -> None:
    from face0cli.generation.context import check_free, render_all
    from face0cli.generation.generate import parse_sweep, save_png, sweep_requests
    from face0cli.generation.grids import make_grid

    reqs, rows, cols, rl, cl = sweep_requests(base, parse_sweep(sweep))
    path = out if out.suffix.lower() == ".png" else out / "sweep.png"
    check_free([path], force)
    results = render_all(ctx, reqs, [[] for _ in reqs], not as_json, batch)
    title = f"{base.prompt} | face {base.face.label} | seed {base.seed}"
    grid = make_grid([r["image"] for r in results], rows, cols, row_labels=rl, col_labels=cl, title=title)
    save_png(grid, base.params(0) | {"model": ctx.model, "sweep": sweep}, path, **ctx.png_text())
    if as_json:
        print_json({"grid": str(path), "rows": rl, "cols": cl})
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
    batch: int = 1,
) -> int:
    """One JSON result per job line on stdout, each failure also as one line on stderr; 1 when any job failed."""
    import json

    from face0cli.generation.context import ModelContext
    from face0cli.generation.generate import read_text_file
    from face0cli.generation.jobs import run_jobs

    if str(jobs) != "-":
        read_text_file(jobs)  # a missing or unreadable jobs file fails before the model loads
    ctx = ModelContext(model, device, dtype, store, weights)
    source = "<stdin>" if str(jobs) == "-" else str(jobs)
    failed = 0
    for record in run_jobs(ctx, jobs, out, force, batch):
        if not record["ok"]:
            failed += 1
            error(f"{source}:{record['line']}: {record['error']}")
        sys.stdout.write(json.dumps(record) + "\n")
        sys.stdout.flush()
    return 1 if failed else 0


def debias(
    prompt: Annotated[
        str,
        typer.Option("--prompt", "-p", help="A prompt that names no one, e.g. 'a stock photo of a doctor'."),
    ],
    n: Annotated[int, typer.Option("--n", help="Images, each with a fresh face from the model's GMM.")] = 8,
    batch: BatchOpt = 1,
    model: ModelOpt = None,
    seed: SeedOpt = 0,
    w: WOpt = SAMPLE_DEFAULTS.w,
    c: Annotated[
        float,
        typer.Option(
            "--c",
            help="Weight of text+face; the rest goes to the face alone (--a 1), so the words pull the face "
            "less. 1 (with --a 0): the paper's plain sampling.",
        ),
    ] = DEBIAS_C,
    a: AOpt = DEBIAS_A,
    steps: StepsOpt = None,
    scheduler: SchedulerOpt = DEFAULT_SCHEDULER,
    size: SizeOpt = None,
    negative: NegativeOpt = "",
    out: Annotated[
        Path, typer.Option("--out", "-o", help="Folder for the images, grid.png and faces.safetensors.")
    ] = Path("face0-debias"),
    force: ForceOpt = False,
    device: DeviceOpt = "cpu",
    dtype: DtypeOpt = "fp32",
    as_json: JsonOpt = False,
) -> None:
    """Counter the model's bias: every image gets a fresh random face from the GMM (paper §3.1), and half the
    guidance comes from that face alone (--c 0.5 --a 1), so the prompt's words pull the face less."""
    from face0cli.config import SampleConfig
    from face0cli.errors import ParameterError
    from face0cli.generation.generate import Face, Request, check_batch, parse_size

    check_batch(batch)
    height, width = parse_size(size)
    asked = steps if steps is not None else SAMPLE_DEFAULTS.steps  # checked now; the model's replace it later
    sample = SampleConfig(w, c, a, SAMPLE_DEFAULTS.variety, asked, scheduler.value, height, width)
    base = Request(prompt=prompt, face=Face(None, "none"), seed=seed, sample=sample, negative=negative)
    base.check()
    if n < 1:
        raise ParameterError(f"--n must be >= 1, got {n}.")
    check_writable(out, folder=True)

    from face0cli.generation.context import ModelContext
    from face0cli.generation.debias import debias as run_debias

    ctx = ModelContext(model, device, dtype, None, None)
    base.sample = dataclasses.replace(base.sample, steps=ctx.steps(steps))
    run = run_debias(ctx, base, n, out, force=force, show_progress=not as_json, batch=batch)
    if as_json:
        print_json(run.to_json())
        return
    console.print(f"{n} images, {n} fresh faces -> {out}/ (grid: {run.grid})")
    console.print(f"keep face #i with: face0 character new NAME --from-debias {out} --index i")
