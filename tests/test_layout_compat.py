"""A model directory saved by face0 0.1 (model_index.json names face0cli.projector) still loads and draws the same."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from face0cli.model.pipeline import Face0Pipeline

FIXTURES = Path(__file__).parent / "fixtures"


def test_old_model_directory_loads_and_draws_the_same_image() -> None:
    model = FIXTURES / "model-v0.1"
    assert json.loads((model / "model_index.json").read_text())["projector"] == ["face0cli.projector", "FaceProjector"]
    pipe = Face0Pipeline.from_pretrained(model)
    face = np.random.default_rng(0).standard_normal(16).astype(np.float32)
    image = pipe(
        "a photo of a person",
        face,
        c=0.5,
        num_inference_steps=4,
        generator=torch.Generator().manual_seed(0),
        output_type="np",
    ).images
    expected = np.load(FIXTURES / "model-v0.1-image.npy")
    # same weights, same seed: equal up to kernel-order rounding (images in [0, 1])
    np.testing.assert_allclose(np.asarray(image), expected, atol=1e-4)
