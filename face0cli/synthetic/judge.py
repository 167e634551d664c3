"""The synthetic world's independent judge as a `face0 eval` judge (`judges: [synthetic]`).

It wraps the JudgeNet that ships beside the default model (`judge/`: another architecture and seed than the
conditioning embedder, trained on the training identities only), so `face0 eval` can score the default model,
or any model of the synthetic world, without CLIP or downloaded weights. Like the synthetic embedder it sees a
portrait whole: an image is resized to 64 x 64 and the frame is the face (the world's framing), so it finds a
"face" in every image; use it for synthetic-world portraits, not for photos.

Options: `weights`, a judge folder (model.safetensors + config.json as `face0 synth build` writes it; default:
the embedded default model's `judge/`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from face0cli.errors import MissingWeights

SIZE = 64


class SyntheticJudge:
    """JudgeNet's identity vector of each whole (64 x 64) image; `attributes` gives its heads' readings too."""

    name = "synthetic"
    encoder_id = ""  # never the conditioning encoder: another network, trained apart

    def __init__(self, folder: str | Path | None = None) -> None:
        from face0cli.synthetic.default import DEFAULT_MODEL_DIR
        from face0cli.synthetic.nets import JudgeNet, load_net
        from face0cli.synthetic.package import JUDGE_DIR

        self.folder = Path(folder) if folder is not None else DEFAULT_MODEL_DIR / JUDGE_DIR
        weights = self.folder / "model.safetensors"
        if not weights.is_file() or not (self.folder / "config.json").is_file():
            raise MissingWeights(
                f"the synthetic judge needs {weights} and its config.json (made by `face0 synth build`); "
                "pass `weights: FOLDER` in the spec's judge entry."
            )
        net, _ = load_net(self.folder)
        if not isinstance(net, JudgeNet):
            raise MissingWeights(f"{self.folder} holds an embedder, not a judge (its config.json says so).")
        self.net = net
        self.id = f"synthetic:{hashlib.sha256(weights.read_bytes()).hexdigest()[:12]}"

    def __repr__(self) -> str:
        return f"SyntheticJudge({self.folder})"

    @staticmethod
    def _array(images: Sequence[Image.Image]) -> np.ndarray:
        frames = [im.convert("RGB").resize((SIZE, SIZE), Image.Resampling.BOX) for im in images]
        return np.stack([np.asarray(f, dtype=np.uint8) for f in frames])

    def embed_faces(self, images: Sequence[Image.Image]) -> list[np.ndarray | None]:
        """For each image, the judge's (64,) unit identity vector of the whole frame (never None)."""
        from face0cli.synthetic.nets import judge_images

        if not images:
            return []
        z, _ = judge_images(self.net, self._array(images))
        return list(z)

    def attributes(self, images: Sequence[Image.Image]) -> list[dict[str, str]]:
        """For each image, what the attribute heads read (hair, background, shirt, style, beard, glasses, hat)."""
        from face0cli.synthetic.nets import HEADS, judge_images

        if not images:
            return []
        _, preds = judge_images(self.net, self._array(images))
        return [{k: HEADS[k][int(v[i])] for k, v in preds.items()} for i in range(len(images))]


def make_synthetic_judge(ctx: Any, options: Mapping[str, Any]) -> SyntheticJudge:
    """The `synthetic` judge factory (evaluation.judges.JUDGES): options `weights` (a judge folder)."""
    from face0cli.errors import BadInput

    unknown = [k for k in options if k != "weights"]
    if unknown:
        raise BadInput(f"the judge 'synthetic' has no option '{unknown[0]}'; it takes weights.")
    weights = options.get("weights")
    return SyntheticJudge(None if weights is None else Path(str(weights)))


__all__ = ["SyntheticJudge", "make_synthetic_judge"]
