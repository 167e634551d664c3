"""Benchmark the quickstart's cold `face0 generate` and one in-process image against plain diffusers on the same
components, in the same run (face0cli.synthetic.speedcheck; the scorecard's speed rows).

    python benchmarks/bench_cold.py [--model DIR] [--runs 3] [--repeats 5]

The reference is diffusers' StableDiffusionPipeline built from the model's own UNet, VAE, text encoder, tokenizer
and scheduler, at the same steps, guidance, prompt and size: cold, a fresh process that imports diffusers, loads
them and writes one PNG (its import time is printed apart: the floor of any command on these libraries here);
in-process, the same modules in this process. Runs alternate face0 / plain so a drift in the machine's speed
reaches both; ratios are medians over pairs.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from face0cli.synthetic.speedcheck import cold, in_process


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="a face0 model directory (default: the embedded default model)")
    ap.add_argument("--face", default="ada", help="the --face of the face0 command (an example character)")
    ap.add_argument("--runs", type=int, default=3, help="cold runs of each command")
    ap.add_argument("--repeats", type=int, default=5, help="in-process images of each pipeline")
    ap.add_argument("--steps", type=int, default=None, help="sampling steps (default: the model's own, face0.json)")
    ap.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = ap.parse_args()
    if args.model is None:
        from face0cli.synthetic.default import default_model

        args.model = str(default_model())
    fast = in_process(args.model, steps=args.steps, repeats=args.repeats)
    with tempfile.TemporaryDirectory() as tmp:
        slow = cold(args.model, args.face, Path(tmp) / "cold.png", steps=args.steps, runs=args.runs)
    res = {**fast, **slow}
    if args.json:
        print(json.dumps(res, indent=2))
        return
    print(f"{'':34} {'face0':>8} {'plain':>8} {'ratio':>6}")
    print(
        f"{'one image in-process (s)':34} {res['in_process_s']:8.2f} {res['in_process_plain_s']:8.2f} "
        f"{res['in_process_ratio']:6.2f}"
    )
    print(
        f"{'cold from the shell, median (s)':34} {res['cli_cold_s']:8.2f} {res['cli_cold_plain_s']:8.2f} "
        f"{res['cli_cold_ratio']:6.2f}"
    )
    print(f"plain diffusers' cold run spent {res['cli_cold_plain_import_s']:.2f} s importing torch and diffusers")
    if res["cli_cold_peft"]:
        print("peft is installed here (dev or lora extra): diffusers imports it each time; a user's install has none")


if __name__ == "__main__":
    main()
