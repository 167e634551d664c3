"""The default model's architecture and its first stage: a synthetic "Stable Diffusion" base to train Face0 from.

Face0 starts from SD 1.4, a model that already draws what words describe. The synthetic world makes its own:
small configs of SD 1.x's classes (diffusers AutoencoderKL and UNet2DConditionModel, transformers CLIPTextModel
and CLIPTokenizer), so `Face0Pipeline` loads the default model with the same code as a full SD model.

- VAE: f = 4 (64 x 64 x 3 pixels <-> 16 x 16 x 4 latents), trained here on the world's portraits (L1 + a small
  KL), its scaling factor set to 1 / the latents' standard deviation as SD's is.
- Tokenizer: CLIP's byte-level BPE with one merge chain per caption word (the world's words are one token each).
- Text encoder: a 2-layer CLIP text transformer of width 128, trained jointly with the UNet in the base stage.
- UNet: channels 64-128-128, one ResNet per level, at 16 x 16 latents, cross-attention at the two lower levels,
  width-128 context (6.7M parameters).
- Noise schedule: cosine ("squaredcos_cap_v2"), v-prediction, sampled with DDIM.

`init_base(out, world)` writes an untrained SD-shaped directory (with the trained VAE): `face0 train --base` then
trains it like any SD base (see synthetic.build for the stages).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from diffusers.models.autoencoders.autoencoder_kl import AutoencoderKL
from diffusers.models.unets.unet_2d_condition import UNet2DConditionModel
from diffusers.schedulers.scheduling_ddim import DDIMScheduler
from transformers import CLIPTextModel

from face0cli.model.tiny import clip_text_encoder, tiny_tokenizer
from face0cli.synthetic.portraits import caption_words

CONTEXT_DIM = 128
RESOLUTION = 64

SCHEDULE: dict[str, Any] = {
    "num_train_timesteps": 1000,
    "beta_schedule": "squaredcos_cap_v2",
    "prediction_type": "v_prediction",
    "clip_sample": False,
    "set_alpha_to_one": False,
    "steps_offset": 1,
    "timestep_spacing": "trailing",
}


def make_vae(seed: int = 0) -> AutoencoderKL:
    torch.manual_seed(seed)
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 3,
        up_block_types=("UpDecoderBlock2D",) * 3,
        block_out_channels=(16, 32, 64),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=8,
        sample_size=RESOLUTION,
    )


def make_unet(seed: int = 0) -> UNet2DConditionModel:
    torch.manual_seed(seed)
    return UNet2DConditionModel(
        sample_size=RESOLUTION // 4,
        in_channels=4,
        out_channels=4,
        block_out_channels=(64, 128, 128),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=CONTEXT_DIM,
        attention_head_dim=8,
        norm_num_groups=32,
    )


def make_text_encoder(tokenizer: Any, seed: int = 0) -> CLIPTextModel:
    torch.manual_seed(seed)
    return clip_text_encoder(tokenizer, CONTEXT_DIM, 2 * CONTEXT_DIM, heads=4)


def train_vae(
    vae: AutoencoderKL,
    images: np.ndarray,
    *,
    steps: int,
    batch: int = 32,
    lr: float = 1e-3,
    kl: float = 1e-6,
    crop: int | None = 32,
    seed: int = 0,
    log: Callable[[str], None] = print,
) -> dict[str, float]:
    """Train the VAE on (N, 64, 64, 3) uint8 portraits (random crop x crop windows of them, None: whole images);
    set its scaling factor; return the reconstruction error on whole images.

    Returns:
        {"l1": mean absolute reconstruction error in [0, 1] units on 256 images, "scaling_factor": ...}.
    """
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    x_all = torch.from_numpy(images).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)
    opt = torch.optim.AdamW(vae.parameters(), lr=lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.05)
    vae.train()
    t0 = time.perf_counter()
    for step in range(1, steps + 1):
        x = x_all[torch.randint(0, len(x_all), (batch,), generator=g)]
        if crop:  # a random crop (the same for the batch): convolutions see every part, at a quarter of the cost
            i, j = (int(v) for v in torch.randint(0, x.shape[-1] - crop + 1, (2,), generator=g))
            x = x[..., i : i + crop, j : j + crop]
        post = vae.encode(x).latent_dist
        rec = vae.decode(post.sample()).sample
        loss = F.l1_loss(rec, x) + 0.5 * F.mse_loss(rec, x) + kl * post.kl().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if step % 100 == 0 or step == steps:
            log(f"vae step {step}/{steps} loss {float(loss.detach()):.4f} ({time.perf_counter() - t0:.0f} s)")
    vae.eval()
    with torch.no_grad():
        x = x_all[:256]
        lat = vae.encode(x).latent_dist.mean
        rec = vae.decode(lat).sample
        l1 = float((rec - x).abs().mean() / 2)
        std = float(lat.std())
    vae.register_to_config(scaling_factor=1.0 / std)
    return {"l1": l1, "scaling_factor": 1.0 / std}


def init_base(out: Path, vae: AutoencoderKL, seed: int = 0) -> Path:
    """Write an untrained SD-shaped base (random UNet and text encoder, the world's tokenizer, the trained VAE)."""
    from diffusers import StableDiffusionPipeline

    tokenizer = tiny_tokenizer(caption_words())
    pipe = StableDiffusionPipeline(
        vae=vae,
        text_encoder=make_text_encoder(tokenizer, seed + 1),
        tokenizer=tokenizer,
        unet=make_unet(seed + 2),
        scheduler=DDIMScheduler(**SCHEDULE),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(out)  # type: ignore[attr-defined]
    return out


def param_counts(model_dir: Path) -> dict[str, int]:
    """Parameters of each trained part of a model directory (from the safetensors headers)."""
    counts: dict[str, int] = {}
    for part in ("unet", "vae", "text_encoder", "projector"):
        total = 0
        for f in sorted((Path(model_dir) / part).glob("*.safetensors")):
            header_len = int.from_bytes(f.read_bytes()[:8], "little")
            header = json.loads(f.read_bytes()[8 : 8 + header_len])
            for k, v in header.items():
                if k != "__metadata__":
                    total += int(np.prod(v["shape"]))
        counts[part] = total
    return counts
