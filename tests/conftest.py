"""Shared fixtures: photos that ship in packages, an isolated character library, the CLI runner."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image


@pytest.fixture(autouse=True)
def _isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test gets its own character library and never sees the user's weights or caches."""
    monkeypatch.setenv("FACE0_STORE", str(tmp_path / "store" / "characters.h5"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    monkeypatch.delenv("FACE0_EMBEDDER_WEIGHTS", raising=False)
    monkeypatch.delenv("FACE0_MODEL", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("COLUMNS", "200")


@pytest.fixture
def no_peft(monkeypatch: pytest.MonkeyPatch) -> None:
    """peft looks uninstalled to face0's check (peft is the `lora` extra: `pip install 'face0[lora]'`)."""
    import importlib.util

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "peft" else find_spec(name, *a))


@pytest.fixture(scope="session")
def photo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Real photos with faces (astronaut, grace hopper, cameraman) and one without (coffee), as files."""
    import matplotlib.cbook
    import skimage.data

    d = tmp_path_factory.mktemp("photos")
    Image.fromarray(skimage.data.astronaut()).save(d / "astronaut.jpg", quality=95)
    Image.fromarray(skimage.data.camera()).save(d / "camera.png")
    Image.fromarray(skimage.data.coffee()).save(d / "coffee.jpg", quality=95)
    src = Path(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))
    (d / "grace_hopper.jpg").write_bytes(src.read_bytes())
    small = Image.fromarray(skimage.data.astronaut()).resize((40, 40))
    canvas = Image.new("RGB", (400, 400), (128, 128, 128))
    canvas.paste(small, (180, 180))
    canvas.save(d / "tiny_face.png")
    return d


@pytest.fixture(scope="session")
def embedder_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A seeded InceptionResnetV1 state dict saved like facenet-pytorch's VGGFace2 file (with logits.*)."""
    import torch
    from facenet_pytorch import InceptionResnetV1

    torch.manual_seed(0)
    model = InceptionResnetV1(pretrained=None, classify=True, num_classes=16).eval()
    path = tmp_path_factory.mktemp("weights") / "embedder.pt"
    torch.save(model.state_dict(), path)
    return path


def rng_vector(dim: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(dim).astype(np.float32)
