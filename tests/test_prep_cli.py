"""face0 prep through the CLI: a folder of real photos with captions -> a triplet file plain h5py can read."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import h5py
import pytest
from typer.testing import CliRunner

from face0cli.cli.app import app
from tests.test_cli import assert_clean_error

runner = CliRunner()


def test_prep_folder_counts_and_file(photo_dir: Path, embedder_weights: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    for name, caption in [
        ("astronaut.jpg", "an astronaut"),
        ("grace_hopper.jpg", "an officer"),
        ("coffee.jpg", "a cup of coffee"),
    ]:
        shutil.copy(photo_dir / name, data / name)
        (data / name).with_suffix(".txt").write_text(caption)
    (data / "orphan.txt").write_text("a caption without its image")
    out = tmp_path / "triplets.h5"
    r = runner.invoke(
        app, ["prep", str(data), "--out", str(out), "--embedder-weights", str(embedder_weights), "--json"]
    )
    assert r.exit_code == 0, r.output
    summary = json.loads(r.stdout)
    assert (summary["kept"], summary["no_face"], summary["missing_image"]) == (2, 1, 1)
    with h5py.File(out, "r") as f:
        assert f["embedding"].shape == (2, 1792)
        assert sorted(c.decode() if isinstance(c, bytes) else c for c in f["caption"][:]) == [
            "an astronaut",
            "an officer",
        ]


def test_prep_no_faces_is_a_clear_error(photo_dir: Path, embedder_weights: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    shutil.copy(photo_dir / "coffee.jpg", data / "coffee.jpg")
    (data / "coffee.txt").write_text("coffee")
    out = tmp_path / "t.h5"
    r = runner.invoke(app, ["prep", str(data), "--out", str(out), "--embedder-weights", str(embedder_weights)])
    assert_clean_error(r, "face")
    assert not out.exists()
    assert_clean_error(runner.invoke(app, ["prep", str(tmp_path / "nope"), "--out", str(out)]), "does not exist")


@pytest.mark.slow
def test_prep_with_latents_then_train_on_them(photo_dir: Path, embedder_weights: Path, tmp_path: Path) -> None:
    """--latents stores the VAE's mean and log-variance per kept image; training then reads them."""
    import dataclasses

    import numpy as np
    from diffusers import AutoencoderKL

    from face0cli.faces.embedders import FacenetEmbedder
    from face0cli.model.tiny import tiny_pipeline
    from face0cli.training.train import image_to_tensor

    model = tmp_path / "m"
    pipe = tiny_pipeline(seed=0, embed_dim=1792)
    pipe.face0_config = dataclasses.replace(pipe.face0_config, embedder_id=FacenetEmbedder(weights=embedder_weights).id)
    pipe.save_pretrained(model)
    data = tmp_path / "data"
    data.mkdir()
    shutil.copy(photo_dir / "grace_hopper.jpg", data / "g.jpg")
    (data / "g.txt").write_text("an officer")
    out = tmp_path / "t.h5"
    r = runner.invoke(
        app,
        [
            "prep",
            str(data),
            "--out",
            str(out),
            "--embedder-weights",
            str(embedder_weights),
            "--latents",
            str(model),
            "--resolution",
            "32",
            "--json",
        ],
    )
    assert r.exit_code == 0, r.output
    vae = AutoencoderKL.from_pretrained(model / "vae").eval()
    from PIL import Image

    expected = vae.encode(image_to_tensor(Image.open(data / "g.jpg").convert("RGB"), 32)[None]).latent_dist
    with h5py.File(out, "r") as f:
        stored = f["latents"][:]
    assert stored.shape == (1, 2 * vae.config.latent_channels, 32 // pipe.vae_scale_factor, 32 // pipe.vae_scale_factor)
    np.testing.assert_allclose(stored[0], expected.parameters[0].detach().numpy(), atol=1e-5)
    r = runner.invoke(
        app,
        [
            "train",
            "-t",
            str(out),
            "--base",
            str(model),
            "--out",
            str(tmp_path / "run"),
            "--max-steps",
            "2",
            "--batch-size",
            "1",
            "--resolution",
            "32",
            "--workers",
            "0",
            "--warmup",
            "0",
            "--checkpoint-every",
            "0",
            "--validate-every",
            "0",
            "--json",
        ],
    )
    assert r.exit_code == 0, r.output
