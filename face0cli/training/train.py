"""Train a face0 model on (image, caption, face-embedding) triplets with accelerate (Face0 paper §2.1, §2.3).

The paper fine-tunes Stable Diffusion 1.4's UNet and the face projector jointly; the VAE and the CLIP text
encoder stay frozen. For each example the projector maps the face embedding to three tokens that overwrite
context positions 74..76 (zeroed for 10% of the examples, the null face the guidance uses), and the UNet is
trained with the usual denoising loss. The optimiser is AdamW at lr 2e-5, with an EMA (0.9999) of the trained
weights, which is what the final model gets.

One step, read top to bottom in `Trainer.step`:

1. latents: the frozen VAE encodes the images (x scaling_factor), or the triplet file's stored latents are used;
2. noise and a random timestep per example, from the model's own noise schedule (DDPM over its betas);
3. context: the frozen text encoder encodes the captions (77 tokens);
4. face tokens: projector(embedding), zeroed per example with p = 0.1, inserted at positions 74..76;
5. the UNet predicts the noise (or v, per the schedule's prediction_type); MSE loss;
6. backward, gradient clipping, AdamW step, lr schedule, EMA update (every gradient-accumulation boundary).

`--train lora` puts LoRA adapters on the UNet's attention projections instead of training the whole UNet;
`--train projector` trains the projector alone. The UNet and the projector are one module (`Face0Denoiser`),
so DDP, FSDP and DeepSpeed see a single model. Checkpoints are accelerate states (model, optimizer, lr schedule,
EMA, RNG states) plus the step, written atomically; resuming continues the data stream where it stopped, so a
resumed run computes what an uninterrupted one would have. docs/training.md is the user's guide.
"""

from __future__ import annotations

import contextlib
import csv
import json
import math
import os
import re
import shutil
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution
from diffusers.models.unets.unet_2d_condition import UNet2DConditionModel
from diffusers.optimization import get_scheduler
from diffusers.schedulers.scheduling_ddpm import DDPMScheduler
from diffusers.training_utils import EMAModel, compute_snr
from PIL import Image

from face0cli.config import GMMConfig, TrainConfig, to_dict, to_json
from face0cli.console import warn
from face0cli.data.prep import TripletFile
from face0cli.data.readers import open_ref
from face0cli.errors import BadInput, EmbedderMismatch, Face0Error, ModelError, ParameterError
from face0cli.library.face_space import FaceGMM, lerp
from face0cli.locks import sole_job
from face0cli.model.conditioning import drop_faces, insert_face_tokens
from face0cli.model.pipeline import FACE0_JSON, Face0Pipeline, StrPath
from face0cli.model.projector import FaceProjector

CHECKPOINTS = "checkpoints"
MODEL = "model"
VALIDATION = "validation"
LOGS = "logs"
STATE_JSON = "face0_train_state.json"
"""Written into every checkpoint: the optimizer step it was taken after, and the settings it must resume with."""
LORA_TARGETS = ("to_q", "to_k", "to_v", "to_out.0")
"""UNet attention projections that get LoRA adapters with --train lora."""
LOG_COLUMNS = ("step", "loss", "lr", "samples_per_s", "seconds")

LOCK = ".train.lock"
"""Held in out/ by the main process for the whole run: a second `face0 train` into the same folder stops at once."""
_after_step: Any = None
"""Test hook: called as _after_step(step, loss) on every process after each optimizer step."""


# ------------------------------------------------------------------------------------------------ results


@dataclass
class TrainResult:
    """What a training run produced.

    Attributes:
        model_dir: the face0 model directory (out/model), EMA weights in it when EMA is on.
        steps: optimizer steps done in total (including those before a resume).
        loss: mean training loss over the last logged window (None if no step ran in this call).
        checkpoints: the checkpoints kept, oldest first.
        validation: the validation grids written by this call.
        log: the CSV log (out/logs/train.csv).
        seconds: wall time of this call.
        samples_per_s: training throughput of this call, all processes together.
        resumed_from: the checkpoint this call started from, or None.
    """

    model_dir: Path
    steps: int
    loss: float | None
    checkpoints: list[Path]
    validation: list[Path]
    log: Path
    seconds: float
    samples_per_s: float
    resumed_from: Path | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "model_dir": str(self.model_dir),
            "steps": self.steps,
            "loss": self.loss,
            "checkpoints": [str(p) for p in self.checkpoints],
            "validation": [str(p) for p in self.validation],
            "log": str(self.log),
            "seconds": round(self.seconds, 3),
            "samples_per_s": round(self.samples_per_s, 3),
            "resumed_from": None if self.resumed_from is None else str(self.resumed_from),
        }


class NonFiniteLoss(Face0Error):
    """The training loss became NaN or infinite; training stops before the bad gradients reach the weights."""


# ------------------------------------------------------------------------------------------------ data


def image_to_tensor(image: Image.Image, resolution: int, flip: bool = False) -> torch.Tensor:
    """Resize the shorter side to RESOLUTION (bilinear), center-crop a square, scale to [-1, 1] (paper §2.3).

    Returns:
        (3, resolution, resolution) float32.
    """
    w, h = image.size
    scale = resolution / min(w, h)
    nw, nh = max(resolution, round(w * scale)), max(resolution, round(h * scale))
    image = image.convert("RGB").resize((nw, nh), Image.Resampling.BILINEAR)
    left, top = (nw - resolution) // 2, (nh - resolution) // 2
    image = image.crop((left, top, left + resolution, top + resolution))
    if flip:
        image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    array = np.asarray(image, dtype=np.float32) / 127.5 - 1.0
    return torch.from_numpy(array).permute(2, 0, 1).contiguous()


class VaeLatentEncoder:
    """`face0 prep --latents MODEL`: store the frozen VAE's latent distribution so training skips the encoder.

    Each row is the (2 * latent_channels, R/8, R/8) mean and log-variance, unscaled; training draws a fresh
    sample from it every step (Trainer.encode), as the plain recipe does from the encoder's output.

    Args:
        model: an SD 1.x / face0 model directory or hub id whose vae/ is used.
        resolution: the training resolution the images are resized and center-cropped to.
    """

    def __init__(self, model: StrPath, resolution: int, device: str = "cpu") -> None:
        from diffusers import AutoencoderKL

        try:
            self.vae = AutoencoderKL.from_pretrained(str(model), subfolder="vae").to(device).eval()
        except (OSError, ValueError) as e:
            raise ModelError(f"cannot load the VAE of {model} for --latents ({str(e).splitlines()[0]}).") from e
        self.resolution = resolution
        self.device = device
        self.id = f"vae:{model}@{resolution}"

    @torch.no_grad()
    def __call__(self, images: list[Image.Image]) -> np.ndarray:
        x = torch.stack([image_to_tensor(im, self.resolution) for im in images]).to(self.device)
        return self.vae.encode(x).latent_dist.parameters.float().cpu().numpy()


class TripletDataset(torch.utils.data.Dataset):  # type: ignore[type-arg]
    """Training examples from a triplet file (paper §2.1): image (or stored latents), caption tokens, embedding.

    The HDF5 file opens lazily in each DataLoader worker (TripletFile reopens after a fork). Items are asked for
    by (row, flip) pairs, so augmentation is decided by the seeded batch stream, not by worker state.

    Args:
        triplets: the triplet file.
        tokenizer: the model's CLIP tokenizer (77 tokens).
        resolution: training image size in pixels (square).
        partners: per row, the rows of the same identity (identity_groups); an item (row, flip, u) then takes
            its embedding from partners[row][floor(u * len)], another image of that person.
        mixes: per morph row (mix_groups), the rows of its identities a and b and t: the item's embedding is
            then lerp(e_a, e_b, t), with a's image at floor(u * len_a) and b's at floor(v * len_b), v the
            fraction that u * len_a leaves.
    """

    def __init__(
        self,
        triplets: TripletFile,
        tokenizer: Any,
        resolution: int,
        partners: list[np.ndarray] | None = None,
        mixes: dict[int, tuple[np.ndarray, np.ndarray, float]] | None = None,
    ) -> None:
        self.triplets = triplets
        self.tokenizer = tokenizer
        self.resolution = resolution
        self.partners = partners
        self.mixes = mixes or {}

    def __len__(self) -> int:
        return len(self.triplets)

    def __getitem__(self, key: tuple[int, bool] | tuple[int, bool, float] | int) -> dict[str, torch.Tensor]:
        """{"pixel_values" (3, R, R) in [-1, 1] or "latents" (C, h, w), "input_ids" (77,), "attention_mask" (77,),
        "embedding" (D,)}."""
        i, flip, u = (key, False, 0.0) if isinstance(key, int) else (*key, 0.0)[:3]
        row = self.triplets[i]
        if i in self.mixes:
            ra, rb, t = self.mixes[i]
            ja = min(int(u * len(ra)), len(ra) - 1)
            jb = min(int((u * len(ra) - ja) * len(rb)), len(rb) - 1)
            row["embedding"] = lerp(self.triplets.embedding(int(ra[ja])), self.triplets.embedding(int(rb[jb])), t)
        elif self.partners is not None:
            others = self.partners[i]
            row["embedding"] = self.triplets.embedding(int(others[min(int(u * len(others)), len(others) - 1)]))
        tokens = self.tokenizer(
            row["caption"],
            max_length=self.tokenizer.model_max_length,
            padding="max_length",
            truncation=True,
            return_tensors="np",
        )
        item = {
            "input_ids": torch.from_numpy(np.asarray(tokens["input_ids"][0], dtype=np.int64)),
            "attention_mask": torch.from_numpy(np.asarray(tokens["attention_mask"][0], dtype=np.int64)),
            "embedding": torch.from_numpy(np.asarray(row["embedding"], dtype=np.float32)),
        }
        if "latents" in row:
            latents = torch.from_numpy(np.asarray(row["latents"], dtype=np.float32))
            item["latents"] = latents.flip(-1) if flip else latents
        else:
            item["pixel_values"] = image_to_tensor(open_ref(row["ref"]), self.resolution, flip)
        return item


class BatchStream:
    """Endless, seeded micro-batches of (row, flip) for one process, resumable at any micro-batch.

    The rows of all processes come from one stream: epoch after epoch, a permutation of the N rows drawn from
    (seed, epoch). Micro-batch k of process r is stream items [(k * P + r) * B, (k * P + r + 1) * B). So the
    batches depend only on (seed, N, B, P), never on worker or RNG state, and starting at micro-batch k gives
    exactly what a run that had already done k micro-batches would see next.

    Args:
        n: rows in the file.
        batch_size: B, examples per micro-batch per process.
        rank, world: this process and the number of processes P.
        seed: the stream's seed.
        start: the first micro-batch to yield.
        flip: draw a random horizontal flip per item (else never flipped).
        partner: also draw u in [0, 1) per item (items are then (row, flip, u)): which image of the same identity
            gives the embedding (TripletDataset partners).
    """

    def __init__(
        self,
        n: int,
        batch_size: int,
        rank: int,
        world: int,
        seed: int,
        start: int = 0,
        flip: bool = False,
        partner: bool = False,
    ) -> None:
        self.n, self.batch_size, self.rank, self.world = n, batch_size, rank, world
        self.seed, self.start, self.flip, self.partner = seed, start, flip, partner
        self._epochs: dict[int, tuple[list[int], list[bool], list[float]]] = {}

    def _epoch(self, e: int) -> tuple[list[int], list[bool], list[float]]:
        if e not in self._epochs:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + e)
            perm = torch.randperm(self.n, generator=g).tolist()
            flips = (torch.rand(self.n, generator=g) < 0.5).tolist() if self.flip else [False] * self.n
            us = torch.rand(self.n, generator=g, dtype=torch.float64).tolist() if self.partner else []
            self._epochs = {k: v for k, v in self._epochs.items() if k >= e - 1}
            self._epochs[e] = (perm, flips, us)
        return self._epochs[e]

    def item(self, i: int) -> tuple[int, bool] | tuple[int, bool, float]:
        """Stream item i: (row, flip), or (row, flip, u) with partner draws."""
        e, pos = divmod(i, self.n)
        perm, flips, us = self._epoch(e)
        return (perm[pos], flips[pos], us[pos]) if self.partner else (perm[pos], flips[pos])

    def batch(self, k: int) -> list[tuple[int, bool] | tuple[int, bool, float]]:
        """Micro-batch k of this process."""
        lo = (k * self.world + self.rank) * self.batch_size
        return [self.item(i) for i in range(lo, lo + self.batch_size)]

    def __iter__(self) -> Iterator[list[tuple[int, bool] | tuple[int, bool, float]]]:
        k = self.start
        while True:
            yield self.batch(k)
            k += 1


# ------------------------------------------------------------------------------------------------ model


class Face0Denoiser(torch.nn.Module):
    """The trained part of face0: projector + UNet as one module (paper §2.1), so DDP/FSDP/DeepSpeed wrap one model.

    Args:
        unet: UNet2DConditionModel.
        projector: FaceProjector, (B, D) -> (B, T, C).
        positions: the T context positions the face tokens overwrite (74, 75, 76).
    """

    def __init__(
        self,
        unet: UNet2DConditionModel,
        projector: FaceProjector,
        positions: Sequence[int],
        text_encoder: torch.nn.Module | None = None,
    ) -> None:
        super().__init__()
        self.unet = unet
        self.projector = projector
        self.positions = tuple(int(p) for p in positions)
        self.text_encoder = text_encoder  # set when it is trained too (a base model's stage): context = token ids

    def forward(
        self,
        noisy_latents: torch.Tensor,
        timesteps: torch.Tensor,
        context: torch.Tensor,
        embedding: torch.Tensor,
        face_drop: float = 0.0,
    ) -> torch.Tensor:
        """Predict the noise (or v) of noisy latents under text + face conditioning (paper §2.1, §2.3).

        Args:
            noisy_latents: (B, 4, h, w).
            timesteps: (B,) integer timesteps.
            context: (B, 77, C) text contexts from the frozen text encoder, or (B, 77) token ids when the
                text encoder is part of this module (trained).
            embedding: (B, D) face embeddings.
            face_drop: probability of zeroing an example's face tokens (0.1 in training).

        Returns:
            (B, 4, h, w) the UNet's prediction.
        """
        if self.text_encoder is not None:
            context = self.text_encoder(context, return_dict=False)[0]
        tokens = self.projector(embedding)
        if face_drop > 0:
            tokens = drop_faces(tokens, face_drop)
        dtype = self.unet.dtype  # fp32 under autocast; fp16 when DeepSpeed converted the weights
        ctx = insert_face_tokens(context.to(dtype), tokens, self.positions)
        return self.unet(noisy_latents.to(dtype), timesteps, encoder_hidden_states=ctx, return_dict=False)[0]


def lora_config(cfg: TrainConfig) -> Any:
    """The peft LoraConfig of --train lora: rank and alpha from cfg on the UNet's attention projections."""
    from peft import LoraConfig

    return LoraConfig(
        r=cfg.lora_rank,
        lora_alpha=cfg.lora_alpha,
        init_lora_weights="gaussian",
        target_modules=list(LORA_TARGETS),
    )


def load_model(base: StrPath, embedder_id: str, embed_dim: int, cfg: TrainConfig) -> Face0Pipeline:
    """The model to train from: a face0 model directory as it is, or an SD 1.x base plus a new projector (§2.3).

    A local directory with a face0.json is a face0 model; any other directory, or a hub id without a face0.json,
    is taken as an SD 1.x base (Face0Pipeline.from_sd raises ModelError when it is not SD 1.x-shaped).
    """
    if _is_face0_model(base):
        return Face0Pipeline.from_pretrained(base)
    return Face0Pipeline.from_sd(
        base,
        embedder_id,
        embed_dim,
        seed=cfg.seed,
        hidden_dim=cfg.projector_hidden_dim,
        n_layers=cfg.projector_layers,
        normalize=cfg.projector_normalize,
    )


def _is_face0_model(base: StrPath) -> bool:
    text = os.fspath(base)
    path = Path(text).expanduser()
    if path.exists() or text.startswith(("/", ".", "~")) or text.count("/") != 1:
        return (path / FACE0_JSON).is_file()
    try:  # a hub id: a face0 model has a face0.json beside its model_index.json
        from huggingface_hub import hf_hub_download

        hf_hub_download(text, FACE0_JSON)
        return True
    except Exception:  # noqa: BLE001 (offline, no such repo, or no face0.json: an SD base, or from_sd says why)
        return False


def check_embedder(pipe: Face0Pipeline, triplets: TripletFile, base: StrPath) -> None:
    """EmbedderMismatch unless the triplet file's embeddings are what the model's projector takes (paper §2.1)."""
    fc = pipe.face0_config
    other = fc.embedder_id and triplets.embedder_id and fc.embedder_id != triplets.embedder_id
    if fc.embed_dim != triplets.dim or other:
        raise EmbedderMismatch(
            f"the triplet file {triplets.path} holds {triplets.dim}-d embeddings of {triplets.embedder_id!r}, but "
            f"the model {base} takes {fc.embed_dim}-d embeddings of {fc.embedder_id!r}; prepare the data with the "
            "model's embedder, or train from an SD base."
        )


# ------------------------------------------------------------------------------------------------ one step


class Trainer:
    """The optimisation of one run (paper §2.3): frozen VAE / text encoder, the trained Face0Denoiser, AdamW, lr
    schedule, EMA; `step` does one micro-batch.

    Building it freezes what the mode does not train, adds LoRA adapters for --train lora, casts the frozen
    weights to the mixed-precision dtype and prepares model, optimizer and schedule with the accelerator.

    Args:
        pipe: the model (Face0Pipeline); its modules are trained in place.
        cfg: the training settings.
        accelerator: an accelerate.Accelerator.
    """

    def __init__(self, pipe: Face0Pipeline, cfg: TrainConfig, accelerator: Any) -> None:
        from accelerate.utils import DistributedType

        self.pipe, self.cfg, self.accelerator = pipe, cfg, accelerator
        device = accelerator.device
        sharded = accelerator.distributed_type in (DistributedType.FSDP, DistributedType.DEEPSPEED)
        self.weight_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(
            str(accelerator.mixed_precision), torch.float32
        )
        if cfg.use_ema and accelerator.distributed_type == DistributedType.FSDP:
            raise ParameterError("EMA is not supported with FSDP (sharded weights); turn EMA off or use DDP/DeepSpeed.")

        # 1. Frozen parts: VAE and text encoder (unless it is trained), in eval mode, in the mixed-precision dtype
        self.vae, self.text_encoder = pipe.vae, pipe.text_encoder
        for frozen in (self.vae, self.text_encoder):
            _place(frozen.requires_grad_(False).eval(), device, self.weight_dtype)
        trained_text = self.text_encoder if cfg.train_text_encoder else None
        if trained_text is not None:
            _place(trained_text.requires_grad_(True).train(), device, torch.float32)
        # the "no text" condition (paper §2.2): the empty prompt's tokens, for caption dropout
        empty = pipe.tokenizer(
            "", max_length=pipe.tokenizer.model_max_length, padding="max_length", return_tensors="pt"
        )
        self.empty_ids = empty.input_ids.to(device)

        # 2. What is trained: UNet + projector, LoRA + projector, or the projector alone
        unet, projector = pipe.unet, pipe.projector
        unet.requires_grad_(cfg.train == "unet")
        projector.requires_grad_(True)
        if cfg.train == "lora":
            unet.add_adapter(lora_config(cfg))
        if cfg.train != "unet" and not sharded:
            _place(unet, device, self.weight_dtype)  # frozen base weights in the compute dtype (diffusers' scripts)
        for p in unet.parameters():
            if p.requires_grad:
                p.data = p.data.float()  # trained weights stay fp32 (LoRA adapters follow the base's dtype)
        _place(projector, device, torch.float32)
        if cfg.gradient_checkpointing:
            unet.enable_gradient_checkpointing()
        model = Face0Denoiser(unet, projector, pipe.face0_config.token_positions, trained_text).to(device).train()
        self.trained_names = [n for n, p in model.named_parameters() if p.requires_grad]

        # 3. Noise schedule of the model (paper: SD's DDPM betas), AdamW, constant lr after warmup
        self.noise_scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
        own = {id(p) for p in projector.parameters()} if cfg.projector_lr > 0 else set()
        groups: list[dict[str, Any]] = [
            {"params": [p for p in model.parameters() if p.requires_grad and id(p) not in own]}
        ]
        if own:
            groups.append({"params": [p for p in projector.parameters() if p.requires_grad], "lr": cfg.projector_lr})
        optimizer = torch.optim.AdamW(
            groups,
            lr=cfg.lr,
            betas=(cfg.adam_beta1, cfg.adam_beta2),
            weight_decay=cfg.adam_weight_decay,
            eps=cfg.adam_epsilon,
        )
        n = accelerator.num_processes  # a prepared schedule steps once per process each optimizer step
        lr_scheduler = get_scheduler(
            cfg.lr_scheduler,
            optimizer,
            num_warmup_steps=cfg.lr_warmup_steps * n,
            num_training_steps=cfg.max_steps * n,
        )
        if accelerator.distributed_type == DistributedType.DEEPSPEED:
            ds = accelerator.state.deepspeed_plugin.deepspeed_config
            ds["train_micro_batch_size_per_gpu"] = cfg.batch_size  # there is no prepared DataLoader to infer it
        self.model, self.optimizer, self.lr_scheduler = accelerator.prepare(model, optimizer, lr_scheduler)
        self.params = [p for p in accelerator.unwrap_model(self.model).parameters() if p.requires_grad]

        # 4. EMA of the trained weights (paper: 0.9999), checkpointed with the accelerator state
        self.ema: EMAModel | None = None
        if cfg.use_ema:
            self.ema = EMAModel(self.params, decay=cfg.ema_decay, min_decay=0.0)
            accelerator.register_for_checkpointing(self.ema)

    @property
    def denoiser(self) -> Face0Denoiser:
        return self.accelerator.unwrap_model(self.model)  # type: ignore[no-any-return]

    @torch.no_grad()
    def encode(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Latents (x scaling_factor) and text contexts of a batch, with the frozen VAE and text encoder."""
        sf = self.vae.config.scaling_factor
        if "latents" in batch:
            stored = batch["latents"].to(self.accelerator.device, torch.float32)
            if stored.shape[1] == 2 * self.vae.config.latent_channels:  # mean and log-variance: sample
                stored = DiagonalGaussianDistribution(stored).sample()
            latents = stored * sf
        else:
            pixels = batch["pixel_values"].to(self.accelerator.device, self.weight_dtype)
            latents = self.vae.encode(pixels).latent_dist.sample().float() * sf
        ids = batch["input_ids"].to(self.accelerator.device)
        if self.cfg.text_drop > 0:  # caption dropout: the empty prompt with p = text_drop
            drop = torch.rand(ids.shape[0], device=ids.device) < self.cfg.text_drop
            ids = torch.where(drop[:, None], self.empty_ids.expand_as(ids), ids)
        if self.cfg.train_text_encoder:
            return latents, ids  # the denoiser runs the (trained) text encoder itself
        mask = None
        if getattr(self.text_encoder.config, "use_attention_mask", False):
            mask = batch["attention_mask"].to(self.accelerator.device)
        context = self.text_encoder(ids, attention_mask=mask, return_dict=False)[0]
        return latents, context

    def step(self, batch: dict[str, torch.Tensor]) -> float:
        """One micro-batch (paper §2.3): encode, noise, face tokens with dropout, UNet, MSE, backward, AdamW step
        at accumulation boundaries, EMA update.

        Returns:
            the loss, averaged over all processes.

        Raises:
            NonFiniteLoss: the loss is NaN or infinite on any process (checked before backward, on every process).
        """
        acc, cfg = self.accelerator, self.cfg
        with acc.accumulate(self.model):
            # 1. Latents and text contexts (frozen VAE and text encoder)
            latents, context = self.encode(batch)
            # 2. Noise and timesteps from the model's noise schedule
            noise = torch.randn_like(latents)
            bsz = latents.shape[0]
            num_t = self.noise_scheduler.config.num_train_timesteps
            timesteps = torch.randint(0, num_t, (bsz,), device=latents.device).long()
            noisy = self.noise_scheduler.add_noise(latents, noise, timesteps)
            # 3. Projector -> face tokens (zeroed with p = face_drop) at 74..76 -> UNet prediction
            embedding = batch["embedding"].to(acc.device, torch.float32)
            pred = self.model(noisy, timesteps, context, embedding, face_drop=cfg.face_drop)
            # 4. Denoising loss against the schedule's target
            if self.noise_scheduler.config.prediction_type == "v_prediction":
                target = self.noise_scheduler.get_velocity(latents, noise, timesteps)
            else:
                target = noise
            if cfg.snr_gamma > 0:  # min-SNR weighting (Hang et al., 2023), as diffusers' text-to-image script
                snr = compute_snr(self.noise_scheduler, timesteps)
                weight = torch.clamp(snr, max=cfg.snr_gamma)
                weight = (
                    weight / (snr + 1)
                    if self.noise_scheduler.config.prediction_type == "v_prediction"
                    else weight / snr
                )
                per = F.mse_loss(pred.float(), target.float(), reduction="none").mean(dim=(1, 2, 3))
                loss = (per * weight).mean()
            else:
                loss = F.mse_loss(pred.float(), target.float(), reduction="mean")
            losses = acc.gather(loss.detach().reshape(1))
            if not bool(torch.isfinite(losses).all()):
                raise NonFiniteLoss(f"the training loss is {losses.tolist()}")
            # 5. Backward, clip, optimizer and lr steps (only at accumulation boundaries, accelerate decides)
            acc.backward(loss)
            if acc.sync_gradients and cfg.max_grad_norm > 0:
                acc.clip_grad_norm_(self.params, cfg.max_grad_norm)
            self.optimizer.step()
            self.lr_scheduler.step()
            self.optimizer.zero_grad(set_to_none=True)
        # 6. EMA of the trained weights after each optimizer step
        if acc.sync_gradients and self.ema is not None:
            self.ema.step(self.params)
        return float(losses.mean())

    @contextlib.contextmanager
    def ema_weights(self) -> Iterator[None]:
        """Swap the EMA weights into the model for the duration (validation), then put the trained ones back."""
        if self.ema is None:
            yield
            return
        self.ema.store(self.params)
        self.ema.copy_to(self.params)
        try:
            yield
        finally:
            self.ema.restore(self.params)

    @property
    def lr(self) -> float:
        return float(self.lr_scheduler.get_last_lr()[0])


# ------------------------------------------------------------------------------------------------ train


def train(
    cfg: TrainConfig,
    *,
    triplets: StrPath,
    out: StrPath,
    base: StrPath,
    resume: str | None = None,
    accelerator: Any = None,
    show_progress: bool = True,
) -> TrainResult:
    """Train a face0 model on a triplet file (paper §2.1, §2.3) and write it to out/model.

    out/ gets checkpoints/step-NNNNNN (accelerate states, the last cfg.keep_checkpoints kept), validation/
    step-NNNNNN.png (prompts x faces grids), logs/train.csv, and at the end model/: the face0 model directory
    with the EMA weights, a GMM of the training embeddings in gmm/ and train_config.json.

    Args:
        cfg: the training settings.
        triplets: the triplet file from `face0 prep`.
        out: the output directory (created).
        base: an SD 1.x diffusers directory or hub id (a new projector is added), or a face0 model directory.
        resume: "latest" (the newest checkpoint in out/checkpoints, or a fresh start when there is none) or a
            checkpoint directory.
        accelerator: an accelerate.Accelerator to use (default: one built from cfg: mixed precision, gradient
            accumulation, TensorBoard when it is installed).
        show_progress: a progress bar on the main process.

    Returns:
        TrainResult, on every process.

    Raises:
        BadInput: a resume checkpoint that does not exist or was made with other settings; an empty or
            unfinished triplet file.
        EmbedderMismatch: the triplet file's embeddings are not what the model's projector takes.
        ModelError: the base is not an SD 1.x model or a face0 model.
        NonFiniteLoss: the loss became NaN or infinite; the last good checkpoint is kept.
        MissingPackage: --train lora without peft installed.
        FolderBusy: another `face0 train` is writing into OUT (its main process holds out/.train.lock).
    """
    t_start = time.perf_counter()
    out = Path(out)
    # 0. Check the inputs before anything heavy
    if cfg.train == "lora":
        from face0cli.model.lora import require_peft

        require_peft("--train lora")
    resume_dir = _resume_dir(out, resume)
    trip = TripletFile(triplets)
    if len(trip) == 0:
        raise BadInput(f"the triplet file {trip.path} is empty: it has no triplets to train on.")
    if accelerator is None:
        accelerator = make_accelerator(cfg, out)
    out.mkdir(parents=True, exist_ok=True)
    busy = f"{out} is being trained into by another face0 train; let it finish or stop it first."
    with sole_job(out / LOCK, busy, hold=accelerator.is_main_process):
        _check_accumulation(accelerator, cfg)
        _limit_cpu_threads(accelerator)
        from accelerate.utils import set_seed

        set_seed(cfg.seed, device_specific=True)
        pipe = load_model(base, trip.embedder_id, trip.dim, cfg)
        check_embedder(pipe, trip, base)
        resolution = _resolution(cfg, pipe, trip)
        main = accelerator.is_main_process

        # 1. The model, optimizer, schedule, EMA
        trainer = Trainer(pipe, cfg, accelerator)
        val_rows = [trip[i] for i in range(min(cfg.validation_faces, len(trip)))] if cfg.validate_every else []
        val_faces = np.stack([r["embedding"] for r in val_rows]) if val_rows else None
        val_keys = [r["key"] for r in val_rows]
        partners, excluded = None, None
        if cfg.identity_pattern:
            if cfg.reference_exclude:
                rx = re.compile(cfg.reference_exclude)
                excluded = [rx.search(c) is not None for c in trip.captions()]
            partners = identity_groups(trip.keys(), cfg.identity_pattern, excluded)
        mixes = mix_groups(trip.keys(), cfg.identity_pattern, cfg.mix_pattern, excluded) if cfg.mix_pattern else None
        trip.close()  # DataLoader workers open their own handle

        # 2. Resume: model, optimizer, schedule, EMA and RNG states, and the step (hence the data position)
        step = 0
        if resume_dir is not None:
            step = _load_checkpoint(accelerator, trainer, resume_dir, cfg)
        ckpt_root, val_root, log_path = out / CHECKPOINTS, out / VALIDATION, out / LOGS / "train.csv"
        if main:
            for d in (ckpt_root, val_root, log_path.parent):
                d.mkdir(parents=True, exist_ok=True)
            _trim_log(log_path, step)
        if accelerator.log_with:
            accelerator.init_trackers("face0", config=_tracker_config(cfg))

        # 3. Data: a seeded stream of micro-batches, continued at the resumed position
        accum = cfg.gradient_accumulation_steps
        stream = BatchStream(
            len(trip),
            cfg.batch_size,
            accelerator.process_index,
            accelerator.num_processes,
            cfg.seed,
            start=step * accum,
            flip=cfg.random_flip,
            partner=partners is not None,
        )
        loader = torch.utils.data.DataLoader(
            TripletDataset(trip, pipe.tokenizer, resolution, partners, mixes),
            batch_sampler=stream,
            num_workers=cfg.num_workers,
            pin_memory=accelerator.device.type == "cuda",
            generator=torch.Generator().manual_seed(cfg.seed),  # the workers' seeds do not draw from the global RNG
        )

        # 4. The loop: optimizer steps until max_steps, logging, validation, checkpoints
        samples_per_step = cfg.batch_size * accum * accelerator.num_processes
        validations: list[Path] = []
        window: list[float] = []
        last_loss: float | None = None
        done_here, t_loop, t_window = 0, time.perf_counter(), time.perf_counter()
        bar = _progress(show_progress and main, cfg.max_steps, step)
        batches = iter(loader)
        try:
            while step < cfg.max_steps:
                micro_losses = []
                for _ in range(accum):
                    try:
                        micro_losses.append(trainer.step(next(batches)))
                    except NonFiniteLoss as e:
                        raise NonFiniteLoss(_nan_message(e, step + 1, ckpt_root)) from None
                step += 1
                done_here += 1
                window.append(sum(micro_losses) / len(micro_losses))
                if _after_step is not None:
                    _after_step(step, window[-1])
                if step % cfg.log_every == 0 or step == cfg.max_steps:
                    now = time.perf_counter()
                    rate = len(window) * samples_per_step / max(now - t_window, 1e-9)
                    last_loss = sum(window) / len(window)
                    row = {"step": step, "loss": last_loss, "lr": trainer.lr, "samples_per_s": rate}
                    if main:
                        _append_log(log_path, {**row, "seconds": now - t_start})
                        if bar is not None:
                            bar.update(bar.task_ids[0], completed=step, rate=_rate_text(row))
                    if accelerator.log_with:
                        accelerator.log({k: v for k, v in row.items() if k != "step"}, step=step)
                    window, t_window = [], time.perf_counter()
                elif bar is not None:
                    bar.update(bar.task_ids[0], completed=step)
                if cfg.validate_every and step % cfg.validate_every == 0 and val_faces is not None:
                    png = _validate(trainer, cfg, val_faces, val_keys, resolution, val_root, step)
                    if png is not None:
                        validations.append(png)
                if cfg.checkpoint_every and step % cfg.checkpoint_every == 0:
                    _save_checkpoint(accelerator, cfg, ckpt_root, step)
        finally:
            if bar is not None:
                bar.stop()
            del batches
        seconds_loop = time.perf_counter() - t_loop

        # 5. The model directory: EMA weights, GMM of the training embeddings, the settings
        model_dir = _export(accelerator, trainer, cfg, base, trip, out, step, validations)
        accelerator.end_training()
        return TrainResult(
            model_dir=model_dir,
            steps=step,
            loss=last_loss,
            checkpoints=list_checkpoints(out),
            validation=validations,
            log=log_path,
            seconds=time.perf_counter() - t_start,
            samples_per_s=done_here * samples_per_step / max(seconds_loop, 1e-9),
            resumed_from=resume_dir,
        )


def make_accelerator(cfg: TrainConfig, out: Path) -> Any:
    """The default Accelerator: cfg's accumulation, TensorBoard logs in out/logs when the tensorboard package is
    installed. Mixed precision fp16 / bf16 in cfg wins over the launcher's config; "no" leaves the launcher's (an
    accelerate config's mixed_precision, else none). A multi-process launch without CUDA runs on CPU (gloo)."""
    from accelerate import Accelerator
    from accelerate.utils import ProjectConfiguration, is_tensorboard_available

    cpu = not torch.cuda.is_available() and int(os.environ.get("WORLD_SIZE", "1")) > 1
    return Accelerator(
        gradient_accumulation_steps=cfg.gradient_accumulation_steps,
        mixed_precision=None if cfg.mixed_precision == "no" else cfg.mixed_precision,  # "no": the launcher's choice
        log_with=["tensorboard"] if is_tensorboard_available() else None,
        project_config=ProjectConfiguration(project_dir=str(out), logging_dir=str(out / LOGS)),
        cpu=cpu,
    )


# ------------------------------------------------------------------------------------------------ checkpoints


def checkpoint_name(step: int) -> str:
    return f"step-{step:06d}"


def list_checkpoints(out: StrPath) -> list[Path]:
    """The complete checkpoints in out/checkpoints, oldest first (temporary directories are not listed)."""
    root = Path(out) / CHECKPOINTS
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and p.name.startswith("step-") and (p / STATE_JSON).is_file()]
    return sorted(found, key=lambda p: int(p.name.split("-", 1)[1]))


def _resume_dir(out: Path, resume: str | None) -> Path | None:
    if resume is None:
        if list_checkpoints(out):
            raise BadInput(
                f"{out} holds checkpoints of an earlier run; resume it (--resume latest) or train into another "
                "directory."
            )
        return None
    if resume == "latest":
        found = list_checkpoints(out)
        return found[-1] if found else None  # nothing to resume yet: a fresh start
    path = Path(resume).expanduser()
    if not path.is_dir():
        raise BadInput(f"the checkpoint {path} to resume from does not exist.")
    if not (path / STATE_JSON).is_file():
        raise BadInput(f"{path} is not a face0 training checkpoint (it has no {STATE_JSON}).")
    return path


def _save_checkpoint(accelerator: Any, cfg: TrainConfig, root: Path, step: int) -> Path:
    """accelerator.save_state into a temporary directory, renamed to step-NNNNNN when complete; keep the newest K."""
    final = root / checkpoint_name(step)
    tmp = root / f".tmp-{checkpoint_name(step)}"
    if accelerator.is_main_process and tmp.exists():
        shutil.rmtree(tmp)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        state = {"step": step, "processes": accelerator.num_processes, "config": to_dict(cfg)}
        (tmp / STATE_JSON).write_text(json.dumps(state, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        for old in list_checkpoints(root.parent)[: -cfg.keep_checkpoints]:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


_MUST_MATCH = ("train", "lora_rank", "lora_alpha", "use_ema", "projector_hidden_dim", "projector_layers")


def _load_checkpoint(accelerator: Any, trainer: Trainer, path: Path, cfg: TrainConfig) -> int:
    state = json.loads((path / STATE_JSON).read_text(encoding="utf-8"))
    saved = state.get("config", {})
    changed = [k for k in _MUST_MATCH if k in saved and saved[k] != getattr(cfg, k)]
    if changed:
        detail = ", ".join(f"{k} {saved[k]!r} there, {getattr(cfg, k)!r} now" for k in changed)
        raise BadInput(f"the checkpoint {path} was made with other settings ({detail}); resume with the same ones.")
    try:
        accelerator.load_state(str(path))
    except (OSError, RuntimeError, ValueError, KeyError) as e:
        raise BadInput(f"cannot resume from {path}: {str(e).strip().splitlines()[0] if str(e).strip() else e}") from e
    if trainer.ema is not None:
        trainer.ema.to(device=accelerator.device)  # accelerate loads custom states onto the CPU
    return int(state["step"])


def _nan_message(e: Exception, step: int, root: Path) -> str:
    kept = list_checkpoints(root.parent)
    where = (
        f"the last good checkpoint is {kept[-1]} (resume with --resume latest)" if kept else "no checkpoint was saved"
    )
    return (
        f"training stopped at step {step}: {e} (not finite). {where[0].upper()}{where[1:]}; check the data for NaN "
        "embeddings or lower the learning rate."
    )


# ------------------------------------------------------------------------------------------------ validation


@torch.no_grad()
def _validate(
    trainer: Trainer,
    cfg: TrainConfig,
    faces: np.ndarray,
    keys: Sequence[str],
    resolution: int,
    root: Path,
    step: int,
) -> Path | None:
    """A prompts x faces grid (plus a no-face column) at a fixed seed, with the EMA weights (main process only)."""
    from accelerate.utils import DistributedType

    acc = trainer.accelerator
    path = None
    if acc.is_main_process and acc.distributed_type != DistributedType.FSDP:
        from face0cli.generation.grids import make_grid

        den, pipe = trainer.denoiser, trainer.pipe
        val = Face0Pipeline(
            vae=trainer.vae,
            text_encoder=trainer.text_encoder,
            tokenizer=pipe.tokenizer,
            unet=den.unet,
            scheduler=pipe.scheduler,
            projector=den.projector,
        )
        val.face0_config = pipe.face0_config
        prompts = list(cfg.validation_prompts) or [""]
        columns: list[list[Image.Image]] = []
        den.eval()
        try:
            with trainer.ema_weights(), acc.autocast():
                for face in [*faces, None]:
                    gen = torch.Generator(device=acc.device).manual_seed(cfg.seed)
                    result = val(
                        prompts,
                        face,
                        w=cfg.validation_w,
                        num_inference_steps=cfg.validation_steps,
                        height=resolution,
                        width=resolution,
                        generator=gen,
                    )
                    columns.append(list(result.images))  # type: ignore[arg-type]
        finally:
            den.train()
        images = [columns[j][i] for i in range(len(prompts)) for j in range(len(columns))]
        labels = [f"face {j}: {k}"[:24] for j, k in enumerate(keys)] + ["no face"]
        grid = make_grid(
            images, len(prompts), len(columns), row_labels=prompts, col_labels=labels, title=f"step {step}"
        )
        path = root / f"{checkpoint_name(step)}.png"
        tmp = path.with_name(path.name + ".tmp")
        grid.save(tmp, format="PNG")
        os.replace(tmp, path)
    acc.wait_for_everyone()
    return path


# ------------------------------------------------------------------------------------------------ export


def _export(
    accelerator: Any,
    trainer: Trainer,
    cfg: TrainConfig,
    base: StrPath,
    trip: TripletFile,
    out: Path,
    step: int,
    validations: list[Path] | None = None,
) -> Path:
    """Write out/model: the starting model with the trained (EMA) weights copied in, LoRA merged, a GMM, the config,
    and a model card (README.md, with the last validation grid when there is one).

    The frozen parts are reloaded from the base in fp32 rather than taken from training (where they may have been
    cast to fp16), so only the trained weights change.
    """
    model_dir = out / MODEL
    accelerator.wait_for_everyone()
    if trainer.ema is not None:
        trainer.ema.copy_to(trainer.params)
    state = accelerator.get_state_dict(trainer.model)  # every process: gathers sharded weights
    if accelerator.is_main_process:
        trained = {k: state[k].detach().to("cpu", torch.float32) for k in trainer.trained_names}
        fresh = load_model(base, trip.embedder_id, trip.dim, cfg)
        for part in (fresh.unet, fresh.vae, fresh.text_encoder, fresh.projector):
            _place(part, torch.device("cpu"), torch.float32)
        if cfg.train == "lora":
            fresh.unet.add_adapter(lora_config(cfg))
        text = fresh.text_encoder if cfg.train_text_encoder else None
        holder = Face0Denoiser(fresh.unet, fresh.projector, fresh.face0_config.token_positions, text)
        missing = set(trained) - set(holder.state_dict())
        if missing:
            raise Face0Error(f"internal: trained weights without a place in the model: {sorted(missing)[:3]}")
        holder.load_state_dict(trained, strict=False)
        if cfg.train == "lora":
            fresh.unet.fuse_lora()
            fresh.unet.unload_lora()
        fresh.face0_config = trainer.pipe.face0_config
        fresh.gmm = _fit_gmm(trip, cfg)
        tmp = out / f".tmp-{MODEL}"
        if tmp.exists():
            shutil.rmtree(tmp)
        fresh.save_pretrained(tmp)
        (tmp / "train_config.json").write_text(to_json(cfg) + "\n", encoding="utf-8")
        provenance = {
            "base": os.fspath(base),
            "triplets": str(trip.path),
            "embedder_id": trip.embedder_id,
            "steps": step,
            "processes": accelerator.num_processes,
            "effective_batch": cfg.batch_size * cfg.gradient_accumulation_steps * accelerator.num_processes,
            "ema": cfg.use_ema,
        }
        (tmp / "training.json").write_text(json.dumps(provenance, indent=2) + "\n", encoding="utf-8")
        from face0cli.training.card import card_info_from_export, write_model_card

        write_model_card(tmp, card_info_from_export(tmp, validation_image=validations[-1] if validations else None))
        old = out / f".old-{MODEL}"
        if model_dir.exists():
            shutil.rmtree(old, ignore_errors=True)
            os.replace(model_dir, old)
        os.replace(tmp, model_dir)
        shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return model_dir


def _fit_gmm(trip: TripletFile, cfg: TrainConfig) -> FaceGMM | None:
    """The GMM of the training embeddings (paper §3.1), over at most cfg.gmm_max_samples of them.

    None (with a warning) when there are too few embeddings to fit one: the model then has no random faces.
    """
    if len(trip) < 2:
        warn(f"{len(trip)} training embedding(s) are too few to fit a GMM of faces; the model gets no gmm/.")
        trip.close()
        return None
    if len(trip) <= cfg.gmm_max_samples:
        x = trip.embeddings()
    else:
        rows = np.sort(np.random.default_rng(cfg.seed).choice(len(trip), cfg.gmm_max_samples, replace=False))
        x = np.stack([trip[int(i)]["embedding"] for i in rows])
    trip.close()
    gmm_cfg = GMMConfig(max_components=cfg.gmm_max_components, covariance_type=cfg.gmm_covariance, seed=cfg.seed)
    return FaceGMM.fit(x, gmm_cfg, embedder_id=trip.embedder_id)


# ------------------------------------------------------------------------------------------------ helpers


def identity_groups(keys: list[str], pattern: str, excluded: list[bool] | None = None) -> list[np.ndarray]:
    """Per row, the other rows of its identity (the regex's first group of the key, else its whole match).

    Rows flagged in `excluded` are never drawn as another row's partner (they still have partners). A row whose
    identity has no other eligible image keeps itself. BadInput when the pattern matches no key, when no
    identity has two images (then there is nothing to draw from), or when `excluded` leaves no partner at all.
    """
    names = _identity_names(keys, pattern)
    if all(n is None for n in names):
        raise BadInput(f"--identity-pattern {pattern!r} matches none of the triplet keys (e.g. {keys[0]!r}).")
    rows: dict[str, list[int]] = {}
    for i, n in enumerate(names):
        if n is not None:
            rows.setdefault(n, []).append(i)
    if all(len(v) < 2 for v in rows.values()):
        raise BadInput(f"--identity-pattern {pattern!r} gives no identity with two images: nothing to pair.")
    ok = [True] * len(keys) if excluded is None else [not e for e in excluded]
    out = []
    for i, n in enumerate(names):
        group = rows[n] if n is not None else [i]
        others = [j for j in group if j != i and ok[j]] or [i]
        out.append(np.asarray(others, dtype=np.int64))
    if excluded is not None and all(len(o) == 1 and o[0] == i for i, o in enumerate(out)):
        raise BadInput("--reference-exclude leaves no image to condition on: it matches every caption.")
    return out


def _identity_names(keys: list[str], pattern: str) -> list[str | None]:
    rx = re.compile(pattern)
    names: list[str | None] = []
    for k in keys:
        m = rx.search(k)
        names.append(None if m is None else (m.group(1) if rx.groups else m.group(0)))
    return names


def mix_groups(
    keys: list[str], identity_pattern: str, mix_pattern: str, excluded: list[bool] | None = None
) -> dict[int, tuple[np.ndarray, np.ndarray, float]]:
    """Per row whose key matches mix_pattern (a morph): the rows of its identities a and b (named as
    identity_pattern names them; never morph rows, never rows flagged in `excluded`) and t (the group t, in
    percent). BadInput when no key matches, when t is not a number, or when a or b has no image.
    """
    mix = re.compile(mix_pattern)
    rows: dict[str, list[int]] = {}
    for i, n in enumerate(_identity_names(keys, identity_pattern)):
        if n is not None and not mix.search(keys[i]) and not (excluded and excluded[i]):
            rows.setdefault(n, []).append(i)
    out: dict[int, tuple[np.ndarray, np.ndarray, float]] = {}
    for i, k in enumerate(keys):
        m = mix.search(k)
        if m is None:
            continue
        try:
            t = float(m.group("t")) / 100
        except ValueError:
            raise BadInput(f"--mix-pattern: the t of key {k!r} is {m.group('t')!r}, not a number (percent).") from None
        for name in (m.group("a"), m.group("b")):
            if name not in rows:
                raise BadInput(f"--mix-pattern: key {k!r} mixes identity {name!r}, which has no image to condition on.")
        out[i] = (np.asarray(rows[m.group("a")], dtype=np.int64), np.asarray(rows[m.group("b")], dtype=np.int64), t)
    if not out:
        raise BadInput(f"--mix-pattern {mix_pattern!r} matches none of the triplet keys (e.g. {keys[0]!r}).")
    return out


def _resolution(cfg: TrainConfig, pipe: Face0Pipeline, trip: TripletFile) -> int:
    """cfg.resolution, checked against the VAE's downsampling and the stored latents' size (if any)."""
    factor = pipe.vae_scale_factor
    if cfg.resolution % factor:
        raise ParameterError(f"resolution must be a multiple of {factor} for this VAE, got {cfg.resolution}.")
    if trip.has_latents:
        shape = tuple(trip[0]["latents"].shape)
        channels = pipe.vae.config.latent_channels
        if len(shape) != 3 or shape[0] not in (channels, 2 * channels):
            raise BadInput(
                f"the latents in {trip.path} have shape {shape}; this VAE needs ({channels}, h, w) latents "
                f"(or {2 * channels} channels: mean and log-variance)."
            )
        if shape[1] * factor != cfg.resolution or shape[2] * factor != cfg.resolution:
            raise ParameterError(
                f"the latents in {trip.path} are for {shape[2] * factor}x{shape[1] * factor} images; "
                f"train at that resolution (got {cfg.resolution})."
            )
    return cfg.resolution


def _check_accumulation(accelerator: Any, cfg: TrainConfig) -> None:
    """cfg's gradient accumulation is what the loop counts; make the accelerator (or DeepSpeed's config) agree."""
    from accelerate.utils import DistributedType

    if accelerator.distributed_type == DistributedType.DEEPSPEED:
        ds = accelerator.state.deepspeed_plugin.deepspeed_config.get("gradient_accumulation_steps")
        if isinstance(ds, int) and ds != cfg.gradient_accumulation_steps:
            raise ParameterError(
                f"the DeepSpeed config accumulates gradients over {ds} steps, face0 was asked for "
                f"{cfg.gradient_accumulation_steps}; make them equal."
            )
    accelerator.gradient_accumulation_steps = cfg.gradient_accumulation_steps


def _place(module: torch.nn.Module, device: torch.device, dtype: torch.dtype) -> None:
    """Move a module to DEVICE, casting it to DTYPE only if it is not in it already (diffusers warns on casts)."""
    current = next(module.parameters()).dtype
    module.to(device) if current == dtype else module.to(device, dtype=dtype)


def _limit_cpu_threads(accelerator: Any) -> None:
    """Several processes on one CPU: share the cores instead of each taking all (unless OMP_NUM_THREADS is set)."""
    if accelerator.device.type == "cpu" and accelerator.num_processes > 1 and "OMP_NUM_THREADS" not in os.environ:
        local = int(os.environ.get("LOCAL_WORLD_SIZE", accelerator.num_processes))
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // max(local, 1)))


def _tracker_config(cfg: TrainConfig) -> dict[str, Any]:
    return {k: (v if isinstance(v, (int, float, str, bool)) else json.dumps(v)) for k, v in to_dict(cfg).items()}


def _trim_log(path: Path, step: int) -> None:
    """Drop log rows after STEP (left by a run that went on past the checkpoint now resumed from)."""
    if not path.is_file():
        return
    with open(path, newline="", encoding="utf-8") as f:
        rows = [r for r in csv.DictReader(f) if r.get("step", "").isdigit() and int(r["step"]) <= step]
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=LOG_COLUMNS)
        writer.writeheader()
        writer.writerows({k: r.get(k, "") for k in LOG_COLUMNS} for r in rows)


def _append_log(path: Path, row: dict[str, float]) -> None:
    new = not path.is_file()
    with open(path, "a", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=LOG_COLUMNS)
        if new:
            writer.writeheader()
        writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})


def _rate_text(row: dict[str, float]) -> str:
    loss = row["loss"]
    loss_text = f"{loss:.4f}" if math.isfinite(loss) else str(loss)
    return f"loss {loss_text}  lr {row['lr']:.2e}  {row['samples_per_s']:.1f} samples/s"


def _progress(show: bool, total: int, completed: int) -> Any:
    if not show:
        return None
    from face0cli.console import progress

    bar = progress(rate_unit="samples/s")
    bar.start()
    bar.add_task("train", total=total, completed=completed, rate="")
    return bar


__all__ = [
    "BatchStream",
    "Face0Denoiser",
    "NonFiniteLoss",
    "TrainResult",
    "Trainer",
    "TripletDataset",
    "check_embedder",
    "image_to_tensor",
    "list_checkpoints",
    "load_model",
    "make_accelerator",
    "train",
]
