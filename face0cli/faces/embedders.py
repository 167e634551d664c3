"""The face path (paper §2.1, §2.3): photo -> MTCNN box -> margin crop 160x160 -> InceptionResnetV1 -> 1792-d.

`Embedder` is the interface the rest of face0 uses (prep, embed, generate); `FacenetEmbedder` is the paper's
embedder built from facenet-pytorch, the only module that imports it. torch and facenet_pytorch are imported
inside functions, so importing this module stays cheap for commands that never embed a face.
"""

from __future__ import annotations

import math
import os
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np
from PIL import Image, ImageOps

from face0cli.config import CropConfig
from face0cli.errors import BadInput, EmbedderMismatch, FaceTooSmall, MissingWeights, NoFaceFound, one_line
from face0cli.faces.images import file_sha256, load_image

if TYPE_CHECKING:
    import torch

OFFICIAL_WEIGHTS = "20180402-114759-vggface2.pt"
"""facenet-pytorch's VGGFace2 InceptionResnetV1 file, as it caches it under $TORCH_HOME/checkpoints."""
WEIGHTS_ENV = "FACE0_EMBEDDER_WEIGHTS"
FEATURE_DIM = 1792
"""Width of InceptionResnetV1's pooled features (the paper drops dropout, last_linear and last_bn)."""
_HEAD_KEYS = ("logits.",)
"""Classifier keys of the training checkpoint (8631 VGGFace2 identities); the embedder never uses them."""


@dataclass(frozen=True)
class Detection:
    """One face found by the detector (paper §2.3).

    Args:
        box: (x0, y0, x1, y1) in image pixels, floats; may reach past the image border.
        prob: detector confidence in [0, 1].
    """

    box: tuple[float, float, float, float]
    prob: float

    @property
    def width(self) -> float:
        return self.box[2] - self.box[0]

    @property
    def height(self) -> float:
        return self.box[3] - self.box[1]

    @property
    def size(self) -> float:
        """The shorter side in pixels: the paper drops faces under 20 px."""
        return min(self.width, self.height)

    @property
    def area(self) -> float:
        return max(self.width, 0.0) * max(self.height, 0.0)

    def to_json(self) -> dict[str, Any]:
        return {"box": [float(v) for v in self.box], "prob": float(self.prob), "size": float(self.size)}


@dataclass(frozen=True)
class FaceResult:
    """A photo's largest face and its embedding (paper §2.1, §2.3).

    Args:
        source: the photo's path as given.
        sha256: hex SHA-256 of the photo file.
        detection: the detector's box and confidence.
        crop_box: (x0, y0, x1, y1) integer box cut from the photo: the detection plus margins, clipped.
        vector: (D,) float32 face embedding.
        crop: the (size, size) RGB crop that was embedded.
    """

    source: str
    sha256: str
    detection: Detection
    crop_box: tuple[int, int, int, int]
    vector: np.ndarray
    crop: Image.Image = field(repr=False, compare=False)

    def to_json(self) -> dict[str, Any]:
        """Provenance as a JSON-ready dict: no crop, and the vector's norm instead of the vector."""
        return {
            "source": self.source,
            "sha256": self.sha256,
            "detection": self.detection.to_json(),
            "crop_box": [int(v) for v in self.crop_box],
            "dim": int(self.vector.shape[0]),
            "norm": float(np.linalg.norm(self.vector)),
        }


@runtime_checkable
class Embedder(Protocol):
    """Detects faces, crops them and embeds the crops (paper §2.1, §2.3). face0 uses only this interface.

    Attributes:
        id: names the embedder and its weights; vectors of different ids are never mixed.
        dim: D, the embedding width.
    """

    id: str
    dim: int

    def detect(self, image: Image.Image) -> list[Detection]:
        """All faces in an RGB image, largest (by area) first; [] when there is none."""
        ...

    def crop(self, image: Image.Image, box: tuple[float, float, float, float]) -> Image.Image:
        """The (size, size) RGB crop the embedder takes for a detector box."""
        ...

    def embed(self, crops: list[Image.Image]) -> np.ndarray:
        """Embed N crops into an (N, D) float32 array."""
        ...


def margin_box(
    box: Sequence[float], image_size: tuple[int, int], cfg: CropConfig = CropConfig()
) -> tuple[int, int, int, int]:
    """Grow a detector box by the paper's margins and clip it to the image (paper §2.3).

    Margins are cfg.margin_left / right / top / bottom pixels (10, 10, 33, 15); the grown box is rounded
    outward (floor for x0, y0; ceil for x1, y1) and clipped to [0, W] x [0, H].

    Args:
        box: (x0, y0, x1, y1) floats.
        image_size: (W, H) of the image.
        cfg: the margins.

    Returns:
        (x0, y0, x1, y1) ints with 0 <= x0 < x1 <= W and 0 <= y0 < y1 <= H.

    Raises:
        BadInput: the grown box does not overlap the image.
    """
    width, height = image_size
    x0 = max(0, math.floor(box[0] - cfg.margin_left))
    y0 = max(0, math.floor(box[1] - cfg.margin_top))
    x1 = min(width, math.ceil(box[2] + cfg.margin_right))
    y1 = min(height, math.ceil(box[3] + cfg.margin_bottom))
    if x1 <= x0 or y1 <= y0:
        raise BadInput(f"the face box {tuple(box)} lies outside the {width}x{height} image.")
    return x0, y0, x1, y1


def pad_resize(image: Image.Image, size: int) -> Image.Image:
    """Resize to fit (size, size) keeping the aspect ratio, centred on black padding (paper §2.3).

    Args:
        image: any PIL image (W, H).
        size: side of the square output.

    Returns:
        A (size, size) image in the input's mode.
    """
    return ImageOps.pad(image, (size, size), color=0, centering=(0.5, 0.5))


def default_weights_path() -> Path:
    """Where facenet-pytorch caches the VGGFace2 weights: $TORCH_HOME/checkpoints/20180402-114759-vggface2.pt.

    TORCH_HOME defaults as in torch.hub: $XDG_CACHE_HOME/torch, else ~/.cache/torch.
    """
    cache = os.environ.get("XDG_CACHE_HOME", os.path.join("~", ".cache"))
    torch_home = os.path.expanduser(os.environ.get("TORCH_HOME", os.path.join(cache, "torch")))
    return Path(torch_home) / "checkpoints" / OFFICIAL_WEIGHTS


def resolve_weights(weights: str | os.PathLike[str] | None = None) -> Path:
    """Find the InceptionResnetV1 weights file (paper §2.1 uses the VGGFace2 model); never downloads.

    Order: the explicit path (a folder means the official file name in it), else $FACE0_EMBEDDER_WEIGHTS,
    else facenet-pytorch's cache file (`default_weights_path`).

    Raises:
        MissingWeights: the file is not there; the message says which file, where, and how to point to it.
    """
    how = f"--embedder-weights or {WEIGHTS_ENV}"
    given = weights if weights is not None else os.environ.get(WEIGHTS_ENV) or None
    if given is None:
        path = default_weights_path()
        if path.is_file():
            return path
        raise MissingWeights(
            f"the face embedder weights {OFFICIAL_WEIGHTS} (facenet-pytorch's VGGFace2 InceptionResnetV1) "
            f"are not in {path.parent}; download the file there, or point {how} to it."
        )
    path = Path(given).expanduser()
    if path.is_dir():
        path = path / OFFICIAL_WEIGHTS
    if not path.is_file():
        source = "--embedder-weights" if weights is not None else WEIGHTS_ENV
        raise MissingWeights(
            f"the face embedder weights file {path} given by {source} does not exist; it should be "
            f"{OFFICIAL_WEIGHTS} (facenet-pytorch's VGGFace2 InceptionResnetV1) or a state dict like it."
        )
    return path


class FacenetEmbedder:
    """The paper's face embedder (§2.1, §2.3): facenet-pytorch's MTCNN, margin crop, InceptionResnetV1.

    The network is InceptionResnetV1 up to and including avgpool_1a, flattened (dropout, last_linear and
    last_bn dropped): a 1792-d vector per face. Crops are standardised as facenet does, (x - 127.5) / 128.

    Args:
        weights: a .pt or .safetensors state dict of InceptionResnetV1 (logits.* keys allowed and ignored), or
            a folder holding 20180402-114759-vggface2.pt; None: $FACE0_EMBEDDER_WEIGHTS, then facenet's cache.
        seed: random weights from this seed instead of a file (tests only; the vectors mean nothing).
        device: torch device for both networks.
        cfg: detector minimum size, margins and crop size.

    Raises:
        MissingWeights: no weights file and no seed.
        BadInput: the weights file is not an InceptionResnetV1 state dict.
    """

    dim: int = FEATURE_DIM

    def __init__(
        self,
        weights: str | os.PathLike[str] | None = None,
        *,
        seed: int | None = None,
        device: str = "cpu",
        cfg: CropConfig = CropConfig(),
    ) -> None:
        self.cfg = cfg
        self.device = device
        path = None if seed is not None else resolve_weights(weights)  # fail before the slow imports
        full, self.id = facenet_network(path, seed=seed)
        self.weights_path: Path | None = path
        self.net = _fast(_features(full).to(device).eval())
        self.detector = MtcnnDetector(device, cfg)
        self.mtcnn = self.detector.mtcnn

    def __repr__(self) -> str:
        return f"FacenetEmbedder(id={self.id!r}, device={self.device!r})"

    def detect(self, image: Image.Image) -> list[Detection]:
        """All faces MTCNN finds in an RGB image, largest area first (paper §2.3); [] when none."""
        return self.detector.detect(image)

    def crop(self, image: Image.Image, box: tuple[float, float, float, float]) -> Image.Image:
        """The detector box plus margins, clipped, resized with padding to (size, size) RGB (paper §2.3)."""
        return pad_resize(image.convert("RGB").crop(margin_box(box, image.size, self.cfg)), self.cfg.size)

    def embed(self, crops: list[Image.Image]) -> np.ndarray:
        """Embed crops into InceptionResnetV1's pooled features (paper §2.1).

        Args:
            crops: N RGB images; any not (size, size) are pad-resized first.

        Returns:
            (N, 1792) float32.
        """
        if not crops:
            return np.zeros((0, self.dim), np.float32)
        import torch

        with torch.inference_mode():
            out = self.net(facenet_input(crops, self.cfg.size, self.device))
        return out.float().cpu().numpy().astype(np.float32, copy=False)


class MtcnnDetector:
    """facenet-pytorch's MTCNN, the paper's detector (§2.3): all faces of an image, largest area first.

    Args:
        device: torch device of the detector.
        cfg: cfg.min_face is MTCNN's minimum face size in pixels (20 in the paper).
    """

    def __init__(self, device: str = "cpu", cfg: CropConfig = CropConfig()) -> None:
        from facenet_pytorch import MTCNN

        self.cfg = cfg
        self.mtcnn = _fast(MTCNN(min_face_size=cfg.min_face, keep_all=True, device=device).eval())

    def detect(self, image: Image.Image) -> list[Detection]:
        """All faces in an RGB image (W, H), largest area first; [] when none (or the image is under the minimum)."""
        if min(image.size) < self.cfg.min_face:
            return []  # MTCNN's image pyramid is empty for images smaller than its minimum face
        import torch

        with torch.inference_mode():
            boxes, probs = self.mtcnn.detect(image.convert("RGB"))
        if boxes is None:  # MTCNN.detect answers (None, [None]) when there is no face
            return []
        box_arr = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        prob_arr = np.asarray(probs, dtype=np.float64).reshape(-1)
        found = [Detection(tuple(float(v) for v in b), float(p)) for b, p in zip(box_arr, prob_arr)]  # type: ignore[arg-type]
        return sorted(found, key=lambda d: d.area, reverse=True)


def facenet_id(path: Path | None, seed: int | None = None) -> str:
    """The embedder id of InceptionResnetV1 weights: the official VGGFace2 file, another file, or a seed."""
    if path is None:
        return f"inception-resnet-v1/random-seed{seed}"
    if path.name == OFFICIAL_WEIGHTS:
        return "inception-resnet-v1/vggface2"
    return f"inception-resnet-v1/sha256:{file_sha256(path)[:12]}"


def facenet_network(path: Path | None, *, seed: int | None = None) -> tuple[Any, str]:
    """The full InceptionResnetV1 (eval, 512-d L2-normalised output) from a weights file or a seed, and its id.

    Args:
        path: a resolved weights file (resolve_weights), or None with a seed (random weights, tests only).
    """
    import torch
    from facenet_pytorch import InceptionResnetV1

    if path is None:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(seed or 0))
            net = InceptionResnetV1(pretrained=None)
    else:
        net = InceptionResnetV1(pretrained=None)
        load_facenet_weights(net, path)
    return net.eval(), facenet_id(path, seed)


def facenet_input(crops: Sequence[Image.Image], size: int, device: str) -> torch.Tensor:
    """(N, 3, size, size) input as facenet standardises it, (x - 127.5) / 128; crops not size x size are padded."""
    import torch
    from facenet_pytorch import fixed_image_standardization

    arrays = [
        np.asarray(c.convert("RGB") if c.size == (size, size) else pad_resize(c.convert("RGB"), size)) for c in crops
    ]
    x = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float()
    return fixed_image_standardization(x).to(device)


def _fast(module: Any) -> Any:
    """Channels-last convolutions: ~30% faster MTCNN and ~25% faster embedding on CPU, same numbers to 1e-7."""
    import torch

    return module.to(memory_format=torch.channels_last)


def _features(full: Any) -> torch.nn.Sequential:
    """InceptionResnetV1's own submodules up to avgpool_1a, then flatten: (N, 3, 160, 160) -> (N, 1792)."""
    import torch

    children = list(full.named_children())
    names = [name for name, _ in children]
    end = names.index("avgpool_1a") + 1  # drops dropout, last_linear, last_bn (and logits)
    return torch.nn.Sequential(OrderedDict([*children[:end], ("flatten", torch.nn.Flatten())]))


def load_facenet_weights(model: Any, path: Path) -> None:
    """Load a .pt / .safetensors InceptionResnetV1 state dict strictly, ignoring the logits.* head."""
    import torch

    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state: Any = load_file(str(path), device="cpu")
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # any failure to read the file is the user's file's fault
        raise BadInput(f"the face embedder weights {path} cannot be read as a state dict ({one_line(e)}).") from e
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise BadInput(f"the face embedder weights {path} are not a state dict of tensors.")
    state = {k: v for k, v in state.items() if not str(k).startswith(_HEAD_KEYS)}
    try:
        result = model.load_state_dict(state, strict=False)
    except RuntimeError as e:
        raise BadInput(f"the face embedder weights {path} do not fit InceptionResnetV1 ({one_line(e)}).") from e
    problems = [f"missing {', '.join(result.missing_keys[:3])}"] if result.missing_keys else []
    if result.unexpected_keys:
        problems.append(f"unexpected {', '.join(result.unexpected_keys[:3])}")
    if problems:
        raise BadInput(
            f"the face embedder weights {path} are not an InceptionResnetV1 state dict ({'; '.join(problems)})."
        )


# ------------------------------------------------------------------------------------------------ photos


@dataclass(frozen=True)
class _Found:
    path: Path
    detection: Detection
    crop_box: tuple[int, int, int, int]
    crop: Image.Image


def _find_face(embedder: Embedder, path: str | os.PathLike[str], cfg: CropConfig) -> _Found:
    """Load a photo, keep its largest face (paper §2.3) and crop it; errors name the photo."""
    image = load_image(path, max_pixels=cfg.max_pixels)
    detections = embedder.detect(image)
    if not detections:
        raise NoFaceFound(f"no face was found in {path}.")
    face = max(detections, key=lambda d: d.area)
    if face.size < cfg.min_face:
        raise FaceTooSmall(
            f"the largest face in {path} is {face.size:.0f} px, under the minimum of {cfg.min_face} px; "
            "use a closer or larger photo."
        )
    crop_box = margin_box(face.box, image.size, cfg)
    return _Found(Path(path), face, crop_box, embedder.crop(image, face.box))


def embed_photos(
    embedder: Embedder, paths: Sequence[str | os.PathLike[str]], cfg: CropConfig | None = None
) -> list[FaceResult]:
    """Embed the largest face of each photo, with one embed call for all crops (paper §2.1, §2.3).

    Every photo is checked (readable, has a face of at least cfg.min_face px) before anything is embedded.

    Args:
        embedder: detects, crops and embeds.
        paths: P photo files.
        cfg: minimum face size, margins (for crop_box) and pixel limit; default the embedder's own `cfg`.

    Returns:
        P FaceResults in the order of paths, each with a (D,) float32 vector.

    Raises:
        BadInput / ImageError: a photo cannot be read. NoFaceFound: a photo has no face. FaceTooSmall: its
        largest face is under cfg.min_face px.
    """
    cfg = cfg if cfg is not None else getattr(embedder, "cfg", CropConfig())
    found = [_find_face(embedder, p, cfg) for p in paths]
    vectors = np.asarray(embedder.embed([f.crop for f in found]), dtype=np.float32)
    if vectors.shape != (len(found), embedder.dim):
        raise EmbedderMismatch(
            f"the embedder {embedder.id} returned an array of {vectors.shape} for {len(found)} faces of "
            f"dimension {embedder.dim}."
        )
    return [
        FaceResult(str(f.path), file_sha256(f.path), f.detection, f.crop_box, vectors[i].copy(), f.crop)
        for i, f in enumerate(found)
    ]


def embed_photo(embedder: Embedder, path: str | os.PathLike[str], cfg: CropConfig | None = None) -> FaceResult:
    """Embed the largest face in one photo (paper §2.1, §2.3); see `embed_photos` for cfg and errors."""
    return embed_photos(embedder, [path], cfg)[0]


def mean_embedding(results: Sequence[FaceResult]) -> np.ndarray:
    """The mean of several photos' vectors, one identity from many photos (paper §3.3).

    Args:
        results: N >= 1 FaceResults with (D,) vectors.

    Returns:
        (D,) float32.

    Raises:
        BadInput: no results. EmbedderMismatch: vectors of different shapes.
    """
    if not results:
        raise BadInput("there are no face vectors to average.")
    shapes = {r.vector.shape for r in results}
    if len(shapes) != 1:
        raise EmbedderMismatch(f"the face vectors have different shapes {sorted(shapes)}; they cannot be averaged.")
    return np.mean(np.stack([r.vector for r in results]).astype(np.float64), axis=0).astype(np.float32)
