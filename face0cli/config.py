"""Frozen settings per stage, with the paper's defaults (Face0, Valevski et al. 2023). Saved beside outputs."""

from __future__ import annotations

import dataclasses
import json
import math
import numbers
import re
from dataclasses import dataclass
from enum import Enum
from typing import Any

from face0cli.errors import ParameterError


def to_dict(cfg: Any) -> dict[str, Any]:
    """A config as a JSON-ready dict."""
    return dataclasses.asdict(cfg)


def to_json(cfg: Any) -> str:
    return json.dumps(to_dict(cfg), sort_keys=True)


def check_finite(name: str, value: float) -> None:
    if not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ParameterError(f"{name} must be a finite number, got {value!r}.")


class Scheduler(str, Enum):
    """Samplers by name (face0cli.model.pipeline.SCHEDULERS builds them); the paper samples with DDIM."""

    ddim = "ddim"
    dpmpp = "dpm++"
    euler = "euler"
    euler_a = "euler-a"
    pndm = "pndm"


SCHEDULER_NAMES: tuple[str, ...] = tuple(s.value for s in Scheduler)


@dataclass(frozen=True)
class CropConfig:
    """Face detection and crop (paper §2.3): MTCNN, largest face, margins in pixels, square resize with padding."""

    min_face: int = 20
    margin_left: int = 10
    margin_right: int = 10
    margin_top: int = 33
    margin_bottom: int = 15
    size: int = 160
    max_pixels: int = 64_000_000  # images with more pixels are refused before decoding (decompression bombs)


@dataclass(frozen=True)
class SampleConfig:
    """Sampling (paper §2.2, §3.4): DDIM, w = 7.5, c = 1, a = 0 unless a style asks otherwise.

    The one place that holds the sampler's defaults and checks them; generate's requests, eval's settings and
    the CLI's options take theirs from here. height / width None: the model's own size.
    """

    w: float = 7.5
    c: float = 1.0
    a: float = 0.0
    variety: float = 0.0
    steps: int = 50
    scheduler: str = Scheduler.ddim.value
    height: int | None = None
    width: int | None = None

    def __post_init__(self) -> None:
        for name in ("w", "c", "a", "variety"):
            if isinstance(getattr(self, name), bool):
                raise ParameterError(f"{name} must be a finite number, got {getattr(self, name)!r}.")
            check_finite(name, getattr(self, name))
        if self.variety < 0:
            raise ParameterError(f"variety must be >= 0, got {self.variety}.")
        if not isinstance(self.scheduler, str) or self.scheduler not in SCHEDULER_NAMES:
            raise ParameterError(f"unknown scheduler {self.scheduler!r}; choose one of {', '.join(SCHEDULER_NAMES)}.")
        if not _whole(self.steps) or self.steps < 1:
            raise ParameterError(f"steps must be a whole number >= 1, got {self.steps!r}.")
        for name in ("height", "width"):
            v = getattr(self, name)
            if v is not None and (not _whole(v) or v < 8 or v % 8):
                raise ParameterError(f"the image {name} must be a positive multiple of 8, got {v!r}.")


def _whole(value: Any) -> bool:
    """An int, or a float with no fraction (a YAML or JSON 50.0), but not a bool."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return False
    return math.isfinite(value) and float(value).is_integer()


SAMPLE_DEFAULTS = SampleConfig()

DEBIAS_C = 0.5
DEBIAS_A = 1.0
"""`face0 debias`'s guidance (paper §2.2's c and a): half the conditional guidance from the face-only branch (no
text), half from text and face, so the prompt's words steer the scene but pull the random face less towards what
they were trained beside. Measured in the synthetic world with the hair bias planted (README, Debias; 200 images,
the scorecard's faces and seeds): grey hair on "doctor" images 0.365 at the paper's plain sampling (c = 1, a = 0),
0.29 at c = 0.7, 0.25 at c = 0.5, 0.215 at c = 0.3 (base rate 0.19), shirt and background 1.0 throughout; on the
shipped model c = 0.3 let the background slip to 0.92 on one prompt, c = 0.5 kept it at 1.0. A pencil-sketch prompt
stays a sketch. It costs three UNet branches a step instead of two; `--c 1 --a 0` samples as the paper does."""


COVARIANCE_TYPES = ("full", "tied", "diag", "spherical")


@dataclass(frozen=True)
class GMMConfig:
    """Gaussian mixture of face embeddings (paper §3.1): components chosen by BIC within a range."""

    min_components: int = 1
    max_components: int = 8
    covariance_type: str = "diag"
    seed: int = 0
    max_iter: int = 200


@dataclass(frozen=True)
class PrepConfig:
    """Turning image-caption pairs into training triplets (paper §2.1, §2.3): the largest face only, dropped
    under min_face px; written and committed chunk_size samples at a time (the resume and shard unit)."""

    min_face: int = 20
    chunk_size: int = 64

    def __post_init__(self) -> None:
        if int(self.min_face) != self.min_face or self.min_face < 0:
            raise ParameterError(f"min_face must be a whole number >= 0, got {self.min_face}.")
        if int(self.chunk_size) != self.chunk_size or self.chunk_size < 1:
            raise ParameterError(f"chunk_size must be a whole number >= 1, got {self.chunk_size}.")


class TrainMode(str, Enum):
    """What `face0 train` updates (paper §2.3 trains the UNet and the projector jointly)."""

    unet = "unet"  # the whole UNet + the projector (the paper)
    lora = "lora"  # LoRA adapters on the UNet's attention projections + the projector
    projector = "projector"  # the projector only; the UNet stays as it is


TRAIN_MODES: tuple[str, ...] = tuple(m.value for m in TrainMode)
MIXED_PRECISION: tuple[str, ...] = ("no", "fp16", "bf16")
LR_SCHEDULERS: tuple[str, ...] = (
    "constant_with_warmup",
    "constant",
    "linear",
    "cosine",
    "cosine_with_restarts",
    "polynomial",
)


@dataclass(frozen=True)
class TrainConfig:
    """Training a face0 model (paper §2.3): UNet + projector trained jointly on (image, caption, face embedding)
    triplets, VAE and text encoder frozen, the projected face zeroed with p = 0.1, AdamW at lr 2e-5, EMA 0.9999.

    The paper's batch of 256 is batch_size x gradient_accumulation_steps x processes. Steps are optimizer steps;
    checkpoint_every / validate_every = 0 turn checkpoints / validation grids off.

    Beyond the paper, for training a base model from scratch (the synthetic world's first stage) and for the
    face path's scale: text_drop replaces the caption by the empty prompt with that probability (the "no text"
    branch of the guidance); train_text_encoder trains the text encoder jointly with the UNet; snr_gamma > 0
    weights the loss by min-SNR (Hang et al., 2023); projector_normalize builds a FaceProjector with unit-variance
    input and normalised tokens; projector_lr > 0 gives the projector its own learning rate.

    identity_pattern (a regex over the triplet keys; its first group, else the whole match, names the identity)
    conditions each example on the embedding of another image of the same identity, drawn by the seeded batch
    stream: the model then learns the person rather than the picture, and what the caption asks for ("with blue
    hair") wins over what one photo shows. reference_exclude (a regex over the captions) keeps the images it
    matches from ever being that conditioning image (they still train as targets): a photo with dyed hair or a
    hat is a poor reference of what the person looks like. mix_pattern (a regex over the keys with the named
    groups a, b and t) marks images of a face between two identities (a morph): such an image is conditioned on
    (1 - t/100) * e_a + t/100 * e_b, the embeddings of an image of identity a and one of b (names as
    identity_pattern gives them), as `face0 mix --t` mixes two faces (paper §3.3), so the model learns what a mix
    of embeddings should look like. gmm_covariance / gmm_max_components shape the GMM of
    random faces.
    """

    train: str = "unet"
    max_steps: int = 10_000
    batch_size: int = 16
    gradient_accumulation_steps: int = 1
    lr: float = 2e-5
    lr_scheduler: str = "constant_with_warmup"
    lr_warmup_steps: int = 500
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_weight_decay: float = 1e-2
    adam_epsilon: float = 1e-8
    max_grad_norm: float = 1.0
    face_drop: float = 0.1
    resolution: int = 512
    random_flip: bool = False
    mixed_precision: str = "no"
    gradient_checkpointing: bool = False
    seed: int = 0
    use_ema: bool = True
    ema_decay: float = 0.9999
    num_workers: int = 4
    log_every: int = 10
    checkpoint_every: int = 500
    keep_checkpoints: int = 3
    validate_every: int = 500
    validation_prompts: tuple[str, ...] = ("a photo of a person", "a painting of a person")
    validation_faces: int = 4
    validation_steps: int = 25
    validation_w: float = 7.5
    lora_rank: int = 16
    lora_alpha: int = 16
    projector_hidden_dim: int = 768
    projector_layers: int = 4
    projector_normalize: bool = False
    projector_lr: float = 0.0
    text_drop: float = 0.0
    train_text_encoder: bool = False
    snr_gamma: float = 0.0
    gmm_max_samples: int = 50_000
    gmm_covariance: str = "diag"
    gmm_max_components: int = 8
    identity_pattern: str = ""
    reference_exclude: str = ""
    mix_pattern: str = ""

    def __post_init__(self) -> None:
        if self.train not in TRAIN_MODES:
            raise ParameterError(f"train must be one of {', '.join(TRAIN_MODES)}, got {self.train!r}.")
        if self.mixed_precision not in MIXED_PRECISION:
            raise ParameterError(
                f"mixed_precision must be one of {', '.join(MIXED_PRECISION)}, got {self.mixed_precision!r}."
            )
        if self.lr_scheduler not in LR_SCHEDULERS:
            raise ParameterError(f"lr_scheduler must be one of {', '.join(LR_SCHEDULERS)}, got {self.lr_scheduler!r}.")
        at_least = {
            "max_steps": 1,
            "batch_size": 1,
            "gradient_accumulation_steps": 1,
            "lr_warmup_steps": 0,
            "num_workers": 0,
            "log_every": 1,
            "checkpoint_every": 0,
            "keep_checkpoints": 1,
            "validate_every": 0,
            "validation_faces": 1,
            "validation_steps": 1,
            "lora_rank": 1,
            "lora_alpha": 1,
            "projector_hidden_dim": 1,
            "projector_layers": 1,
            "gmm_max_samples": 1,
            "gmm_max_components": 1,
        }
        for name, low in at_least.items():
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < low:
                raise ParameterError(f"{name} must be a whole number >= {low}, got {v!r}.")
        for name in ("lr", "adam_beta1", "adam_beta2", "adam_weight_decay", "adam_epsilon", "max_grad_norm"):
            check_finite(name, getattr(self, name))
        for name in ("face_drop", "ema_decay", "validation_w", "projector_lr", "text_drop", "snr_gamma"):
            check_finite(name, getattr(self, name))
        if self.lr <= 0:
            raise ParameterError(f"lr must be > 0, got {self.lr}.")
        if not 0.0 <= self.face_drop <= 1.0:
            raise ParameterError(f"face_drop must be in [0, 1], got {self.face_drop}.")
        if not 0.0 <= self.text_drop <= 1.0:
            raise ParameterError(f"text_drop must be in [0, 1], got {self.text_drop}.")
        if self.gmm_covariance not in COVARIANCE_TYPES:
            raise ParameterError(
                f"gmm_covariance must be one of {', '.join(COVARIANCE_TYPES)}, got {self.gmm_covariance!r}."
            )
        for name in ("identity_pattern", "reference_exclude", "mix_pattern"):
            pattern = getattr(self, name)
            try:
                re.compile(pattern)
            except re.error as e:
                raise ParameterError(f"{name} {pattern!r} is not a regular expression ({e}).") from None
        if self.reference_exclude and not self.identity_pattern:
            raise ParameterError("reference_exclude needs identity_pattern (it filters the conditioning images).")
        if self.mix_pattern:
            if not self.identity_pattern:
                raise ParameterError("mix_pattern needs identity_pattern (its a and b name identities).")
            if not {"a", "b", "t"} <= set(re.compile(self.mix_pattern).groupindex):
                raise ParameterError(
                    f"mix_pattern {self.mix_pattern!r} needs the named groups a, b and t, e.g. "
                    r"'^mix-(?P<a>id\d+)-(?P<b>id\d+)-t(?P<t>\d+)-'."
                )
        if self.projector_lr < 0:
            raise ParameterError(f"projector_lr must be >= 0 (0: the same as lr), got {self.projector_lr}.")
        if self.snr_gamma < 0:
            raise ParameterError(f"snr_gamma must be >= 0 (0: plain MSE), got {self.snr_gamma}.")
        if self.train_text_encoder and self.train != "unet":
            raise ParameterError("train_text_encoder needs train = unet (the base-model stage).")
        if not 0.0 <= self.ema_decay <= 1.0:
            raise ParameterError(f"ema_decay must be in [0, 1], got {self.ema_decay}.")
        if self.max_grad_norm < 0:
            raise ParameterError(f"max_grad_norm must be >= 0 (0: no clipping), got {self.max_grad_norm}.")
        if isinstance(self.resolution, bool) or not isinstance(self.resolution, int) or self.resolution < 8:
            raise ParameterError(f"resolution must be a whole number >= 8, got {self.resolution!r}.")
        if self.resolution % 8:
            raise ParameterError(f"resolution must be a multiple of 8, got {self.resolution}.")
        if not isinstance(self.validation_prompts, tuple) or not all(
            isinstance(p, str) for p in self.validation_prompts
        ):
            raise ParameterError("validation_prompts must be a tuple of strings.")
