"""PNG `parameters` text in the format AUTOMATIC1111, Forge and Civitai read, written and parsed (paper §2.2 keys).

face0 writes every image's full request as JSON in its own `face0` chunk (face0cli.generation.generate); this
module adds the human line other tools show and parse:

    a photo of a person with blue hair
    Negative prompt: blurry
    Steps: 50, Sampler: DDIM, CFG scale: 7.5, Seed: 42, Size: 512x512, Model hash: 1a2b3c4d5e, Model: face0-sd14, ...

then face0's own keys (the face's label, the paper's c and a, variety, the embedder), which those tools keep as
unknown keys. CFG scale is the paper's w. The parser reads such text from any tool and says which keys it
could not use.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from face0cli.errors import BadInput

PNG_TEXT_KEY = "parameters"

SAMPLER_NAMES: dict[str, str] = {
    "ddim": "DDIM",
    "dpm++": "DPM++ 2M",
    "euler": "Euler",
    "euler-a": "Euler a",
    "pndm": "PLMS",  # A1111's name for the pseudo-numerical (PNDM / PLMS) sampler
}
"""face0 scheduler name -> the sampler name AUTOMATIC1111 writes for the same method."""

FACE0_KEYS: dict[str, str] = {
    "Face0 face": "face",
    "Face0 c": "c",
    "Face0 a": "a",
    "Face0 variety": "variety",
    "Face0 embedder": "embedder",
    "Face0 version": "face0_version",
}
"""A1111-style key -> face0 parameter, for face0's own keys after the standard ones."""

_PARAM = re.compile(r'\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)')
_SIZE = re.compile(r"^(\d+)x(\d+)$")


def quote(value: Any) -> str:
    """A value as A1111 writes it: as is, or JSON-quoted when it holds ',', ':' or a line break."""
    text = str(value)
    if any(ch in text for ch in ",:\n"):
        return json.dumps(text, ensure_ascii=False)
    return text


def _num(x: float) -> str:
    """7.5 -> '7.5', 7.0 -> '7' (A1111 writes whole CFG scales without a fraction)."""
    return str(int(x)) if float(x).is_integer() else repr(float(x))


def model_hash(model_dir: str | Path) -> str:
    """A 10-hex short hash of a model directory's UNet weights (A1111's `Model hash` is a file's sha256[:10]).

    The sha256 runs over the UNet's safetensors files in name order; "" when there are none.
    """
    files = sorted((Path(model_dir) / "unet").glob("*.safetensors"))
    if not files:
        return ""
    h = hashlib.sha256()
    for f in files:
        with open(f, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()[:10]


def a1111_parameters(
    params: Mapping[str, Any],
    size: tuple[int, int],
    *,
    embedder_id: str = "",
    model_name: str = "",
    model_hash: str = "",
) -> str:
    """The A1111 `parameters` text of one face0 image (paper §2.2: CFG scale = w, plus c, a, variety).

    Args:
        params: the image's face0 parameters (face0cli.generation.generate.Request.params(index)): prompt,
            negative, steps, scheduler, w, seed, c, a, variety, face ({"label": ...}), model, face0_version.
        size: (width, height) of the image in pixels.
        embedder_id: the face embedder of the model (face0.json's embedder_id).
        model_name: shown as `Model:` (default: the last part of params["model"]).
        model_hash: shown as `Model hash:` when given (see model_hash()).

    Returns:
        prompt, "Negative prompt: ..." (when there is one), then one line of `Key: value` pairs.
    """
    lines = [str(params.get("prompt", "")).strip()]
    negative = str(params.get("negative", "") or "").strip()
    if negative:
        lines.append(f"Negative prompt: {negative}")
    scheduler = str(params.get("scheduler", ""))
    pairs: list[tuple[str, Any]] = [
        ("Steps", params.get("steps")),
        ("Sampler", SAMPLER_NAMES.get(scheduler, scheduler)),
        ("CFG scale", _num(params["w"]) if "w" in params else None),
        ("Seed", params.get("seed")),
        ("Size", f"{int(size[0])}x{int(size[1])}"),
        ("Model hash", model_hash or None),
        ("Model", model_name or _model_name(str(params.get("model", ""))) or None),
        ("Denoising strength", _num(params["strength"]) if params.get("init") and "strength" in params else None),
    ]
    face = params.get("face")
    label = face.get("label") if isinstance(face, Mapping) else face
    ours = {
        "Face0 face": label,
        "Face0 c": _num(params["c"]) if "c" in params else None,
        "Face0 a": _num(params["a"]) if "a" in params else None,
        "Face0 variety": _num(params["variety"]) if "variety" in params else None,
        "Face0 embedder": embedder_id or None,
        "Face0 version": params.get("face0_version"),
    }
    pairs += list(ours.items())
    lines.append(", ".join(f"{k}: {quote(v)}" for k, v in pairs if v is not None and v != ""))
    return "\n".join(lines)


def _model_name(model: str) -> str:
    """'org/face0-sd14' or '/models/face0-sd14/' -> 'face0-sd14'."""
    return model.rstrip("/\\").replace("\\", "/").rsplit("/", 1)[-1]


@dataclass
class A1111Params:
    """What a `parameters` text says, in face0's terms (paper §2.2: CFG scale is w).

    Attributes:
        prompt, negative: the texts.
        steps, cfg_scale, seed: None when absent or unreadable.
        size: (width, height) or None.
        sampler: the tool's sampler name; scheduler: the face0 SCHEDULERS name for it, or None.
        face0: face0's own keys that were present (face, c, a, variety, embedder, face0_version), as text.
        raw: every key and value of the parameter line, as written (unquoted).
        unused: keys face0 cannot use (another tool's Model, Model hash, Schedule type, Hires, LoRA hashes,
            a sampler face0 does not have, values that do not parse).
    """

    prompt: str = ""
    negative: str = ""
    steps: int | None = None
    cfg_scale: float | None = None
    seed: int | None = None
    size: tuple[int, int] | None = None
    sampler: str | None = None
    scheduler: str | None = None
    face0: dict[str, str] = field(default_factory=dict)
    raw: dict[str, str] = field(default_factory=dict)
    unused: list[str] = field(default_factory=list)

    def request_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for face0cli.generation.generate.Request from what was readable.

        Keys: prompt, negative, and those of steps, w, seed, height, width, scheduler, c, a, variety present.
        """
        out: dict[str, Any] = {"prompt": self.prompt, "negative": self.negative}
        if self.steps is not None:
            out["steps"] = self.steps
        if self.cfg_scale is not None:
            out["w"] = self.cfg_scale
        if self.seed is not None:
            out["seed"] = self.seed
        if self.size is not None:
            out["width"], out["height"] = self.size
        if self.scheduler is not None:
            out["scheduler"] = self.scheduler
        for key in ("c", "a", "variety"):
            if key in self.face0:
                out[key] = float(self.face0[key])
        return out


def parse_a1111(text: str) -> A1111Params:
    """Parse A1111 / Forge / Civitai `parameters` text (as a1111_parameters writes it, or another tool).

    The last line is the parameter line when it holds at least three `Key: value` pairs; the lines before it
    are the prompt, and from a line starting `Negative prompt:` on, the negative prompt.
    """
    out = A1111Params()
    lines = text.strip().replace("\r\n", "\n").split("\n")
    last = lines[-1] if lines else ""
    if len(_PARAM.findall(last)) >= 3:
        lines = lines[:-1]
    else:
        last = ""
    prompt: list[str] = []
    negative: list[str] = []
    for line in lines:
        line = line.strip()
        if not negative and line.startswith("Negative prompt:"):
            negative.append(line[len("Negative prompt:") :].strip())
        elif negative:
            negative.append(line)
        else:
            prompt.append(line)
    out.prompt, out.negative = "\n".join(prompt), "\n".join(negative)
    for key, value in _PARAM.findall(last):
        key, value = key.strip(), value.strip()
        if len(value) >= 2 and value[0] == value[-1] == '"':
            try:
                value = json.loads(value)
            except json.JSONDecodeError:
                value = value[1:-1]
        out.raw[key] = value
        if not _use(out, key, value):
            out.unused.append(key)
    return out


def _use(out: A1111Params, key: str, value: str) -> bool:
    """Fill the field KEY names from VALUE; False when face0 has no use for it or it does not parse."""
    try:
        if key == "Steps":
            out.steps = int(value)
        elif key == "CFG scale":
            out.cfg_scale = _finite(value)
        elif key == "Seed":
            out.seed = int(value)
        elif key == "Size":
            m = _SIZE.match(value)
            if m is None:
                return False
            out.size = (int(m.group(1)), int(m.group(2)))
        elif key == "Sampler":
            out.sampler = value
            by_name = {v.lower(): k for k, v in SAMPLER_NAMES.items()} | {k: k for k in SAMPLER_NAMES}
            out.scheduler = by_name.get(value.lower())
            return out.scheduler is not None
        elif key in FACE0_KEYS:
            name = FACE0_KEYS[key]
            if name in ("c", "a", "variety"):
                _finite(value)
            out.face0[name] = value
        else:
            return False
    except ValueError:
        return False
    return True


def _finite(value: str) -> float:
    x = float(value)
    if not math.isfinite(x):
        raise ValueError(value)
    return x


def read_a1111(path: str | Path) -> A1111Params:
    """Parse the `parameters` text chunk of a PNG written by face0, A1111, Forge, ComfyUI's A1111 nodes, ...

    Raises:
        BadInput: the file is not a readable image or carries no `parameters` text.
    """
    from PIL import Image, UnidentifiedImageError

    p = Path(path)
    try:
        with Image.open(p) as im:
            text = (getattr(im, "text", None) or {}).get(PNG_TEXT_KEY) or im.info.get(PNG_TEXT_KEY)
    except (OSError, UnidentifiedImageError) as e:
        raise BadInput(f"{p} is not a readable image ({e}).") from e
    if not isinstance(text, str) or not text.strip():
        raise BadInput(f"{p} carries no 'parameters' text (A1111-style generation parameters).")
    return parse_a1111(text)


__all__ = [
    "FACE0_KEYS",
    "PNG_TEXT_KEY",
    "SAMPLER_NAMES",
    "A1111Params",
    "a1111_parameters",
    "model_hash",
    "parse_a1111",
    "quote",
    "read_a1111",
]
