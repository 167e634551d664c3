"""face0 prep through the CLI: a folder of real photos with captions -> a triplet file plain h5py can read."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import h5py
from typer.testing import CliRunner

from face0cli.cli import app
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
