"""faces.py: real MTCNN on photos that ship in packages, the paper's margin crop, InceptionResnetV1 features
(seeded, or loaded from saved state dicts), and the errors for no face, small faces and missing weights."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from face0cli.config import CropConfig
from face0cli.errors import BadInput, EmbedderMismatch, FaceTooSmall, MissingWeights, NoFaceFound
from face0cli.faces.embedders import (
    OFFICIAL_WEIGHTS,
    Detection,
    Embedder,
    FacenetEmbedder,
    embed_photo,
    embed_photos,
    margin_box,
    mean_embedding,
    pad_resize,
    resolve_weights,
)
from face0cli.faces.images import file_sha256, load_image


@pytest.fixture(scope="module")
def embedder() -> FacenetEmbedder:
    """Real MTCNN (its weights ship in facenet-pytorch) and a seed-0 InceptionResnetV1, built once."""
    return FacenetEmbedder(seed=0)


@pytest.fixture(scope="module")
def seeded_state() -> dict[str, Any]:
    """A seed-0 InceptionResnetV1 state dict with a classifier head (logits.*), like the official file."""
    import torch
    from facenet_pytorch import InceptionResnetV1

    torch.manual_seed(0)
    model = InceptionResnetV1(pretrained=None, classify=True, num_classes=10)
    state = model.state_dict()
    assert any(k.startswith("logits.") for k in state)
    return state


@pytest.fixture(scope="module")
def crops(embedder: FacenetEmbedder, photo_dir: Path) -> dict[str, Image.Image]:
    """The 160x160 crop of the largest face of each photo, detected once."""
    out = {}
    for name in ("astronaut.jpg", "grace_hopper.jpg", "camera.png"):
        image = load_image(photo_dir / name)
        out[name] = embedder.crop(image, embedder.detect(image)[0].box)
    return out


def canvas_with_astronaut(side: int) -> Image.Image:
    import skimage.data

    canvas = Image.new("RGB", (300, 300), (128, 128, 128))
    canvas.paste(Image.fromarray(skimage.data.astronaut()).resize((side, side), Image.LANCZOS), (100, 100))
    return canvas


# ------------------------------------------------------------------------------------------------ detection


# Where the face is in each photo (x range, y range of the box centre) and its rough size, by looking at them.
PHOTOS = {
    "astronaut.jpg": ((512, 512), (170, 280), (60, 180), (60, 160)),
    "grace_hopper.jpg": ((512, 600), (200, 330), (170, 290), (120, 260)),
    "camera.png": ((512, 512), (190, 265), (120, 200), (35, 100)),
}


@pytest.mark.parametrize("name", sorted(PHOTOS))
def test_detects_the_face_in_real_photos(name: str, embedder: FacenetEmbedder, photo_dir: Path) -> None:
    (w, h), (cx0, cx1), (cy0, cy1), (s0, s1) = PHOTOS[name]
    image = load_image(photo_dir / name)
    assert image.size == (w, h)
    found = embedder.detect(image)
    assert len(found) >= 1
    assert all(isinstance(d, Detection) for d in found)
    assert [d.area for d in found] == sorted((d.area for d in found), reverse=True)
    face = found[0]
    x0, y0, x1, y1 = face.box
    assert 0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h
    assert cx0 < (x0 + x1) / 2 < cx1 and cy0 < (y0 + y1) / 2 < cy1
    assert s0 < face.size < s1
    assert face.size == min(face.width, face.height)
    assert 0.95 < face.prob <= 1.0
    assert 0.6 < face.width / face.height < 1.2  # faces are a bit taller than wide


def test_crop_box_is_the_margin_arithmetic(embedder: FacenetEmbedder, photo_dir: Path) -> None:
    path = photo_dir / "grace_hopper.jpg"
    r = embed_photo(embedder, path)
    image = load_image(path)
    assert r.detection == embedder.detect(image)[0]
    x0, y0, x1, y1 = r.detection.box
    expected = (math.floor(x0) - 10, math.floor(y0) - 33, math.ceil(x1) + 10, math.ceil(y1) + 15)
    assert all(v > 0 for v in expected) and expected[2] < 512 and expected[3] < 600  # no clipping here
    assert r.crop_box == expected
    assert r.crop.size == (160, 160) and r.crop.mode == "RGB"
    np.testing.assert_array_equal(np.asarray(r.crop), np.asarray(pad_resize(image.crop(expected), 160)))


def test_margin_box_clips_to_the_image() -> None:
    assert margin_box((30.2, 40.7, 60.5, 80.0), (100, 120)) == (20, 7, 71, 95)
    # near every border: grown past the image on all sides, clipped to it
    assert margin_box((5.0, 20.0, 95.0, 90.0), (100, 100)) == (0, 0, 100, 100)
    # MTCNN boxes may start outside the image
    assert margin_box((-4.0, -3.0, 50.0, 60.0), (200, 200)) == (0, 0, 60, 75)
    cfg = CropConfig(margin_left=1, margin_right=2, margin_top=3, margin_bottom=4)
    assert margin_box((10.0, 10.0, 20.0, 20.0), (100, 100), cfg) == (9, 7, 22, 24)
    with pytest.raises(BadInput):
        margin_box((500.0, 500.0, 600.0, 600.0), (100, 100))


@pytest.mark.parametrize("size", [(100, 50), (30, 90)])
def test_pad_resize_keeps_aspect_ratio(size: tuple[int, int]) -> None:
    out = np.asarray(pad_resize(Image.new("RGB", size, (255, 0, 0)), 160)).astype(int)
    assert out.shape == (160, 160, 3)
    red = out[..., 0] > 128
    rows, cols = np.nonzero(red.any(axis=1))[0], np.nonzero(red.any(axis=0))[0]
    h, w = rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1
    assert max(h, w) == 160
    assert abs(w / h - size[0] / size[1]) < 0.05
    # centred on black padding
    assert abs(rows[0] - (159 - rows[-1])) <= 1 and abs(cols[0] - (159 - cols[-1])) <= 1
    assert out[~red].max() < 40


# ------------------------------------------------------------------------------------------------ no face


@pytest.mark.parametrize("kind", ["coffee", "flat", "tiny_image"])
def test_no_face(kind: str, embedder: FacenetEmbedder, photo_dir: Path, tmp_path: Path) -> None:
    path = {
        "coffee": photo_dir / "coffee.jpg",
        "flat": tmp_path / "flat.png",
        "tiny_image": tmp_path / "tiny.png",
    }[kind]
    if kind == "flat":
        Image.new("RGB", (300, 200), (90, 140, 200)).save(path)
    if kind == "tiny_image":  # smaller than MTCNN's minimum face: its image pyramid would be empty
        Image.new("RGB", (10, 12), (90, 140, 200)).save(path)
    assert embedder.detect(load_image(path)) == []
    with pytest.raises(NoFaceFound) as err:
        embed_photo(embedder, path)
    assert type(err.value) is NoFaceFound
    assert "no face" in str(err.value) and str(path) in str(err.value)


def test_small_face_found_by_mtcnn_is_too_small(embedder: FacenetEmbedder, tmp_path: Path) -> None:
    # MTCNN with min_face_size=20 still finds the astronaut's face at about 16 px: the 20 px rule is ours.
    path = tmp_path / "small.png"
    canvas_with_astronaut(96).save(path)
    found = embedder.detect(load_image(path))
    assert len(found) == 1 and 10 < found[0].size < 20
    with pytest.raises(FaceTooSmall) as err:
        embed_photo(embedder, path)
    assert f"{found[0].size:.0f} px" in str(err.value) and str(path) in str(err.value)


def test_much_smaller_face_is_not_found_at_all(embedder: FacenetEmbedder, tmp_path: Path) -> None:
    # at about 8 px MTCNN finds nothing, so the error is NoFaceFound and not FaceTooSmall
    path = tmp_path / "smaller.png"
    canvas_with_astronaut(48).save(path)
    assert embedder.detect(load_image(path)) == []
    with pytest.raises(NoFaceFound) as err:
        embed_photo(embedder, path)
    assert type(err.value) is NoFaceFound


def test_min_face_from_cfg(embedder: FacenetEmbedder, photo_dir: Path) -> None:
    path = photo_dir / "astronaut.jpg"
    size = embedder.detect(load_image(path))[0].size
    with pytest.raises(FaceTooSmall, match=f"{size:.0f} px, under the minimum of 200 px"):
        embed_photo(embedder, path, CropConfig(min_face=200))
    assert embed_photo(embedder, path, CropConfig(min_face=math.floor(size))).vector.shape == (1792,)


# ------------------------------------------------------------------------------------------------ embedding


@pytest.mark.slow
def test_seeded_embedding_is_deterministic(embedder: FacenetEmbedder, crops: dict[str, Image.Image]) -> None:
    pair = [crops["astronaut.jpg"], crops["grace_hopper.jpg"]]
    v = embedder.embed(pair)
    assert v.shape == (2, 1792) and v.dtype == np.float32 and np.isfinite(v).all()
    assert embedder.dim == 1792 and embedder.id == "inception-resnet-v1/random-seed0"
    assert isinstance(embedder, Embedder)
    assert not np.allclose(v[0], v[1])
    # one batch or one at a time: the same (eval mode, no batch statistics)
    np.testing.assert_allclose(embedder.embed(pair[:1])[0], v[0], rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(embedder.embed(pair), v)
    assert embedder.embed([]).shape == (0, 1792)
    # another instance from the same seed agrees; another seed does not
    np.testing.assert_array_equal(FacenetEmbedder(seed=0).embed(pair), v)
    assert not np.allclose(FacenetEmbedder(seed=1).embed(pair), v, atol=1e-3)


def test_features_are_the_pooled_layer_before_dropout(embedder: FacenetEmbedder, crops: dict[str, Image.Image]) -> None:
    """The vector is avgpool_1a's output of the whole network (dropout, last_linear, last_bn dropped)."""
    import torch
    from facenet_pytorch import InceptionResnetV1

    crop = crops["camera.png"]
    torch.manual_seed(0)
    full = InceptionResnetV1(pretrained=None).eval()
    pooled: list[torch.Tensor] = []
    full.avgpool_1a.register_forward_hook(lambda m, i, o: pooled.append(o.flatten(1)))
    x = torch.tensor(np.asarray(crop), dtype=torch.float32).permute(2, 0, 1)[None]
    with torch.no_grad():
        normalised = full((x - 127.5) / 128.0)
    assert normalised.shape == (1, 512)
    np.testing.assert_allclose(embedder.embed([crop]), pooled[0].numpy(), rtol=1e-4, atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["pt", "safetensors"])
def test_saved_weights_with_logits_load(
    fmt: str,
    seeded_state: dict[str, Any],
    embedder: FacenetEmbedder,
    crops: dict[str, Image.Image],
    tmp_path: Path,
) -> None:
    import torch

    path = tmp_path / f"irv1.{fmt}"
    if fmt == "pt":
        torch.save(seeded_state, path)
    else:
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in seeded_state.items()}, str(path))
    loaded = FacenetEmbedder(weights=path)
    assert loaded.id == f"inception-resnet-v1/sha256:{file_sha256(path)[:12]}"
    assert loaded.dim == 1792
    pair = [crops["astronaut.jpg"], crops["camera.png"]]
    np.testing.assert_allclose(loaded.embed(pair), embedder.embed(pair), rtol=1e-5, atol=1e-6)


def test_official_file_name_gives_vggface2_id(
    seeded_state: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch

    checkpoints = tmp_path / "torch-home" / "checkpoints"  # conftest points TORCH_HOME here
    checkpoints.mkdir(parents=True)
    torch.save(seeded_state, checkpoints / OFFICIAL_WEIGHTS)
    emb = FacenetEmbedder()  # found in facenet's cache location, no argument needed
    assert emb.id == "inception-resnet-v1/vggface2" and emb.weights_path == checkpoints / OFFICIAL_WEIGHTS


def test_resolve_weights_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cache = tmp_path / "torch-home" / "checkpoints" / OFFICIAL_WEIGHTS
    cache.parent.mkdir(parents=True)
    cache.write_bytes(b"x")
    env = tmp_path / "env.safetensors"
    env.write_bytes(b"x")
    explicit = tmp_path / "explicit.pt"
    explicit.write_bytes(b"x")
    assert resolve_weights() == cache
    monkeypatch.setenv("FACE0_EMBEDDER_WEIGHTS", str(env))
    assert resolve_weights() == env
    assert resolve_weights(explicit) == explicit
    assert resolve_weights(cache.parent) == cache  # a folder: the official name in it
    monkeypatch.delenv("TORCH_HOME")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv("FACE0_EMBEDDER_WEIGHTS")
    with pytest.raises(MissingWeights, match=str(tmp_path / "xdg" / "torch" / "checkpoints")):
        resolve_weights()


def test_missing_weights_message(tmp_path: Path) -> None:
    with pytest.raises(MissingWeights) as err:
        FacenetEmbedder()
    msg = str(err.value)
    for needle in (OFFICIAL_WEIGHTS, str(tmp_path / "torch-home" / "checkpoints"), "--embedder-weights"):
        assert needle in msg
    assert "FACE0_EMBEDDER_WEIGHTS" in msg and "\n" not in msg and msg.endswith(".")
    with pytest.raises(MissingWeights, match=str(tmp_path / "nope.pt")):
        FacenetEmbedder(weights=tmp_path / "nope.pt")


def _bad_states(state: dict[str, Any]) -> dict[str, Any]:
    import torch

    missing = {k: v for k, v in state.items() if not k.startswith("conv2d_1a.")}
    unexpected = {**state, "extra_head.weight": torch.zeros(3)}
    wrong_shape = {**state, "last_linear.weight": torch.zeros(4, 4)}
    return {"missing": missing, "unexpected": unexpected, "wrong_shape": wrong_shape, "list": [1, 2, 3]}


@pytest.mark.parametrize("case,needle", [
    ("missing", "conv2d_1a"),
    ("unexpected", "extra_head.weight"),
    ("wrong_shape", "last_linear.weight"),
    ("list", "not a state dict"),
    ("text", "cannot be read"),
])  # fmt: skip
def test_bad_weights_files(case: str, needle: str, seeded_state: dict[str, Any], tmp_path: Path) -> None:
    import torch

    path = tmp_path / "bad.pt"
    if case == "text":
        path.write_text("not weights\n")
    else:
        torch.save(_bad_states(seeded_state)[case], path)
    with pytest.raises(BadInput, match=needle) as err:
        FacenetEmbedder(weights=path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


# ------------------------------------------------------------------------------------------------ photos


@pytest.mark.slow
def test_embed_photos_batch_matches_single_and_mean(embedder: FacenetEmbedder, photo_dir: Path) -> None:
    paths = [photo_dir / "astronaut.jpg", photo_dir / "grace_hopper.jpg"]
    results = embed_photos(embedder, paths)
    assert [r.source for r in results] == [str(p) for p in paths]
    for r, p in zip(results, paths):
        single = embed_photo(embedder, p)
        np.testing.assert_allclose(r.vector, single.vector, rtol=1e-4, atol=1e-5)
        assert r.sha256 == file_sha256(p) and r.detection == single.detection
        assert r.vector.shape == (1792,) and r.vector.dtype == np.float32
    mean = mean_embedding(results)
    assert mean.dtype == np.float32
    np.testing.assert_allclose(mean, (results[0].vector + results[1].vector) / 2, rtol=1e-6, atol=1e-7)
    with pytest.raises(BadInput):
        mean_embedding([])


def test_embed_photos_checks_every_photo_before_embedding(
    embedder: FacenetEmbedder, photo_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[int] = []
    monkeypatch.setattr(embedder, "embed", lambda crops: calls.append(len(crops)) or np.zeros((len(crops), 1792)))
    with pytest.raises(NoFaceFound, match="coffee"):
        embed_photos(embedder, [photo_dir / "astronaut.jpg", photo_dir / "coffee.jpg"])
    assert calls == []
    embed_photos(embedder, [photo_dir / "astronaut.jpg", photo_dir / "camera.png"])
    assert calls == [2]  # one batched call


def test_to_json(embedder: FacenetEmbedder, photo_dir: Path) -> None:
    r = embed_photo(embedder, photo_dir / "camera.png")
    d = json.loads(json.dumps(r.to_json()))
    assert set(d) >= {"source", "sha256", "detection", "crop_box", "norm"}
    assert "vector" not in d and "crop" not in d
    assert d["norm"] == pytest.approx(float(np.linalg.norm(r.vector)))
    assert d["detection"]["box"] == pytest.approx(list(r.detection.box))
    assert d["crop_box"] == list(r.crop_box)


class GridEmbedder:
    """A stand-in embedder (the synthetic world's plugs in the same way): fixed boxes, mean-colour vectors."""

    id = "test/grid"
    dim = 3

    def __init__(self, boxes: list[tuple[float, float, float, float]], dim: int = 3) -> None:
        self.boxes, self.out_dim = boxes, dim

    def detect(self, image: Image.Image) -> list[Detection]:
        return [Detection(b, 0.9) for b in self.boxes]

    def crop(self, image: Image.Image, box: tuple[float, float, float, float]) -> Image.Image:
        return pad_resize(image.crop(margin_box(box, image.size)), 8)

    def embed(self, crops: list[Image.Image]) -> np.ndarray:
        return np.array([np.asarray(c).reshape(-1, 3).mean(0)[: self.out_dim] for c in crops], np.float32)


def test_any_embedder_behind_the_protocol(photo_dir: Path) -> None:
    small, large = (10.0, 10.0, 40.0, 40.0), (100.0, 100.0, 300.0, 250.0)
    emb = GridEmbedder([small, large])  # not sorted: embed_photo still takes the largest
    assert isinstance(emb, Embedder)
    r = embed_photo(emb, photo_dir / "astronaut.jpg")
    assert r.detection.box == large and r.vector.shape == (3,)
    assert r.crop_box == margin_box(large, (512, 512))
    with pytest.raises(FaceTooSmall, match="15 px"):
        embed_photo(GridEmbedder([(10.0, 10.0, 25.0, 40.0)]), photo_dir / "astronaut.jpg")
    with pytest.raises(EmbedderMismatch):
        embed_photo(GridEmbedder([large], dim=2), photo_dir / "astronaut.jpg")


@pytest.mark.slow
def test_faces_module_does_not_import_torch() -> None:
    code = "import sys, face0cli.faces.embedders; assert not {'torch', 'facenet_pytorch'} & set(sys.modules)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
