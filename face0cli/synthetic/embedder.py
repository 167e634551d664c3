"""The synthetic world's face embedder behind face0's `Embedder` interface (InceptionResnetV1's stand-in).

Framing: the real MTCNN finds only about 40% of the procedural portraits (measured by `face0 synth build`'s
detect stage), under the >= 95% that would let the synthetic world go through it as photos do. So a 64 x 64 image
(the synthetic world's portrait size) is taken whole: its frame is the face crop, as the renderer draws the head
in the frame's middle. Any other image (a photo) goes through MTCNN like the full world: the largest face is found
and framed the way the portraits frame a head, then resized to 64 x 64.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

from face0cli.config import CropConfig
from face0cli.faces.embedders import Detection
from face0cli.synthetic.nets import embed_images, load_net

PORTRAIT = 64
# the head's box in a portrait: MTCNN's box is about this share of the frame's side, centred this far down
FACE_SHARE = 0.46
CENTRE_DROP = 0.04


def embedder_id(folder: Path) -> str:
    """synthetic/<arch>-<first 12 hex of the weights' sha256>: names the network and its weights."""
    digest = hashlib.sha256((Path(folder) / "model.safetensors").read_bytes()).hexdigest()[:12]
    return f"synthetic/facenet-{digest}"


class SyntheticEmbedder:
    """Embed faces with the synthetic world's FaceNet (a folder with model.safetensors + config.json).

    Attributes:
        id: synthetic/facenet-<sha>; dim: 128.
    """

    def __init__(self, folder: str | Path, device: str = "cpu", cfg: CropConfig = CropConfig()) -> None:
        self.folder = Path(folder)
        self.net, config = load_net(self.folder)
        self.net.to(device)
        self.device = device
        self.dim = int(config["dim"])
        self.id = embedder_id(self.folder)
        self.cfg = cfg
        self._mtcnn = None

    def __repr__(self) -> str:
        return f"SyntheticEmbedder({self.id})"

    def detect(self, image: Image.Image) -> list[Detection]:
        """A portrait-sized image is one face (its whole frame); any other image goes through MTCNN."""
        if image.size == (PORTRAIT, PORTRAIT):
            return [Detection((0.0, 0.0, float(PORTRAIT), float(PORTRAIT)), 1.0)]
        if self._mtcnn is None:
            from face0cli.faces.embedders import MtcnnDetector

            self._mtcnn = MtcnnDetector(self.device, self.cfg)  # type: ignore[assignment]
        return self._mtcnn.detect(image)  # type: ignore[attr-defined]

    def crop(self, image: Image.Image, box: tuple[float, float, float, float]) -> Image.Image:
        """The 64 x 64 portrait the network takes: the image itself, or a photo's face framed as a portrait."""
        if image.size == (PORTRAIT, PORTRAIT):
            return image.convert("RGB")
        x0, y0, x1, y1 = box
        side = max(x1 - x0, y1 - y0) / FACE_SHARE
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2 + CENTRE_DROP * side
        frame = (int(cx - side / 2), int(cy - side / 2), int(cx + side / 2), int(cy + side / 2))
        pad = max(0, -frame[0], -frame[1], frame[2] - image.width, frame[3] - image.height)
        padded = ImageOps.expand(image.convert("RGB"), border=pad, fill=(128, 128, 128)) if pad else image
        shifted = tuple(v + pad for v in frame)
        return padded.crop(shifted).resize((PORTRAIT, PORTRAIT), Image.Resampling.BOX)  # type: ignore[arg-type]

    @torch.no_grad()
    def embed(self, crops: list[Image.Image]) -> np.ndarray:
        """(N, 128) float32 unit vectors of N 64 x 64 crops."""
        if not crops:
            return np.zeros((0, self.dim), np.float32)
        arr = np.stack([np.asarray(c.convert("RGB").resize((PORTRAIT, PORTRAIT))) for c in crops])
        return embed_images(self.net, arr)
