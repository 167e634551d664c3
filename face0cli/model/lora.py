"""LoRA weights into a face0 model's UNet, through diffusers' LoRA loading (peft), with a scale each.

A style or concept LoRA trained for the SD 1.x base changes the UNet the face tokens drive (Face0 paper
§2.3 fine-tunes that UNet; a LoRA adds a low-rank delta on top). Files in diffusers', peft's or kohya /
A1111's key layout load; only safetensors files are read (a pickle can run code). Text-encoder layers in
the file are left out: face0 keeps the text encoder frozen and its contexts are what the projector was
trained next to.
"""

from __future__ import annotations

import importlib.util
import math
import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from face0cli.errors import BadInput, MissingPackage, ModelError, ParameterError

LORA_EXTRA = "pip install 'face0[lora]'"
"""What installs peft, the package LoRA needs (an extra: without peft, diffusers imports faster)."""


def require_peft(what: str) -> None:
    """Check that peft is installed, before any heavy work.

    Raises:
        MissingPackage: it is not (one sentence naming the command that installs it).
    """
    if importlib.util.find_spec("peft") is None:
        raise MissingPackage(f"{what} needs peft, which is not installed: {LORA_EXTRA} (or pip install peft).")


@dataclass(frozen=True)
class LoraSpec:
    """One LoRA to load: a .safetensors file and the scale of its delta (0 = off, 1 = as trained)."""

    path: Path
    scale: float = 1.0


def parse_lora_spec(text: str) -> LoraSpec:
    """`FILE` or `FILE:SCALE` (the --lora option) -> LoraSpec; `C:file` (a drive letter) is a plain FILE.

    Raises:
        ParameterError: the scale is a number but not a finite one.
    """
    head, sep, tail = text.rpartition(":")
    if sep and len(head) > 1:
        try:
            scale = float(tail)
        except ValueError:
            scale = None
        if scale is not None:
            if not math.isfinite(scale):
                raise ParameterError(f"a LoRA scale must be a finite number, got {tail!r}.")
            return LoraSpec(Path(head).expanduser(), scale)
    return LoraSpec(Path(text).expanduser(), 1.0)


def read_lora_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a LoRA state dict from a .safetensors file, refusing anything else.

    Raises:
        BadInput: the file is missing, a folder, not named .safetensors, or not a readable safetensors file.
    """
    import safetensors.torch
    from safetensors import SafetensorError

    p = Path(path).expanduser()
    if p.is_dir():
        raise BadInput(f"{p} is a folder; give the LoRA's .safetensors file.")
    if p.suffix.lower() != ".safetensors":
        raise BadInput(
            f"{p} is not a .safetensors file; face0 loads LoRA weights only from safetensors "
            "(.ckpt / .pt / .bin files are pickles, which can run code)."
        )
    if not p.is_file():
        raise BadInput(f"{p} does not exist.")
    try:
        return dict(safetensors.torch.load_file(str(p)))
    except (SafetensorError, OSError, ValueError) as e:
        raise BadInput(f"{p} is not a readable safetensors file ({e}).") from e


def load_loras(pipe: Any, specs: list[LoraSpec]) -> list[str]:
    """Load LoRAs into pipe.unet as peft adapters and activate them with their scales (paper §2.3's UNet).

    Each file goes through diffusers' StableDiffusionLoraLoaderMixin.lora_state_dict (which converts
    kohya / A1111 layouts) and load_lora_into_unet (peft); then unet.set_adapters activates all adapters
    loaded so far with their scales. Calling it again adds more adapters.

    Args:
        pipe: a Face0Pipeline (or any pipeline with a diffusers UNet2DConditionModel as .unet).
        specs: the LoRAs, in order.

    Returns:
        the adapter names, one per spec ("lora_<stem>", made unique).

    Raises:
        BadInput: a file is not a readable .safetensors file.
        ParameterError: a scale is not finite.
        ModelError: a file has no UNet LoRA layers, or its layers do not fit this UNet.
        MissingPackage: peft is not installed.
    """
    require_peft("--lora")
    from diffusers.loaders.lora_pipeline import StableDiffusionLoraLoaderMixin

    unet = pipe.unet
    for spec in specs:
        if isinstance(spec.scale, bool) or not math.isfinite(spec.scale):
            raise ParameterError(f"a LoRA scale must be a finite number, got {spec.scale!r}.")
    scales: dict[str, float] = dict(getattr(unet, "_face0_lora_scales", {}))
    names: list[str] = []
    for spec in specs:
        raw = read_lora_file(spec.path)
        try:
            state_dict, alphas = StableDiffusionLoraLoaderMixin.lora_state_dict(raw, unet_config=unet.config)
        except (ValueError, KeyError, TypeError) as e:
            raise ModelError(f"{spec.path} is not a LoRA diffusers can read ({e}).") from e
        unet_keys = [k for k in state_dict if k.startswith("unet.")]
        if not unet_keys:
            raise ModelError(f"{spec.path} has no UNet LoRA layers (only text-encoder or unknown keys).")
        state_dict = {k: state_dict[k] for k in unet_keys}
        if alphas is not None:
            alphas = {k: v for k, v in alphas.items() if k.startswith("unet.")}
        name = _adapter_name(spec.path, set(scales) | set(getattr(unet, "peft_config", {}) or {}))
        try:
            with warnings.catch_warnings():
                # several adapters, each under its own name, are what --lora a --lora b asks for: peft's warning
                # about "multiple adapters" on the second one is noise here
                warnings.filterwarnings("ignore", message="Already found a `peft_config` attribute")
                StableDiffusionLoraLoaderMixin.load_lora_into_unet(state_dict, alphas, unet, adapter_name=name)
        except (ValueError, KeyError, RuntimeError) as e:
            raise ModelError(f"the LoRA {spec.path} does not fit this model's UNet ({_first_line(e)})") from e
        scales[name] = float(spec.scale)
        names.append(name)
    if scales:
        unet.set_adapters(list(scales), weights=list(scales.values()))
        unet._face0_lora_scales = scales
    return names


def _adapter_name(path: Path, taken: set[str]) -> str:
    base = "lora_" + re.sub(r"[^A-Za-z0-9_]", "_", path.stem)
    name, i = base, 1
    while name in taken:
        i += 1
        name = f"{base}_{i}"
    return name


def _first_line(e: BaseException) -> str:
    lines = str(e).strip().splitlines()
    return lines[0].rstrip(".") + "." if lines else type(e).__name__ + "."


__all__ = ["LORA_EXTRA", "LoraSpec", "load_loras", "parse_lora_spec", "read_lora_file", "require_peft"]
