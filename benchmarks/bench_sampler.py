"""Benchmark the Face0 sampler (paper §2.2) against diffusers' StableDiffusionPipeline on the same modules.

    python benchmarks/bench_sampler.py [--steps 10] [--repeats 5] [--size 64] [--channels 64,128,256]
    python benchmarks/bench_sampler.py --sd-config [--size 128]      # SD 1.x UNet shape, random weights

On a CPU shared with other jobs pass --threads 1: with several threads, other processes stall torch's
thread pool and the numbers swing by factors.

Both pipelines share one UNet, text encoder and scheduler config, in the same run, with the same seed:

1. sd-cfg: ``StableDiffusionPipeline(prompt_embeds=..., negative_prompt_embeds=..., guidance_scale=w)``,
   plain classifier-free guidance, 2 UNet evaluations a step in one batched call;
2. face0 c=1: ``Face0Pipeline(prompt, face, c=1, a=0)``, the photo-real setting: also 2 evaluations a step
   (target: per-step time <= 1.03 x sd-cfg);
3. face0 c=0.5: ``Face0Pipeline(prompt, face, c=0.5, a=0)``, three branches (u, d, df) in one batched call
   (target: <= 1.6 x sd-cfg; the UNet alone would give about 1.5).

A step's time is taken between the per-step callbacks of each pipeline (median over the steps after the
first), so text encoding, projection and decoding are outside it; the whole call's time per step is printed
too. Runs are interleaved (sd, c=1, c=0.5, sd, ...) after a warm-up of each; the ratio is the median over
repeats of each run against the sd-cfg run just before it (load drifts cancel), ratio(min) compares the
fastest runs. A forward pre-hook on the UNet checks the evaluations per step: exactly 2 at c=1, 3 at c=0.5.
Random-init weights: the speed of a UNet does not depend on its weights. Outputs are latents (no decoding).
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

import numpy as np
import torch
from diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion import StableDiffusionPipeline

from face0cli.model.pipeline import Face0Pipeline, make_scheduler
from face0cli.model.projector import FaceProjector
from face0cli.model.tiny import SD_SCHEDULE, sized_modules

PROMPT = "a photo of a person with blue hair"
Args = argparse.Namespace
Timing = tuple[float, float]  # (seconds a step between callbacks, seconds of the whole call / steps)


def build(args: argparse.Namespace) -> tuple[Face0Pipeline, StableDiffusionPipeline]:
    """The two pipelines over one set of random modules (seed 0)."""
    channels = None if args.sd_config else tuple(int(c) for c in args.channels.split(","))
    # the VAE is never run per step; SD's factor 8 with --sd-config, else 4
    vae = (8, 8, 8, 8) if args.sd_config else (8, 8, 8)
    modules = sized_modules(args.size, channels, args.context_dim, vae_channels=vae, vae_groups=8)
    width = modules["unet"].config.cross_attention_dim
    projector = FaceProjector(embed_dim=args.embed_dim, hidden_dim=768, n_tokens=3, context_dim=width)
    dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[args.dtype]
    face0 = Face0Pipeline(**modules, scheduler=make_scheduler("ddim", SD_SCHEDULE), projector=projector)
    face0.to(args.device)
    if dtype != torch.float32:
        face0.to(dtype=dtype)
    sd = StableDiffusionPipeline(
        **modules,
        scheduler=make_scheduler("ddim", SD_SCHEDULE),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    sd.set_progress_bar_config(disable=True)
    return face0, sd


def time_face0(pipe: Face0Pipeline, face: np.ndarray, c: float, args: argparse.Namespace) -> Timing:
    """(median seconds between step callbacks, seconds of the whole call / steps) of one Face0 request."""
    stamps: list[float] = []

    def on_step(*_: Any) -> None:
        sync(args.device)
        stamps.append(time.perf_counter())

    t0 = time.perf_counter()
    pipe(
        PROMPT,
        face,
        w=7.5,
        c=c,
        a=0.0,
        num_inference_steps=args.steps,
        output_type="latent",
        generator=torch.Generator().manual_seed(0),
        callback=on_step,
    )
    sync(args.device)
    total = time.perf_counter() - t0
    return statistics.median(np.diff(stamps)), total / args.steps


def time_sd(sd: StableDiffusionPipeline, embeds: tuple[torch.Tensor, ...], args: Args) -> Timing:
    """The same two numbers for diffusers' pipeline with precomputed text contexts (plain CFG)."""
    stamps: list[float] = []

    def on_step(pipe: Any, i: int, t: Any, kwargs: dict) -> dict:
        sync(args.device)
        stamps.append(time.perf_counter())
        return {}

    t0 = time.perf_counter()
    sd(
        prompt_embeds=embeds[0],
        negative_prompt_embeds=embeds[1],
        guidance_scale=7.5,
        output_type="latent",
        num_inference_steps=args.steps,
        generator=torch.Generator().manual_seed(0),
        callback_on_step_end=on_step,
    )
    sync(args.device)
    total = time.perf_counter() - t0
    return statistics.median(np.diff(stamps)), total / args.steps


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--size", type=int, default=64, help="image size in pixels")
    ap.add_argument("--channels", default="64,128,256", help="UNet block_out_channels (without --sd-config)")
    ap.add_argument("--context-dim", type=int, default=256, help="text width (without --sd-config)")
    ap.add_argument("--sd-config", action="store_true", help="SD 1.x's UNet config, random weights")
    ap.add_argument("--embed-dim", type=int, default=1792)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dtype", default="fp32", choices=["fp32", "fp16", "bf16"])
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    t0 = time.perf_counter()
    face0, sd = build(args)
    n_params = sum(p.numel() for p in face0.unet.parameters())
    print(
        f"UNet {n_params / 1e6:.1f}M parameters, {args.size}x{args.size} px, latents "
        f"{args.size // face0.vae_scale_factor}^2, {args.steps} DDIM steps, {args.device} {args.dtype}, "
        f"{torch.get_num_threads()} threads; built in {time.perf_counter() - t0:.1f}s"
    )
    face = np.random.default_rng(0).standard_normal(args.embed_dim).astype(np.float32)
    with torch.no_grad():
        text, empty = sd.encode_prompt(PROMPT, args.device, 1, True, negative_prompt="")
    text, empty = text.clone(), empty.clone()
    text[:, 74:] = 0
    empty[:, 74:] = 0

    # UNet evaluations per step, checked with a hook (batch rows per forward call; 1 image)
    batches: list[int] = []
    hook = face0.unet.register_forward_pre_hook(lambda m, a: batches.append(int(a[0].shape[0])))
    for c, expected in ((1.0, 2), (0.5, 3)):
        batches.clear()
        out = face0(PROMPT, face, c=c, a=0.0, num_inference_steps=2, output_type="latent")
        assert batches == [expected, expected], (c, batches)
        assert out.unet_calls_per_step == expected <= 3
        print(f"c={c}: {len(batches) // 2} UNet call a step, {expected} evaluations (branches {out.plan})")
    hook.remove()

    runs: dict[str, list[Timing]] = {"sd-cfg": [], "face0 c=1": [], "face0 c=0.5": []}
    jobs = {
        "sd-cfg": lambda: time_sd(sd, (text, empty), args),
        "face0 c=1": lambda: time_face0(face0, face, 1.0, args),
        "face0 c=0.5": lambda: time_face0(face0, face, 0.5, args),
    }
    for job in jobs.values():  # warm-up
        job()
    for _ in range(args.repeats):
        for name, job in jobs.items():
            runs[name].append(job())

    head = ("evals", "ms/step", "min", "ratio", "ratio(min)", "call ms/step")
    print("\n" + " " * 12 + " {:>5} {:>8} {:>7} {:>6} {:>10} {:>12}  target".format(*head))
    base = runs["sd-cfg"]
    ratios = {}
    for name, evals, target in (("sd-cfg", 2, ""), ("face0 c=1", 2, "<= 1.03"), ("face0 c=0.5", 3, "<= 1.6")):
        steps = [r[0] for r in runs[name]]
        # paired: each repeat against the sd-cfg run just before it, so load drifts cancel
        ratios[name] = statistics.median(r[0] / b[0] for r, b in zip(runs[name], base))
        best = min(steps) / min(r[0] for r in base)
        call = statistics.median(r[1] for r in runs[name])
        print(
            f"{name:12} {evals:>5} {statistics.median(steps) * 1e3:8.2f} {min(steps) * 1e3:7.2f} "
            f"{ratios[name]:6.3f} {best:10.3f} {call * 1e3:12.2f}  {target}"
        )
    per_eval = ratios["face0 c=0.5"] * 2 / 3
    print(f"\nc=0.5, time per UNet evaluation / plain CFG's: {per_eval:.3f} (1.0: cost linear in branches)")


if __name__ == "__main__":
    main()
