"""Frozen settings per stage, with the paper's defaults (Face0, Valevski et al. 2023). Saved beside outputs."""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
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
    """Sampling (paper §2.2, §3.4): DDIM, w = 7.5, c = 1, a = 0 unless a style asks otherwise."""

    w: float = 7.5
    c: float = 1.0
    a: float = 0.0
    variety: float = 0.0
    steps: int = 50
    scheduler: str = "ddim"
    height: int = 512
    width: int = 512
    negative_prompt: str = ""
    eta: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("w", "c", "a", "variety", "eta"):
            check_finite(name, getattr(self, name))
        if self.variety < 0:
            raise ParameterError(f"variety must be >= 0, got {self.variety}.")
        if int(self.steps) != self.steps or self.steps < 1:
            raise ParameterError(f"steps must be a whole number >= 1, got {self.steps}.")
        for name in ("height", "width"):
            v = getattr(self, name)
            if v < 8 or v % 8:
                raise ParameterError(f"{name} must be a positive multiple of 8, got {v}.")


@dataclass(frozen=True)
class GMMConfig:
    """Gaussian mixture of face embeddings (paper §3.1): components chosen by BIC within a range."""

    min_components: int = 1
    max_components: int = 8
    covariance_type: str = "diag"
    seed: int = 0
    max_iter: int = 200
