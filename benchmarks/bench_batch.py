"""Benchmark `face0 generate --n N --batch B` against `--batch 1` in the same run: the same model, face, prompt and
seeds, in-process (generation.context.render_all, what the command calls), rounds alternating so a drift in the
machine's speed reaches both.

    python benchmarks/bench_batch.py [--model DIR] [--n 8] [--batch 4] [--rounds 3]

Prints seconds per image of each, their ratio (median over rounds) and the largest pixel difference between the
two runs' images (float rounding in the batched UNet; 0 means bit for bit).
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
    ap.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = ap.parse_args()

    import dataclasses

    from face0cli.generation.context import ModelContext, render_all
    from face0cli.generation.generate import Request

    with tempfile.TemporaryDirectory() as tmp:
        ctx = ModelContext(args.model, store=Path(tmp) / "library.h5")
        req = Request(prompt=args.prompt, face=ctx.face(args.face), n=args.n, model=ctx.model)
        req.sample = dataclasses.replace(req.sample, steps=ctx.steps())
        render_all(ctx, [req.replace(n=1)], [[]], show_progress=False)  # warm-up
        times: dict[int, list[float]] = {1: [], args.batch: []}
        images: dict[int, list[np.ndarray]] = {}
        for _ in range(args.rounds):
            for b in (1, args.batch):
                t0 = time.perf_counter()
                res = render_all(ctx, [req], [[]], show_progress=False, batch=b)
                times[b].append((time.perf_counter() - t0) / args.n)
                images[b] = [np.asarray(r["image"], np.int16) for r in res]
    ratios = [a / b for a, b in zip(times[1], times[args.batch])]
    diff = max(int(np.abs(x - y).max()) for x, y in zip(images[1], images[args.batch]))
    out = {
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
        f"{args.n} images at {out['steps']} steps: {out['seconds_per_image_batch_1']:.3f} s/image at --batch 1, "
        f"{out[f'seconds_per_image_batch_{args.batch}']:.3f} s/image at --batch {args.batch}: "
        f"{out['speedup']:.2f}x; largest pixel difference {diff}/255"
    )


if __name__ == "__main__":
    main()
