"""Benchmark face0's training step (paper §2.3) against a plain diffusers text-to-image training step.

    python benchmarks/bench_train.py [--batch 4] [--size 64] [--channels 64,128,256] [--repeats 7]
    python benchmarks/bench_train.py --sd-config --size 256 --mixed-precision fp16    # SD 1.x UNet, on a GPU

Both train identical copies of one set of random modules, in the same run, through one Accelerator:

1. reference: diffusers' examples/text_to_image/train_text_to_image.py step, written out here: VAE encode
   (x scaling_factor), noise, random timesteps, text encoder, UNet, MSE, gather of the loss for logging,
   backward, grad-norm clipping, AdamW, lr schedule, EMA of the UNet;
2. face0: `face0cli.training.train.Trainer.step`, the step `face0 train` runs: the same, plus the projector (embedding
   -> 3 tokens), the p = 0.1 face dropout, the insertion at positions 74..76, AdamW and EMA over the projector too,
   and the NaN check. Target: per-step time <= 1.10 x the reference.

Batches are made once up front (the DataLoader is outside the timing). After a warm-up of each, rounds alternate
(reference, face0, reference, ...), each timing --steps steps; the ratio is the median of the per-round ratios,
so a change in machine load cancels. Random-init weights: speed does not depend on them.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
from typing import Any

import torch
import torch.nn.functional as F
from accelerate import Accelerator
from diffusers.optimization import get_scheduler
from diffusers.schedulers.scheduling_ddpm import DDPMScheduler
from diffusers.training_utils import EMAModel

from face0cli.config import TrainConfig
from face0cli.model.pipeline import Face0Pipeline, make_scheduler
from face0cli.model.projector import FaceProjector
from face0cli.model.tiny import SD_SCHEDULE, sized_modules
from face0cli.training.train import Trainer


def build_modules(args: argparse.Namespace) -> dict[str, Any]:
    """Random modules (seed 0): UNet, VAE (factor 4, or 8 with --sd-config), CLIP text encoder, tokenizer."""
    channels = None if args.sd_config else tuple(int(c) for c in args.channels.split(","))
    vae = (32, 32, 64, 64) if args.sd_config else (32, 32, 64)
    return sized_modules(args.size, channels, args.context_dim, vae_channels=vae)


class Reference:
    """diffusers' train_text_to_image.py step (the recipe, written out): UNet only, no face."""

    def __init__(self, modules: dict[str, Any], cfg: TrainConfig, accelerator: Accelerator) -> None:
        self.accelerator, self.cfg = accelerator, cfg
        self.weight_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(
            str(accelerator.mixed_precision), torch.float32
        )
        self.vae, self.text_encoder = modules["vae"], modules["text_encoder"]
        for frozen in (self.vae, self.text_encoder):
            frozen.requires_grad_(False).eval().to(accelerator.device, dtype=self.weight_dtype)
        unet = modules["unet"].train()
        self.noise_scheduler = DDPMScheduler.from_config(SD_SCHEDULE)
        optimizer = torch.optim.AdamW(
            unet.parameters(),
            lr=cfg.lr,
            betas=(cfg.adam_beta1, cfg.adam_beta2),
            weight_decay=cfg.adam_weight_decay,
            eps=cfg.adam_epsilon,
        )
        n = accelerator.num_processes
        lr_scheduler = get_scheduler(
            cfg.lr_scheduler, optimizer, num_warmup_steps=cfg.lr_warmup_steps * n, num_training_steps=cfg.max_steps * n
        )
        self.unet, self.optimizer, self.lr_scheduler = accelerator.prepare(unet, optimizer, lr_scheduler)
        self.ema = EMAModel(self.unet.parameters(), decay=cfg.ema_decay) if cfg.use_ema else None

    def step(self, batch: dict[str, torch.Tensor]) -> float:
        acc = self.accelerator
        with acc.accumulate(self.unet):
            pixels = batch["pixel_values"].to(acc.device, self.weight_dtype)
            latents = self.vae.encode(pixels).latent_dist.sample() * self.vae.config.scaling_factor
            noise = torch.randn_like(latents)
            bsz = latents.shape[0]
            timesteps = torch.randint(0, self.noise_scheduler.config.num_train_timesteps, (bsz,), device=latents.device)
            noisy = self.noise_scheduler.add_noise(latents, noise, timesteps.long())
            context = self.text_encoder(batch["input_ids"].to(acc.device), return_dict=False)[0]
            pred = self.unet(noisy, timesteps, context, return_dict=False)[0]
            loss = F.mse_loss(pred.float(), noise.float(), reduction="mean")
            avg_loss = acc.gather(loss.repeat(bsz)).mean()
            train_loss = avg_loss.item()
            acc.backward(loss)
            if acc.sync_gradients:
                acc.clip_grad_norm_(self.unet.parameters(), self.cfg.max_grad_norm)
            self.optimizer.step()
            self.lr_scheduler.step()
            self.optimizer.zero_grad()
        if acc.sync_gradients and self.ema is not None:
            self.ema.step(self.unet.parameters())
        return train_loss


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def time_steps(step: Any, batches: list[dict[str, torch.Tensor]], device: torch.device) -> float:
    """Seconds per step over the given batches."""
    sync(device)
    t0 = time.perf_counter()
    for b in batches:
        step(b)
    sync(device)
    return (time.perf_counter() - t0) / len(batches)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--size", type=int, default=64, help="image size in pixels")
    ap.add_argument("--channels", default="64,128,256", help="UNet block_out_channels (without --sd-config)")
    ap.add_argument("--context-dim", type=int, default=256, help="text width (without --sd-config)")
    ap.add_argument("--sd-config", action="store_true", help="SD 1.x's UNet config, random weights")
    ap.add_argument("--embed-dim", type=int, default=1792)
    ap.add_argument("--steps", type=int, default=5, help="steps per timed round")
    ap.add_argument("--repeats", type=int, default=7, help="timed rounds of each")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--no-ema", action="store_true")
    ap.add_argument("--mixed-precision", default="no", choices=["no", "fp16", "bf16"])
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    t0 = time.perf_counter()
    accelerator = Accelerator(mixed_precision=args.mixed_precision)
    cfg = TrainConfig(
        batch_size=args.batch, mixed_precision=args.mixed_precision, use_ema=not args.no_ema, resolution=args.size
    )
    modules = build_modules(args)
    width = modules["unet"].config.cross_attention_dim
    projector = FaceProjector(embed_dim=args.embed_dim, hidden_dim=768, n_tokens=3, context_dim=width)
    face0_modules = copy.deepcopy(modules)  # identical starting weights, separate parameters and optimizers
    pipe = Face0Pipeline(**face0_modules, scheduler=make_scheduler("ddim", SD_SCHEDULE), projector=projector)
    face0 = Trainer(pipe, cfg, accelerator)
    ref = Reference(modules, cfg, accelerator)

    g = torch.Generator().manual_seed(0)
    tok = modules["tokenizer"]
    ids = tok(["a photo of a person with blue hair"] * args.batch, padding="max_length", max_length=77,
              truncation=True, return_tensors="pt")  # fmt: skip
    n_batches = max(args.steps, args.warmup)
    batches = [
        {
            "pixel_values": torch.rand(args.batch, 3, args.size, args.size, generator=g) * 2 - 1,
            "input_ids": ids.input_ids,
            "attention_mask": ids.attention_mask,
            "embedding": torch.randn(args.batch, args.embed_dim, generator=g),
        }
        for _ in range(n_batches)
    ]
    n_unet = sum(p.numel() for p in modules["unet"].parameters())
    n_proj = sum(p.numel() for p in projector.parameters())
    print(
        f"UNet {n_unet / 1e6:.1f}M + projector {n_proj / 1e6:.2f}M parameters, batch {args.batch} at "
        f"{args.size}x{args.size} px, {accelerator.device} mixed precision {args.mixed_precision}, EMA "
        f"{'on' if cfg.use_ema else 'off'}, {torch.get_num_threads()} threads; built in "
        f"{time.perf_counter() - t0:.1f}s"
    )

    device = accelerator.device
    time_steps(ref.step, batches[: args.warmup], device)
    time_steps(face0.step, batches[: args.warmup], device)
    ref_times, face0_times, ratios = [], [], []
    for _ in range(args.repeats):
        r = time_steps(ref.step, batches[: args.steps], device)
        f = time_steps(face0.step, batches[: args.steps], device)
        ref_times.append(r)
        face0_times.append(f)
        ratios.append(f / r)
    med_ref, med_face0 = statistics.median(ref_times), statistics.median(face0_times)
    ratio = statistics.median(ratios)
    print(f"\n{'':12} {'ms/step':>9} {'min':>9} {'samples/s':>10}")
    for name, times in (("reference", ref_times), ("face0", face0_times)):
        med = statistics.median(times)
        print(f"{name:12} {med * 1e3:9.1f} {min(times) * 1e3:9.1f} {args.batch / med:10.1f}")
    best = min(face0_times) / min(ref_times)
    verdict = "ok" if ratio <= 1.10 else "ABOVE TARGET"
    print(f"\nface0 / reference: {ratio:.3f} (median of {args.repeats} paired rounds; min/min {best:.3f})")
    print(f"target <= 1.10: {verdict}")
    print(f"(medians: reference {med_ref * 1e3:.1f} ms, face0 {med_face0 * 1e3:.1f} ms)")


if __name__ == "__main__":
    main()
