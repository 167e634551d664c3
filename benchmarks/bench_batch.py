"""Benchmark `face0 generate --n N --batch B` against `--batch 1` in the same run: the same model, face, prompt and
seeds, in-process (generation.context.render_all, what the command calls), rounds alternating so a drift in the
machine's speed reaches both.

    python benchmarks/bench_batch.py [--model DIR] [--n 8] [--batch 4] [--rounds 3]
    python benchmarks/bench_batch.py --jobs [--n 8] [--batch 4]    # N one-image jobs of `face0 generate --jobs`

With --jobs, the N images are N jobs of one line each (the four example characters in turn, each with its own
prompt and seed, the model's steps) run through generation.jobs.run_jobs, what `face0 generate --jobs F --batch B`
calls, so the batches cross jobs. Prints seconds per image of each, their ratio (median over rounds) and the
largest pixel difference between the two runs' images (float rounding in the batched UNet; 0 means bit for bit).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="a face0 model directory (default: the embedded default model)")
    ap.add_argument("--face", default="ada", help="the face (an example character, a photo, random:S)")
    ap.add_argument("--prompt", default="a photo of a person in a red shirt on a blue background")
    ap.add_argument("--n", type=int, default=8, help="images per run")
    ap.add_argument("--batch", type=int, default=4, help="the batched run's --batch")
    ap.add_argument("--rounds", type=int, default=3, help="alternating rounds of both runs")
    ap.add_argument("--jobs", action="store_true", help="N one-image jobs of --jobs instead of one job of N images")
    ap.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = ap.parse_args()

    import dataclasses

    from PIL import Image

    from face0cli.generation.context import ModelContext, render_all
    from face0cli.generation.generate import Request
    from face0cli.generation.jobs import run_jobs

    with tempfile.TemporaryDirectory() as tmp:
        ctx = ModelContext(args.model, store=Path(tmp) / "library.h5")
        req = Request(prompt=args.prompt, face=ctx.face(args.face), n=args.n, model=ctx.model)
        req.sample = dataclasses.replace(req.sample, steps=ctx.steps())
        render_all(ctx, [req.replace(n=1)], [[]], show_progress=False)  # warm-up
        examples = ctx.examples()  # the model's example characters (the default model's four), else --face
        faces = examples.names() if examples is not None else [args.face]
        jobs = _jobs_file(Path(tmp), args.n, faces) if args.jobs else None
        times: dict[int, list[float]] = {1: [], args.batch: []}
        images: dict[int, list[np.ndarray]] = {}
        for r in range(args.rounds):
            for b in (1, args.batch):
                t0 = time.perf_counter()
                if jobs is None:
                    res = render_all(ctx, [req], [[]], show_progress=False, batch=b)
                    images[b] = [np.asarray(x["image"], np.int16) for x in res]
                else:
                    out = Path(tmp) / f"out-{r}-{b}"
                    records = list(run_jobs(ctx, jobs, out, batch=b))
                    if not all(x["ok"] for x in records):
                        raise SystemExit(f"a job failed: {[x for x in records if not x['ok']][0]}")
                    paths = [Path(p) for x in records for p in x["images"]]
                    images[b] = [np.asarray(Image.open(p).convert("RGB"), np.int16) for p in paths]
                times[b].append((time.perf_counter() - t0) / args.n)
    ratios = [a / b for a, b in zip(times[1], times[args.batch])]
    diff = max(int(np.abs(x - y).max()) for x, y in zip(images[1], images[args.batch]))
    out = {
        "what": f"{args.n} one-image jobs" if args.jobs else f"one job of {args.n} images",
        "n": args.n,
        "batch": args.batch,
        "steps": req.sample.steps,
        "seconds_per_image_batch_1": statistics.median(times[1]),
        f"seconds_per_image_batch_{args.batch}": statistics.median(times[args.batch]),
        "speedup": statistics.median(ratios),
        "max_pixel_difference": diff,
    }
    if args.json:
        print(json.dumps(out, indent=2))
        return
    print(
        f"{out['what']} at {out['steps']} steps: {out['seconds_per_image_batch_1']:.3f} s/image at --batch 1, "
        f"{out[f'seconds_per_image_batch_{args.batch}']:.3f} s/image at --batch {args.batch}: "
        f"{out['speedup']:.2f}x; largest pixel difference {diff}/255"
    )


def _jobs_file(folder: Path, n: int, faces: list[str]) -> Path:
    """N one-image jobs: FACES in turn, each job with its own shirt, background and seed."""
    colours = ("red", "blue", "green", "yellow", "purple", "orange", "pink", "grey")
    lines = [
        {
            "face": faces[i % len(faces)],
            "prompt": f"a photo of a person in a {colours[i % 8]} shirt on a {colours[(i + 3) % 8]} background",
            "seed": i,
        }
        for i in range(n)
    ]
    path = folder / "jobs.jsonl"
    path.write_text("\n".join(json.dumps(x) for x in lines) + "\n", encoding="utf-8")
    return path


if __name__ == "__main__":
    main()
