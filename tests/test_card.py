"""The model card of a face0 model directory: diffusers' README.md convention (YAML front matter, then facts)."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import pytest
import yaml
from PIL import Image

from face0cli.errors import BadInput, ModelError
from face0cli.training.card import CardInfo, card_info_from_export, render_model_card, write_model_card


def front_matter(text: str) -> tuple[dict, str]:
    assert text.startswith("---\n")
    head, body = text[4:].split("\n---\n", 1)
    return yaml.safe_load(head), body


def exported(tmp_path: Path) -> Path:
    """A model directory as training's export leaves it (the files the card reads), and its triplets file."""
    d = tmp_path / "model"
    d.mkdir()
    trip = tmp_path / "triplets.h5"
    with h5py.File(trip, "w") as f:
        f.attrs["rows"] = 1234
    (d / "face0.json").write_text(
        json.dumps({"embedder_id": "vggface2/sha256:ab", "embed_dim": 1792, "token_positions": [74, 75, 76]})
    )
    (d / "training.json").write_text(
        json.dumps(
            {
                "base": "CompVis/stable-diffusion-v1-4",
                "triplets": str(trip),
                "steps": 10000,
                "processes": 8,
                "effective_batch": 256,
                "ema": True,
            }
        )  # fmt: skip
    )
    (d / "train_config.json").write_text(json.dumps({"train": "unet", "lr": 2e-5, "face_drop": 0.1, "use_ema": True}))
    return d


def test_card_follows_diffusers_convention(tmp_path: Path) -> None:
    d = exported(tmp_path)
    grid = tmp_path / "validation" / "step-010000.png"
    grid.parent.mkdir()
    Image.new("RGB", (8, 8)).save(grid)
    path = write_model_card(d, card_info_from_export(d, validation_image=grid))
    assert path == d / "README.md"
    meta, body = front_matter(path.read_text(encoding="utf-8"))
    assert meta["library_name"] == "diffusers"
    assert meta["base_model"] == "CompVis/stable-diffusion-v1-4"
    assert meta["license"] == "creativeml-openrail-m"
    assert meta["pipeline_tag"] == "text-to-image"
    assert {"face0", "diffusers", "stable-diffusion", "text-to-image"} <= set(meta["tags"])
    assert "| Base model | `CompVis/stable-diffusion-v1-4` |" in body
    assert "`triplets.h5` (1,234 image-caption-face triplets)" in body
    assert "| Steps | 10,000 |" in body
    assert "`vggface2/sha256:ab` (1792-d)" in body
    assert "positions 74, 75, 76 of 77" in body
    assert "| Effective batch | `256` |" in body and "| Face dropout | `0.1` |" in body
    assert "![validation grid](validation.png)" in body
    assert (d / "validation.png").read_bytes() == grid.read_bytes()


def test_a_local_base_is_named_by_its_folder_and_no_grid_no_section(tmp_path: Path) -> None:
    base = tmp_path / "sd-base"
    base.mkdir()
    info = CardInfo(base_model=str(base), embedder_id="tiny/random", embed_dim=32, steps=5, tags=["synthetic"],
                    license=None, name="tiny-face0")  # fmt: skip
    meta, body = front_matter(render_model_card(info, tmp_path))
    assert meta["base_model"] == "sd-base" and "license" not in meta
    assert "synthetic" in meta["tags"]
    assert body.lstrip().startswith("# tiny-face0")
    assert "Validation" not in body and "Data | not recorded" in body


def test_errors(tmp_path: Path) -> None:
    with pytest.raises(BadInput):
        write_model_card(tmp_path / "missing", CardInfo("b", "e", 1, 1))
    with pytest.raises(BadInput, match="validation image"):
        write_model_card(tmp_path, CardInfo("b", "e", 1, 1, validation_image=tmp_path / "none.png"))
    with pytest.raises(ModelError):
        card_info_from_export(tmp_path)
