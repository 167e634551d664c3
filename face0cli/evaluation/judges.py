"""Judges for `face0 eval` (Face0 paper §4.1-4.3): CLIP for text alignment and networks that embed faces.

A `Judge` embeds the largest face of each image it is given (None where there is none), so a generation can be
compared with a reference photo by cosine similarity. All judges of a run share one `FaceFinder` (MTCNN, the
paper's detector, §2.3), so they judge the same face of an image. Judges are built by name from `JUDGES`; a new
one plugs in with `register_judge` (the synthetic world's judge is registered so, as `synthetic`).

Implementations:
    clip-face  CLIP's image tower on the face crop: the paper's face judge (§4.1).
    facenet    InceptionResnetV1's own L2-normalised 512-d output (last_linear + last_bn kept). With the weights the
               model was trained on, this is the conditioning encoder itself: the report warns (scores inflated).
    dlib       dlib's ResNet face descriptor (128-d) with the weights of the face-recognition-models package;
               optional, needs `pip install dlib face-recognition-models`.
    synthetic  the synthetic world's independent judge (face0cli.synthetic.judge), whole 64 px frames; the
               default model ships it.

torch and transformers are imported inside functions (facenet-pytorch only in faces.py), so importing this
module stays cheap.
"""

from __future__ import annotations

import difflib
import hashlib
import os
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
from PIL import Image

from face0cli.config import CropConfig
from face0cli.errors import BadInput, Face0Error, MissingWeights
from face0cli.faces.embedders import (
    Detection,
    MtcnnDetector,
    facenet_id,
    facenet_input,
    facenet_network,
    margin_box,
    pad_resize,
    resolve_weights,
)

DEFAULT_CLIP = "openai/clip-vit-large-patch14"
"""CLIP used for text alignment and by the clip-face judge unless the spec names another (`clip:`)."""


class JudgeUnavailable(Face0Error):
    """A judge's optional dependency or weights are not installed here; the message says what to install."""

    exit_code = 8


# ------------------------------------------------------------------------------------------------ detection


class Detector(Protocol):
    """Anything that finds faces: `detect(image) -> [Detection]`, largest first (faces.Embedder satisfies it)."""

    def detect(self, image: Image.Image) -> list[Detection]: ...


class FaceFinder:
    """The largest face of an image, shared by all judges of a run so they judge the same face (paper §2.3).

    Faces whose shorter side is under cfg.min_face pixels count as no face. Results are memoised on the image's
    pixels, so several judges looking at one image run the detector once.

    Args:
        detector: finds faces; default an `MtcnnDetector` built on first use.
        device: device of the default detector.
        cfg: minimum face size and the crop margins judges use.
    """

    def __init__(
        self, detector: Detector | None = None, *, device: str = "cpu", cfg: CropConfig = CropConfig()
    ) -> None:
        self._detector = detector
        self.device = device
        self.cfg = cfg
        self._memo: OrderedDict[bytes, Detection | None] = OrderedDict()

    @property
    def detector(self) -> Detector:
        if self._detector is None:
            self._detector = MtcnnDetector(self.device, self.cfg)
        return self._detector

    def largest(self, image: Image.Image) -> Detection | None:
        """The largest face of an RGB image, or None when there is none of at least cfg.min_face pixels."""
        rgb = image.convert("RGB")
        key = hashlib.blake2b(rgb.tobytes(), digest_size=16, person=b"face0-finder").digest()
        key += f"{rgb.size}".encode()
        if key in self._memo:
            self._memo.move_to_end(key)
            return self._memo[key]
        found = self.detector.detect(rgb)
        face = max(found, key=lambda d: d.area) if found else None
        if face is not None and face.size < self.cfg.min_face:
            face = None
        self._memo[key] = face
        if len(self._memo) > 256:
            self._memo.popitem(last=False)
        return face

    def crop(self, image: Image.Image, face: Detection) -> Image.Image:
        """The detector box grown by the paper's margins (§2.3), clipped to the image, RGB (not resized)."""
        rgb = image.convert("RGB")
        return rgb.crop(margin_box(face.box, rgb.size, self.cfg))


# ----------------------------------------------------------------------------------------------------- CLIP


def _unit_rows(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return (x / np.maximum(norms, 1e-12)).astype(np.float32)


def _features(out: Any) -> Any:
    """CLIP's projected features: transformers 5 returns an output with pooler_output, 4.x a tensor."""
    return out.pooler_output if hasattr(out, "pooler_output") else out


class Clip:
    """A CLIP model that embeds images and texts into one space (paper §4.1: text alignment is their cosine).

    Built by `load_clip`. Embeddings are L2-normalised float32 rows.

    Attributes:
        id: the path or hub id it was loaded from.
    """

    def __init__(self, model: Any, tokenizer: Any, image_processor: Any, id: str, device: str = "cpu") -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.image_processor = image_processor
        self.id = id
        self.device = device
        self.max_length = int(getattr(model.config.text_config, "max_position_embeddings", 77))

    def __repr__(self) -> str:
        return f"Clip(id={self.id!r}, device={self.device!r})"

    def embed_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        """N RGB images -> (N, P) unit rows of CLIP's image embedding."""
        if not images:
            return np.zeros((0, int(self.model.config.projection_dim)), np.float32)
        import torch

        pixels = self.image_processor(images=[im.convert("RGB") for im in images], return_tensors="pt")
        with torch.inference_mode():
            out = _features(self.model.get_image_features(pixel_values=pixels["pixel_values"].to(self.device)))
        return _unit_rows(out.float().cpu().numpy())

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        """N prompts (truncated to CLIP's context) -> (N, P) unit rows of CLIP's text embedding."""
        if not texts:
            return np.zeros((0, int(self.model.config.projection_dim)), np.float32)
        import torch

        tokens = self.tokenizer(
            list(texts), padding="max_length", truncation=True, max_length=self.max_length, return_tensors="pt"
        )
        with torch.inference_mode():
            out = _features(
                self.model.get_text_features(
                    input_ids=tokens["input_ids"].to(self.device),
                    attention_mask=tokens["attention_mask"].to(self.device),
                )
            )
        return _unit_rows(out.float().cpu().numpy())


def _offline() -> bool:
    return any(
        os.environ.get(k, "").lower() in ("1", "true", "yes", "on") for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    )


def load_clip(path_or_id: str | os.PathLike[str], *, device: str = "cpu") -> Clip:
    """Load CLIP (model, tokenizer, image processor) from a local directory or a hub id (paper §4.1).

    A local directory is read with local_files_only; a hub id is read from the Hugging Face cache first and
    fetched only when not offline (HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE unset).

    Args:
        path_or_id: a directory holding config.json, model weights, tokenizer and preprocessor_config.json, or a
            hub id such as openai/clip-vit-large-patch14.
        device: torch device for the model.

    Raises:
        MissingWeights: it is neither a directory nor available from the hub here; the one sentence says which
            model, where to put it, and that `clip: null` turns text alignment off.
    """
    from transformers import CLIPImageProcessor, CLIPModel, CLIPTokenizer

    name = str(path_or_id)
    path = Path(name).expanduser()
    local = path.is_dir()
    looks_like_path = name.startswith(("/", ".", "~")) or name.count("/") > 1 or path.exists()
    fix = (
        "download it (e.g. `huggingface-cli download MODEL`) or point `clip:` in the spec to a local copy, "
        "or set `clip: null` to turn text alignment off"
    )
    if not local and looks_like_path:
        raise MissingWeights(
            f"the CLIP model for text alignment is not at {path} (no such directory); "
            f"{fix.replace('MODEL', DEFAULT_CLIP)}."
        )
    source = str(path) if local else name
    attempts = [True] if local or _offline() else [True, False]
    last: Exception | None = None
    for local_only in attempts:
        try:
            model = CLIPModel.from_pretrained(source, local_files_only=local_only)
            tokenizer = CLIPTokenizer.from_pretrained(source, local_files_only=local_only)
            processor = CLIPImageProcessor.from_pretrained(source, local_files_only=local_only)
            break
        except (OSError, ValueError) as e:
            last = e
    else:
        where = f"in {path}" if local else "in the Hugging Face cache and could not be fetched"
        raise MissingWeights(
            f"the CLIP model '{name}' used for text alignment is not usable {where} "
            f"({type(last).__name__}); {fix.replace('MODEL', name if not local else DEFAULT_CLIP)}."
        ) from last
    model = model.to(device).eval()  # type: ignore[arg-type]
    return Clip(model, tokenizer, processor, str(path.resolve()) if local else name, device)


# --------------------------------------------------------------------------------------------------- judges


@runtime_checkable
class Judge(Protocol):
    """Embeds the largest face of images for face alignment (paper §4.1).

    Attributes:
        name: the judge's name in the registry and in results (e.g. "clip-face").
        id: names the network and its weights, e.g. "clip-face:openai/clip-vit-large-patch14".
        encoder_id: the same network written as a face embedder id (faces.FacenetEmbedder.id); when it equals the
            model's embedder id the judge is the conditioning encoder and its scores are inflated. "" if no
            face0 embedder shares its weights.
    """

    name: str
    id: str
    encoder_id: str

    def embed_faces(self, images: Sequence[Image.Image]) -> list[np.ndarray | None]:
        """For each of N images, the (D,) unit embedding of its largest face, or None when it has no face."""
        ...


class ClipFaceJudge:
    """CLIP's image tower on the face crop, the paper's face judge (§4.1).

    The crop is the detector box grown by the paper's margins (§2.3), padded to a square so CLIP's centre crop
    keeps the whole face.

    Args:
        clip: a loaded CLIP (`load_clip`).
        finder: the run's shared FaceFinder.
    """

    name = "clip-face"

    def __init__(self, clip: Clip, finder: FaceFinder) -> None:
        self.clip = clip
        self.finder = finder
        self.id = f"clip-face:{clip.id}"
        self.encoder_id = f"clip/{clip.id}"

    def __repr__(self) -> str:
        return f"ClipFaceJudge(id={self.id!r})"

    def embed_faces(self, images: Sequence[Image.Image]) -> list[np.ndarray | None]:
        faces = [self.finder.largest(im) for im in images]
        crops = []
        for im, face in zip(images, faces):
            if face is not None:
                crop = self.finder.crop(im, face)
                crops.append(pad_resize(crop, max(crop.size)))
        vectors = iter(self.clip.embed_images(crops))
        return [next(vectors) if face is not None else None for face in faces]


def facenet_encoder_id(weights: Path | None, seed: int | None = None) -> str:
    """The embedder id faces.FacenetEmbedder gives the same InceptionResnetV1 weights (for the warning)."""
    return facenet_id(weights, seed)


class FacenetJudge:
    """InceptionResnetV1's own identity embedding: the full network, L2-normalised 512-d (facenet-pytorch).

    Unlike the conditioning features (faces.FacenetEmbedder: 1792-d, last layers dropped, paper §2.1) this keeps
    last_linear and last_bn, as face verification uses it. The crop is the paper's margin crop at 160x160 (§2.3).
    With the model's own weights file this judge is the conditioning encoder: the report warns.

    Args:
        weights: as faces.resolve_weights: a state dict file or folder; None: $FACE0_EMBEDDER_WEIGHTS, then
            facenet-pytorch's cache file.
        finder: the run's shared FaceFinder.
        device: torch device.
        seed: random weights from this seed instead of a file (tests only).

    Raises:
        MissingWeights: no weights file (and no seed). BadInput: the file is not an InceptionResnetV1 state dict.
    """

    name = "facenet"

    def __init__(
        self,
        weights: str | os.PathLike[str] | None = None,
        *,
        finder: FaceFinder,
        device: str = "cpu",
        seed: int | None = None,
    ) -> None:
        path = None if seed is not None else resolve_weights(weights)
        net, self.encoder_id = facenet_network(path, seed=seed)  # the same file logic as the conditioning embedder
        self.net = net.to(device).eval()
        self.finder = finder
        self.device = device
        self.id = f"facenet:{self.encoder_id}/512"
        self.weights_path = path

    def __repr__(self) -> str:
        return f"FacenetJudge(id={self.id!r})"

    def embed_faces(self, images: Sequence[Image.Image]) -> list[np.ndarray | None]:
        import torch

        faces = [self.finder.largest(im) for im in images]
        crops = [self.finder.crop(im, face) for im, face in zip(images, faces) if face is not None]
        if not crops:
            return [None] * len(images)
        with torch.inference_mode():
            out = self.net(facenet_input(crops, self.finder.cfg.size, self.device))  # normalised inside
        vectors = iter(_unit_rows(out.float().cpu().numpy()))
        return [next(vectors) if face is not None else None for face in faces]


DLIB_INSTALL = "pip install dlib face-recognition-models"


class DlibJudge:
    """dlib's ResNet face descriptor (128-d) on the largest face, with face-recognition-models' weights.

    dlib aligns the face with its 5-point landmark model inside the detector box, then embeds the aligned chip.

    Args:
        finder: the run's shared FaceFinder (the box dlib aligns in).
        num_jitters: dlib's re-sampling count (1 = no jitter).

    Raises:
        JudgeUnavailable: dlib or face_recognition_models cannot be imported here.
    """

    name = "dlib"

    def __init__(self, *, finder: FaceFinder, num_jitters: int = 1) -> None:
        try:
            import dlib
            import face_recognition_models
        except ImportError as e:
            raise JudgeUnavailable(
                f"the dlib face judge needs dlib and the face-recognition-models weights ({e.name} is not "
                f"installed); run `{DLIB_INSTALL}` or choose another judge."
            ) from e
        self._dlib = dlib
        self.shape_predictor = dlib.shape_predictor(face_recognition_models.pose_predictor_five_point_model_location())
        self.encoder = dlib.face_recognition_model_v1(face_recognition_models.face_recognition_model_location())
        self.finder = finder
        self.num_jitters = int(num_jitters)
        self.id = "dlib:dlib_face_recognition_resnet_model_v1"
        self.encoder_id = "dlib/resnet-v1"

    def __repr__(self) -> str:
        return f"DlibJudge(id={self.id!r})"

    def embed_faces(self, images: Sequence[Image.Image]) -> list[np.ndarray | None]:
        out: list[np.ndarray | None] = []
        for im in images:
            face = self.finder.largest(im)
            if face is None:
                out.append(None)
                continue
            pixels = np.asarray(im.convert("RGB"))
            h, w = pixels.shape[:2]
            x0, y0, x1, y1 = (int(round(v)) for v in face.box)
            rect = self._dlib.rectangle(max(0, x0), max(0, y0), min(w - 1, x1), min(h - 1, y1))
            shape = self.shape_predictor(pixels, rect)
            desc = np.asarray(self.encoder.compute_face_descriptor(pixels, shape, self.num_jitters), np.float32)
            out.append(_unit_rows(desc.reshape(1, -1))[0])
        return out


# ------------------------------------------------------------------------------------------------- registry


@dataclass
class JudgeContext:
    """What judge factories may use: the device, the shared FaceFinder and CLIP models, facenet weights.

    Attributes:
        device: torch device for the judges' networks.
        finder: the run's FaceFinder (every judge must use it).
        clip_id: the spec's CLIP (`clip:`), the default model of clip-face; None when text alignment is off.
        embedder_weights: default InceptionResnetV1 weights for facenet (as faces.resolve_weights).
        clip_loader: id -> Clip; loaded models are cached, so text alignment and clip-face share one.
    """

    device: str = "cpu"
    finder: FaceFinder = field(default_factory=FaceFinder)
    clip_id: str | None = DEFAULT_CLIP
    embedder_weights: str | os.PathLike[str] | None = None
    clip_loader: Callable[[str], Clip] | None = None
    _clips: dict[str, Clip] = field(default_factory=dict, repr=False)

    def clip(self, path_or_id: str) -> Clip:
        """The CLIP at path_or_id, loaded once per context."""
        if path_or_id not in self._clips:
            loader = self.clip_loader or (lambda name: load_clip(name, device=self.device))
            self._clips[path_or_id] = loader(path_or_id)
        return self._clips[path_or_id]


JudgeFactory = Callable[[JudgeContext, Mapping[str, Any]], Judge]
"""(context, options from the spec) -> a Judge. Options are the spec entry's keys other than `name`."""


def _options(name: str, options: Mapping[str, Any], allowed: Sequence[str]) -> dict[str, Any]:
    unknown = [k for k in options if k not in allowed]
    if unknown:
        takes = f"it takes {', '.join(allowed)}" if allowed else "it takes none"
        raise BadInput(f"the judge '{name}' has no option '{unknown[0]}'; {takes}.")
    return dict(options)


def _make_clip_face(ctx: JudgeContext, options: Mapping[str, Any]) -> Judge:
    opts = _options("clip-face", options, ("model",))
    model = opts.get("model") or ctx.clip_id or DEFAULT_CLIP
    return ClipFaceJudge(ctx.clip(str(model)), ctx.finder)


def _make_facenet(ctx: JudgeContext, options: Mapping[str, Any]) -> Judge:
    opts = _options("facenet", options, ("weights", "seed"))
    seed = opts.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise BadInput(f"the facenet judge's seed must be a whole number, got {seed!r}.")
    weights = opts.get("weights", ctx.embedder_weights)
    return FacenetJudge(weights, finder=ctx.finder, device=ctx.device, seed=seed)


def _make_dlib(ctx: JudgeContext, options: Mapping[str, Any]) -> Judge:
    opts = _options("dlib", options, ("num_jitters",))
    jitters = opts.get("num_jitters", 1)
    if isinstance(jitters, bool) or not isinstance(jitters, int) or jitters < 1:
        raise BadInput(f"the dlib judge's num_jitters must be a whole number >= 1, got {jitters!r}.")
    return DlibJudge(finder=ctx.finder, num_jitters=jitters)


def _make_synthetic(ctx: JudgeContext, options: Mapping[str, Any]) -> Judge:
    from face0cli.synthetic.judge import make_synthetic_judge

    return make_synthetic_judge(ctx, options)


JUDGES: dict[str, JudgeFactory] = {
    "clip-face": _make_clip_face,
    "facenet": _make_facenet,
    "dlib": _make_dlib,
    "synthetic": _make_synthetic,
}
"""Judge factories by name; `register_judge` adds one."""


def register_judge(name: str, factory: JudgeFactory, *, replace: bool = False) -> None:
    """Make a judge available by name in eval specs (`judges: [NAME]`).

    Raises:
        BadInput: the name is taken and replace is False.
    """
    if name in JUDGES and not replace:
        raise BadInput(f"a judge named '{name}' is registered already.")
    JUDGES[name] = factory


def check_judge_name(name: str) -> str:
    """NAME if it is a registered judge, else BadInput naming the registered ones (and the closest)."""
    if name in JUDGES:
        return name
    close = difflib.get_close_matches(name, list(JUDGES), n=1)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    raise BadInput(f"there is no judge named '{name}'{hint}; the judges are {', '.join(sorted(JUDGES))}.")


def make_judge(name: str, options: Mapping[str, Any], ctx: JudgeContext) -> Judge:
    """Build the registered judge NAME with the spec's options.

    Raises:
        BadInput: unknown name or option. JudgeUnavailable / MissingWeights: its dependency or weights are missing.
    """
    judge = JUDGES[check_judge_name(name)](ctx, options)
    if not isinstance(judge, Judge):
        raise BadInput(f"the factory of judge '{name}' did not return a Judge.")
    return judge


def is_conditioning_encoder(judge: Judge, embedder_id: str) -> bool:
    """Whether the judge is the network (and weights) the model was conditioned with (paper §2.1 embedder)."""
    return bool(judge.encoder_id) and bool(embedder_id) and judge.encoder_id == embedder_id


def conditioning_warning(judge: Judge, embedder_id: str) -> str:
    """The report's warning for a judge that is the model's own conditioning encoder."""
    return (
        f"the face judge '{judge.name}' ({judge.id}) is the model's own conditioning encoder ({embedder_id}), "
        "so its face scores are inflated; judge with an independent network (clip-face or dlib) as well."
    )
