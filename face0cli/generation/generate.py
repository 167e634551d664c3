"""Requests for the sampler: resolve a face, render images, write PNGs that carry their parameters (paper §2.2, §3).

This is the library side of `face0 generate`, `face0 debias`, sweeps and strips. It owns the PNG parameter
chunk, so `face0 generate --from-png IMG` reproduces an image exactly, and the labelled grids people look at.
"""

from __future__ import annotations

import base64
import dataclasses
import functools
import json
import math
import re
import secrets
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from face0cli import __version__
from face0cli.config import SAMPLE_DEFAULTS, SampleConfig
from face0cli.errors import BadInput, EmbedderMismatch, ModelError, ParameterError

PNG_KEY = "face0"
SWEEPABLE = ("w", "c", "a", "variety", "seed", "steps")


@dataclass
class Face:
    """A resolved face: the embedding to condition on and where it came from."""

    vector: np.ndarray | None  # (D,) float32, None = no face (the null face)
    label: str
    source: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"label": self.label, "source": self.source}
        if self.vector is not None:
            out["vector_b64"] = base64.b64encode(np.asarray(self.vector, "<f4").tobytes()).decode()
            out["dim"] = int(self.vector.shape[0])
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Face:
        vec = None
        if data.get("vector_b64"):
            vec = np.frombuffer(base64.b64decode(data["vector_b64"]), dtype="<f4").astype(np.float32)
        return cls(vec, data.get("label", "face"), data.get("source", {}))


DEFAULT_STRENGTH = 0.8
"""How much of the schedule runs from an init image when --strength is not given (diffusers' default)."""


@dataclass(frozen=True)
class InputFile:
    """A file a request reads (an init, mask or control image, a LoRA), recorded by absolute path and sha256.

    Reproducing an image from its PNG reads the file again and refuses one whose bytes changed.
    """

    path: str
    sha256: str

    @classmethod
    def of(cls, path: str | Path, option: str, *, image: bool = True) -> InputFile:
        """Record PATH (given to OPTION); an image is decoded once here, so a bad one fails before the model loads."""
        from face0cli.faces.images import file_sha256, load_image

        p = Path(path).expanduser()
        if image:
            load_image(p, name=f"{option} {p}")
        elif not p.is_file():
            raise BadInput(f"{option} {p} does not exist.")
        return cls(str(p.resolve()), file_sha256(p))

    def check(self, option: str) -> Path:
        """The path, after checking the file still has the recorded bytes (BadInput otherwise)."""
        from face0cli.faces.images import file_sha256

        p = Path(self.path)
        if not p.is_file():
            raise BadInput(f"{option} {p} does not exist (the image's parameters read it).")
        if self.sha256 and file_sha256(p) != self.sha256:
            raise BadInput(f"{option} {p} changed since the image was made (its sha256 differs).")
        return p

    def image(self, option: str) -> Image.Image:
        from face0cli.faces.images import load_image

        return load_image(self.check(option), name=f"{option} {self.path}")

    def to_json(self) -> dict[str, str]:
        return {"path": self.path, "sha256": self.sha256}

    @classmethod
    def from_json(cls, data: Any) -> InputFile:
        if not isinstance(data, dict) or not isinstance(data.get("path"), str):
            raise BadInput(f"an input file in the face0 parameters is malformed ({data!r}).")
        return cls(data["path"], str(data.get("sha256", "")))


@dataclass(frozen=True)
class LoraRef:
    """A LoRA of a request: its .safetensors file (path, sha256) and scale."""

    file: InputFile
    scale: float = 1.0

    def to_json(self) -> dict[str, Any]:
        return self.file.to_json() | {"scale": self.scale}

    @classmethod
    def from_json(cls, data: Any) -> LoraRef:
        if not isinstance(data, dict):
            raise BadInput(f"a LoRA in the face0 parameters is malformed ({data!r}).")
        return cls(InputFile.from_json(data), float(data.get("scale", 1.0)))


@dataclass(frozen=True)
class Inputs:
    """What a request adds to text-to-image: an init image (img2img) with a strength, a mask (inpainting,
    white = regenerate), a ControlNet with its control image and scale, and LoRAs (paper §2.2 guidance kept).

    Attributes:
        strength: None = DEFAULT_STRENGTH when there is an init image.
        controlnet: a ControlNet directory (absolute) or hub id, "" for none.
    """

    init: InputFile | None = None
    strength: float | None = None
    mask: InputFile | None = None
    controlnet: str = ""
    control: InputFile | None = None
    control_scale: float = 1.0
    loras: tuple[LoraRef, ...] = ()

    @classmethod
    def from_options(
        cls,
        init: Path | None = None,
        strength: float | None = None,
        mask: Path | None = None,
        controlnet: str | None = None,
        control: Path | None = None,
        control_scale: float = 1.0,
        loras: Sequence[str] = (),
    ) -> Inputs:
        """The inputs of `face0 generate`'s options, checked, files read and hashed (before the model loads)."""
        from face0cli.model.lora import parse_lora_spec, read_lora_file, require_peft

        if loras:
            require_peft("--lora")
        refs = []
        for text in loras:
            spec = parse_lora_spec(text)
            read_lora_file(spec.path)  # refuses a pickle or an unreadable file now
            refs.append(LoraRef(InputFile.of(spec.path, "--lora", image=False), spec.scale))
        if controlnet and Path(controlnet).expanduser().exists():
            controlnet = str(Path(controlnet).expanduser().resolve())
        out = cls(
            init=InputFile.of(init, "--init") if init is not None else None,
            strength=strength,
            mask=InputFile.of(mask, "--mask") if mask is not None else None,
            controlnet=controlnet or "",
            control=InputFile.of(control, "--control") if control is not None else None,
            control_scale=control_scale,
            loras=tuple(refs),
        )
        out.check()
        return out

    def check(self) -> None:
        """ParameterError for options that do not go together or are out of range."""
        s = self.strength
        if s is not None:
            if isinstance(s, bool) or not isinstance(s, (int, float)) or not 0.0 <= s <= 1.0:
                raise ParameterError(f"--strength must be a number in [0, 1], got {s!r}.")
            if self.init is None:
                raise ParameterError("--strength needs an init image (--init IMG).")
        if self.mask is not None and self.init is None:
            raise ParameterError("--mask needs an init image (--init IMG): the mask says which part to redraw.")
        if bool(self.controlnet) != (self.control is not None):
            raise ParameterError("--controlnet and --control go together (a ControlNet and its control image).")
        cs = self.control_scale
        if isinstance(cs, bool) or not isinstance(cs, (int, float)) or not math.isfinite(cs):
            raise ParameterError(f"--control-scale must be a finite number, got {cs!r}.")
        for lora in self.loras:
            if not math.isfinite(lora.scale):
                raise ParameterError(f"a LoRA scale must be a finite number, got {lora.scale!r}.")

    def to_params(self) -> dict[str, Any]:
        """The PNG parameter keys of what is set (none for plain text-to-image)."""
        out: dict[str, Any] = {}
        if self.init is not None:
            out["init"] = self.init.to_json()
            out["strength"] = DEFAULT_STRENGTH if self.strength is None else self.strength
        if self.mask is not None:
            out["mask"] = self.mask.to_json()
        if self.controlnet:
            out["controlnet"] = self.controlnet
            out["control"] = self.control.to_json() if self.control else None
            out["control_scale"] = self.control_scale
        if self.loras:
            out["loras"] = [lora.to_json() for lora in self.loras]
        return out

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> Inputs:
        def file(key: str) -> InputFile | None:
            return InputFile.from_json(params[key]) if params.get(key) is not None else None

        loras = params.get("loras") or []
        if not isinstance(loras, list):
            raise BadInput("the LoRAs in the face0 parameters are malformed.")
        out = cls(
            init=file("init"),
            strength=params.get("strength"),
            mask=file("mask"),
            controlnet=str(params.get("controlnet") or ""),
            control=file("control"),
            control_scale=float(params.get("control_scale", 1.0)),
            loras=tuple(LoraRef.from_json(x) for x in loras),
        )
        out.check()
        return out

    def pipe_kwargs(self, pipe: Any) -> dict[str, Any]:
        """Face0Pipeline keyword arguments: the images read (and checked against their sha256), the ControlNet
        loaded (once per pipeline) and the LoRAs loaded into its UNet (once per pipeline)."""
        use_loras(pipe, self.loras)
        kw: dict[str, Any] = {}
        if self.init is not None:
            kw["image"] = self.init.image("--init")
            kw["strength"] = DEFAULT_STRENGTH if self.strength is None else self.strength
        if self.mask is not None:
            kw["mask_image"] = self.mask.image("--mask")
        if self.controlnet:
            assert self.control is not None  # check()
            kw["controlnet"] = controlnet_for(pipe, self.controlnet)
            kw["control_image"] = self.control.image("--control")
            kw["controlnet_conditioning_scale"] = self.control_scale
        return kw


def use_loras(pipe: Any, loras: Sequence[LoraRef]) -> None:
    """Load LORAS into pipe's UNet unless they are what it has already; ParameterError when it holds others."""
    from face0cli.model.lora import LoraSpec, load_loras

    want = tuple((lora.file.path, lora.file.sha256, lora.scale) for lora in loras)
    have = getattr(pipe, "_face0_loras", ())
    if want == have:
        return
    if have:
        raise ParameterError("this loaded model already has other LoRAs; load the model again to use these.")
    for lora in loras:
        lora.file.check("--lora")
    load_loras(pipe, [LoraSpec(Path(lora.file.path), lora.scale) for lora in loras])
    pipe._face0_loras = want


def controlnet_for(pipe: Any, spec: str) -> Any:
    """The ControlNet SPEC (a directory or hub id) on pipe's device and dtype, loaded once per pipeline."""
    from face0cli.model.controlnet import load_controlnet

    cache = pipe.__dict__.setdefault("_face0_controlnets", {})
    if spec not in cache:
        cache[spec] = load_controlnet(spec, device=pipe.unet.device, dtype=pipe.unet.dtype)
    return cache[spec]


@dataclass
class Request:
    """One generation request: a prompt, a face, seeds and the sampler settings (paper §2.2 defaults).

    Attributes:
        sample: the sampler's settings (w, c, a, variety, steps, scheduler, size), checked by SampleConfig.
        n: images; image i uses seed + i.
    """

    prompt: str
    face: Face
    seed: int = 0
    n: int = 1
    sample: SampleConfig = SAMPLE_DEFAULTS
    negative: str = ""
    model: str = ""
    inputs: Inputs = field(default_factory=Inputs)

    def check(self) -> None:
        """ParameterError for an out-of-range n or seed, or inputs that do not go together (SampleConfig checked
        the sampler's settings)."""
        self.inputs.check()
        if isinstance(self.n, bool) or not isinstance(self.n, int) or self.n < 1:
            raise ParameterError(f"--n must be a whole number >= 1, got {self.n!r}.")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ParameterError(f"--seed must be a whole number >= 0, got {self.seed!r}.")
        if not isinstance(self.prompt, str) or not isinstance(self.negative, str):
            raise ParameterError("the prompt and the negative prompt must be text.")

    def replace(self, **changes: Any) -> Request:
        """A copy with CHANGES; sampler settings (w, c, a, variety, steps, scheduler, height, width) go into
        `sample`, and are checked."""
        sample_keys = {f.name for f in dataclasses.fields(SampleConfig)}
        sample = {k: changes.pop(k) for k in list(changes) if k in sample_keys}
        if sample:
            changes["sample"] = dataclasses.replace(self.sample, **sample)
        return dataclasses.replace(self, **changes)

    def params(self, index: int) -> dict[str, Any]:
        """The parameters of image `index` of this request, as written into its PNG (sampler settings flat)."""
        return {
            "face0_version": __version__,
            "prompt": self.prompt,
            "seed": self.seed + index,
            **dataclasses.asdict(self.sample),
            "negative": self.negative,
            "model": self.model,
            "face": self.face.to_json(),
            **self.inputs.to_params(),
        }


def parse_size(text: str | None) -> tuple[int | None, int | None]:
    """'512' -> (512, 512); '512x768' (width x height) -> (768, 512) as (height, width)."""
    if not text:
        return None, None
    m = re.fullmatch(r"\s*(\d+)\s*(?:[xX*]\s*(\d+))?\s*", text)
    if not m:
        raise ParameterError(f"--size must look like 512 or 512x768 (width x height), got {text!r}.")
    width = int(m.group(1))
    height = int(m.group(2) or m.group(1))
    for v in (width, height):
        if v < 8 or v % 8:
            raise ParameterError(f"--size must be made of positive multiples of 8, got {text!r}.")
    return height, width


# ------------------------------------------------------------------------------------------------- faces


def face_from_vector(vector: np.ndarray, label: str, source: dict[str, Any]) -> Face:
    v = np.array(vector, dtype=np.float32).reshape(-1)  # a writable copy
    if not np.all(np.isfinite(v)):
        raise BadInput(f"the face embedding of {label} is not finite.")
    return Face(v, label, source)


def resolve_face(
    spec: str | None,
    *,
    store: Any,
    model_embedder_id: str,
    model_dim: int,
    gmm: Any = None,
    embed_photo: Callable[[Path], tuple[np.ndarray, dict[str, Any]]] | None = None,
    examples: Any = None,
) -> Face:
    """Turn `--face` into an embedding: a library name, a photo path, `random[:SEED]` (the model's GMM) or `none`.

    Args:
        spec: the user's text.
        store: a FaceStore.
        model_embedder_id, model_dim: what the model's projector expects.
        gmm: the model's FaceGMM (for random faces), or None.
        embed_photo: path -> (vector (D,), provenance); only called for photos.
        examples: a FaceStore of the model's example characters, or None; a name is looked up in the user's
            library first, then there.
    """
    if spec is None or spec.lower() in ("none", "no", ""):
        return Face(None, "none", {"kind": "none"})
    m = re.fullmatch(r"random(?::(\d+))?", spec)
    if m:
        if gmm is None:
            raise ModelError("this model has no GMM of faces (gmm/), so it cannot draw a random face.")
        seed = int(m.group(1)) if m.group(1) else secrets.randbelow(2**31)  # recorded with the image
        vec = gmm.sample(1, seed=seed)[0]
        return face_from_vector(vec, f"random:{seed}", {"kind": "random", "seed": seed, "gmm": gmm.identity})
    path = Path(spec)
    looks_like_file = path.suffix != "" or "/" in spec or path.exists()
    from face0cli.library.characters import in_store, with_examples

    if looks_like_file and not (store is not None and in_store(store, spec)):
        if embed_photo is None:
            raise BadInput(f"{spec} is a photo, but no face embedder is available.")
        vec, prov = embed_photo(path)
        face = face_from_vector(vec, path.name, {"kind": "photo", **prov})
    else:
        char = with_examples(store, examples).get(spec)
        if char.embedder_id != model_embedder_id:
            raise EmbedderMismatch(
                f"character '{spec}' was made by the embedder {char.embedder_id}, but the model expects the embedder "
                f"{model_embedder_id}."
            )
        face = face_from_vector(char.vector, spec, {"kind": "character", "name": spec, "character_kind": char.kind})
    if face.vector is not None and face.vector.shape[0] != model_dim:
        raise EmbedderMismatch(
            f"the face embedding has dimension {face.vector.shape[0]}, but the model expects {model_dim}."
        )
    return face


# ------------------------------------------------------------------------------------------------ PNGs


def save_png(
    image: Image.Image, params: dict[str, Any], path: Path, *, embedder_id: str = "", model_hash: str = ""
) -> Path:
    """Write `image` to `path` atomically with its parameters: all of them in a PNG text chunk ('face0', JSON),
    and the A1111 `parameters` text other tools show and read (generation.a1111; EMBEDDER_ID and MODEL_HASH
    go there)."""
    from face0cli.generation.a1111 import PNG_TEXT_KEY, a1111_parameters

    info = PngInfo()
    info.add_text(PNG_KEY, json.dumps(params, sort_keys=True))
    text = a1111_parameters(params, image.size, embedder_id=embedder_id, model_hash=model_hash)
    info.add_text(PNG_TEXT_KEY, text)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    image.save(tmp, format="PNG", pnginfo=info)
    tmp.replace(path)
    return path


def read_png_params(path: Path) -> dict[str, Any]:
    """The parameters face0 wrote into a PNG, or BadInput if it has none."""
    from face0cli.faces.images import load_image

    load_image(path)  # the same checks as any image (missing, corrupt, too large)
    with Image.open(path) as im:
        text = getattr(im, "text", {}) or {}
    if PNG_KEY not in text:
        raise BadInput(f"{path} carries no face0 parameters (was it written by face0 generate?).")
    try:
        return json.loads(text[PNG_KEY])
    except json.JSONDecodeError as e:
        raise BadInput(f"{path} has a damaged face0 parameter chunk ({e.msg}).") from e


def request_from_params(params: dict[str, Any]) -> Request:
    """Rebuild the request of one image from its PNG parameters (n = 1, the image's own seed)."""
    sample_keys = {f.name for f in dataclasses.fields(SampleConfig)}
    try:
        sample = SampleConfig(**{k: params[k] for k in sample_keys if k in params})
        req = Request(
            prompt=params.get("prompt", ""),
            face=Face.from_json(params.get("face", {})),
            seed=params.get("seed", 0),
            n=1,
            sample=sample,
            negative=params.get("negative", ""),
            model=params.get("model", ""),
            inputs=Inputs.from_params(params),
        )
    except (TypeError, ValueError) as e:
        raise BadInput(f"the face0 parameters of the image have a field of the wrong type ({e}).") from e
    req.check()
    return req


@dataclass
class FromPng:
    """What `--from-png` found in a PNG: the request, and, for a PNG without face0's chunk, the A1111 text's
    keys face0 could not use.

    Attributes:
        params: the face0 parameters (None when the request came from A1111 text).
        a1111: True when the request came from the A1111 `parameters` text (the face is then not known).
        unused: what the A1111 text had that the request does not carry.
    """

    request: Request
    params: dict[str, Any] | None = None
    a1111: bool = False
    unused: list[str] = field(default_factory=list)


def request_from_png(path: Path) -> FromPng:
    """The request of a PNG: face0's own chunk when present (exact), else the A1111 `parameters` text (prompt,
    negative, steps, CFG scale = w, seed, size, sampler, and face0's c, a, variety when written).

    Raises:
        BadInput: the PNG carries neither.
    """
    from face0cli.faces.images import load_image
    from face0cli.generation.a1111 import read_a1111

    load_image(path)  # the same checks as any image (missing, corrupt, too large)
    with Image.open(path) as im:
        text = getattr(im, "text", {}) or {}
    if PNG_KEY in text:
        params = read_png_params(path)
        return FromPng(request_from_params(params), params)
    try:
        a = read_a1111(path)
    except BadInput as e:
        raise BadInput(f"{path} carries no face0 parameters and no A1111 'parameters' text.") from e
    kwargs = a.request_kwargs()
    seed = kwargs.pop("seed", 0)
    if not isinstance(seed, int) or seed < 0:
        seed = 0
        a.unused.append("Seed")
    req = Request(
        kwargs.pop("prompt"), Face(None, "none", {"kind": "none"}), seed=seed, negative=kwargs.pop("negative")
    )
    req = req.replace(**kwargs)
    req.check()
    unused = list(a.unused)
    if "face" in a.face0:
        unused.append(f"Face0 face ({a.face0['face']}: A1111 text carries no face embedding; give --face)")
    return FromPng(req, None, True, unused)


def output_paths(out: Path, stem: str, count: int) -> list[Path]:
    """Where the images of a request go: OUT.png for one image, OUT-000.png... for several, or a folder."""
    if out.suffix.lower() == ".png":
        if count == 1:
            return [out]
        return [out.with_name(f"{out.stem}-{i:03d}.png") for i in range(count)]
    return [out / f"{stem}-{i:03d}.png" for i in range(count)]


# ----------------------------------------------------------------------------------------------- render


def render(
    pipe: Any, req: Request, *, on_step: Callable[[], None] | None = None
) -> Iterator[tuple[int, Image.Image, dict]]:
    """Generate the n images of a request, one seeded generator per image, so each is reproducible alone.

    Yields (index, image, info) where info has the UNet calls per step.
    """
    import torch

    req.check()
    extra = req.inputs.pipe_kwargs(pipe)
    for i in range(req.n):
        gen = torch.Generator(device="cpu").manual_seed(req.seed + i)
        out = pipe(req.prompt, req.face.vector, generator=gen, **_sampler_kwargs(req, on_step), **extra)
        yield i, out.images[0], {"unet_calls_per_step": getattr(out, "unet_calls_per_step", None)}


def _sampler_kwargs(req: Request, on_step: Callable[[], None] | None) -> dict[str, Any]:
    """The pipeline's keyword arguments for a request's sampler settings, negative prompt and step callback."""
    s = req.sample
    return {
        "negative_prompt": req.negative,
        "w": s.w,
        "c": s.c,
        "a": s.a,
        "variety": s.variety,
        "num_inference_steps": s.steps,
        "height": s.height,
        "width": s.width,
        "scheduler": s.scheduler,
        "callback": (lambda *args, **kw: on_step()) if on_step else None,
    }


def _steps(on_step: Callable[[], None], images: int) -> None:
    """One sampling step of a batch: on_step once per image."""
    for _ in range(images):
        on_step()


def check_batch(batch: Any) -> int:
    """BATCH (images rendered together) checked: a whole number >= 1, else ParameterError."""
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise ParameterError(f"--batch must be a whole number >= 1, got {batch!r}.")
    return batch


def render_batch(
    pipe: Any, reqs: Sequence[Request], *, on_step: Callable[[], None] | None = None
) -> list[tuple[Image.Image, dict]]:
    """One image for each request in one batched pipeline call: (image, info) per request, in order.

    The requests must share the sampler settings, the negative prompt and the inputs, and ask for one image each
    (prompts, faces and seeds may differ). Each image has its own generator seeded with its request's seed, so it
    is the image render() gives for that request alone, up to float rounding in the batched UNet (at most 1/255
    in a few pixels); its info then says the batch size ("batch"). Variety noise, extra inputs, or faces mixed
    with no face fall back to one call per request. on_step is called once per sampling step of each image,
    batched or not (a batch of 4 calls it 4 times a step).
    """
    import torch

    for req in reqs:
        req.check()
    first = reqs[0]
    same = (r.n == 1 and (r.sample, r.negative, r.inputs) == (first.sample, first.negative, first.inputs) for r in reqs)
    if not all(same):
        raise ParameterError("a batch takes one image per request, with the same sampler settings and inputs.")
    alone = len(reqs) == 1 or first.sample.variety or first.inputs != Inputs()
    no_face = [r.face.vector is None for r in reqs]
    if alone or (any(no_face) and not all(no_face)):
        return [(image, info) for req in reqs for _, image, info in render(pipe, req, on_step=on_step)]
    out = pipe(
        [r.prompt for r in reqs],
        None if all(no_face) else np.stack([np.asarray(r.face.vector, dtype=np.float32) for r in reqs]),
        generator=[torch.Generator(device="cpu").manual_seed(r.seed) for r in reqs],
        **_sampler_kwargs(first, None if on_step is None else functools.partial(_steps, on_step, len(reqs))),
    )
    info = {"unet_calls_per_step": getattr(out, "unet_calls_per_step", None), "batch": len(reqs)}
    return [(image, dict(info)) for image in out.images]


# ------------------------------------------------------------------------------------------------ sweeps


def parse_sweep(specs: Sequence[str]) -> list[tuple[str, list[float]]]:
    """`c=0,0.5,1 a=0,1` -> [("c", [0, .5, 1]), ("a", [0, 1])]; at most two parameters (rows, columns)."""
    out: list[tuple[str, list[float]]] = []
    for spec in specs:
        for part in spec.split():
            m = re.fullmatch(r"([a-z]+)=([^=]+)", part)
            if not m or m.group(1) not in SWEEPABLE:
                raise ParameterError(
                    f"--sweep takes NAME=V1,V2,... with NAME one of {', '.join(SWEEPABLE)}; got {part!r}."
                )
            try:
                values = [float(v) for v in m.group(2).split(",") if v.strip()]
            except ValueError as e:
                raise ParameterError(f"--sweep {part!r}: values must be numbers.") from e
            if not values or not all(math.isfinite(v) for v in values):
                raise ParameterError(f"--sweep {part!r}: values must be finite numbers.")
            out.append((m.group(1), values))
    if not 1 <= len(out) <= 2:
        raise ParameterError("--sweep takes one or two parameters (rows, then columns).")
    if len({k for k, _ in out}) != len(out):
        raise ParameterError("--sweep names the same parameter twice.")
    return out


def sweep_requests(
    base: Request, sweep: list[tuple[str, list[float]]]
) -> tuple[list[Request], int, int, list[str], list[str]]:
    """The grid of requests of a sweep: rows = first parameter, columns = second (or a single row)."""
    (rk, rv), (ck, cv) = (sweep[0], sweep[1]) if len(sweep) == 2 else (("", [0.0]), sweep[0])
    reqs = []
    for r in rv:
        for c in cv:
            changes: dict[str, Any] = {}
            for k, v in ((rk, r), (ck, c)):
                if k:
                    changes[k] = int(v) if k in ("seed", "steps") else v
            req = base.replace(n=1, **changes)
            req.check()
            reqs.append(req)
    row_labels = [f"{rk}={_fmt(v)}" for v in rv] if rk else [""]
    col_labels = [f"{ck}={_fmt(v)}" for v in cv]
    return reqs, len(rv), len(cv), row_labels, col_labels


def _fmt(v: float) -> str:
    return f"{v:g}"


# ------------------------------------------------------------------------------------------------ files


def read_text_file(path: Path) -> str:
    """The text of a user's file (a jobs file), or BadInput with one sentence."""
    if not path.exists():
        raise BadInput(f"{path} does not exist.")
    if path.is_dir():
        raise BadInput(f"{path} is a folder, not a file.")
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise BadInput(f"{path} is not UTF-8 text.") from e


def save_debias_faces(path: Path, reqs: Sequence[Request], embedder_id: str, gmm_identity: str) -> None:
    """Write the faces a debias run used (n, D) with their seeds, so any can be kept as a character."""
    from safetensors.numpy import save_file

    vecs = np.stack([np.asarray(r.face.vector, np.float32) for r in reqs])
    meta = {
        "format": "face0-debias-faces",
        "embedder_id": embedder_id,
        "gmm": gmm_identity,
        "seeds": json.dumps([r.face.source.get("seed") for r in reqs]),
        "prompt": reqs[0].prompt if reqs else "",
        "model": reqs[0].model if reqs else "",
    }
    tmp = path.with_name(f".{path.name}.tmp")
    save_file({"embeddings": vecs}, str(tmp), metadata=meta)
    tmp.replace(path)


def load_debias_face(path: Path, index: int) -> tuple[np.ndarray, str, dict[str, Any]]:
    """Face `index` of a debias run: (vector (D,), embedder id, provenance)."""
    from safetensors import SafetensorError, safe_open

    if not path.exists():
        raise BadInput(f"{path} does not exist (give the folder written by face0 debias).")
    try:
        with safe_open(str(path), framework="numpy") as f:
            meta = f.metadata() or {}
            vecs = f.get_tensor("embeddings")
    except (SafetensorError, OSError, KeyError) as e:
        raise BadInput(f"{path} is not a faces file written by face0 debias.") from e
    if meta.get("format") != "face0-debias-faces":
        raise BadInput(f"{path} is not a faces file written by face0 debias.")
    if not 0 <= index < len(vecs):
        raise ParameterError(f"--index must be between 0 and {len(vecs) - 1}, got {index}.")
    seeds = json.loads(meta.get("seeds", "[]"))
    prov = {
        "sampler": "gmm",
        "seed": seeds[index] if index < len(seeds) else None,
        "gmm": meta.get("gmm"),
        "model": meta.get("model"),
        "from_debias": str(path),
        "index": index,
        "prompt": meta.get("prompt"),
    }
    return np.asarray(vecs[index], np.float32), meta.get("embedder_id", ""), prov
