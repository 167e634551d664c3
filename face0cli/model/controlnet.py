"""Loading a diffusers ControlNet for face0's sampler (its residuals go to the UNet call of every step)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from face0cli.errors import ModelError


def load_controlnet(spec: str, *, device: Any = "cpu", dtype: Any = None) -> Any:
    """ControlNetModel.from_pretrained(SPEC) (a directory or hub id) on DEVICE in DTYPE.

    Raises:
        ModelError: SPEC is not a ControlNet diffusers can load.
    """
    from diffusers import ControlNetModel

    from face0cli.console import quiet_model_loading

    quiet_model_loading()
    p = Path(spec).expanduser()
    try:
        net = ControlNetModel.from_pretrained(str(p) if p.exists() else spec, torch_dtype=dtype)
    except (OSError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ModelError(f"--controlnet {spec} is not a ControlNet diffusers can load ({first})") from e
    return net.to(device).eval()


__all__ = ["load_controlnet"]
