"""The public Python API: lazy names, no torch on import, and the README's example run as written."""

from __future__ import annotations

import dataclasses
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import face0cli

README = Path(__file__).resolve().parents[1] / "README.md"


def test_all_lists_every_public_name_and_each_resolves() -> None:
    assert set(face0cli.__all__) == {"__version__", *face0cli._EXPORTS}
    for name in ("SampleConfig", "FaceStore", "Character", "ParameterError", "embed_character", "run_eval"):
        assert getattr(face0cli, name).__name__ in (name, "compare")
    assert face0cli.ParameterError.__mro__[1:3] == (face0cli.BadInput, ValueError) or issubclass(
        face0cli.ParameterError, ValueError
    )
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        face0cli.nope  # noqa: B018


def test_the_version_is_in_one_place() -> None:
    text = (Path(__file__).resolve().parents[1] / "pyproject.toml").read_text()
    assert 'dynamic = ["version"]' in text and 'attr = "face0cli.__version__"' in text
    assert not re.search(r'^version\s*=\s*"', text, re.M)
    assert (Path(face0cli.__file__).parent / "py.typed").is_file()


@pytest.mark.slow
def test_import_face0cli_imports_no_torch() -> None:
    code = "import sys, face0cli; from face0cli import SampleConfig, FaceStore; print('torch' in sys.modules)"
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=dict(os.environ))
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == "False"


def readme_python_example() -> str:
    text = README.read_text(encoding="utf-8")
    section = text.split("## Python API", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    assert len(blocks) == 1, "the Python API section has one example"
    return blocks[0]


@pytest.mark.slow
def test_the_readme_example_runs(tmp_path: Path, photo_dir: Path, embedder_weights: Path, monkeypatch) -> None:
    """The README's code as written, with a tiny model directory, a shipped photo and the seeded embedder."""
    from face0cli.faces.embedders import FacenetEmbedder
    from face0cli.model.tiny import tiny_pipeline

    pipe = tiny_pipeline(seed=0, embed_dim=1792)
    pipe.face0_config = dataclasses.replace(pipe.face0_config, embedder_id=FacenetEmbedder(weights=embedder_weights).id)
    pipe.save_pretrained(tmp_path / "model")
    monkeypatch.setenv("FACE0_EMBEDDER_WEIGHTS", str(embedder_weights))
    monkeypatch.chdir(tmp_path)
    code = readme_python_example()
    for old, new in (("path/to/face0-model", str(tmp_path / "model")), ("me.jpg", str(photo_dir / "astronaut.jpg"))):
        assert old in code
        code = code.replace(old, new)
    scope: dict = {}
    exec(compile(code, "README.md", "exec"), scope)  # noqa: S102
    assert len(scope["images"]) == 2 and (tmp_path / "alice.png").is_file()
    assert scope["store"].get("alice").embedder_id == pipe.face0_config.embedder_id
