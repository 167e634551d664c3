"""The character commands through typer's CliRunner: embed, character, mix, and every bad input."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
from typer.testing import CliRunner

from face0cli.cli.app import app
from face0cli.library.store import Character, FaceStore
from tests.conftest import rng_vector

runner = CliRunner()


def run(*args: str):
    return runner.invoke(app, [str(a) for a in args])


def store_path() -> Path:
    return Path(os.environ["FACE0_STORE"])


def digest(path: Path) -> str | None:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else None


def assert_clean_error(result, *needles: str) -> None:
    """One line on stderr, a non-zero exit, no traceback."""
    assert result.exit_code != 0, result.output
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    err = result.stderr.strip()
    assert err.startswith("error:"), err
    assert len(err.splitlines()) == 1, err
    assert "Traceback" not in result.output
    for n in needles:
        assert n.lower() in err.lower(), err


def add_char(name: str, dim: int = 8, seed: int = 0, embedder: str = "test/emb") -> Character:
    c = Character.new(name, rng_vector(dim, seed), embedder, "photo", {"test": True})
    FaceStore(store_path()).add(c)
    return c


# ------------------------------------------------------------------------------------------------ embed


@pytest.fixture(scope="module")
def embedded_store(photo_dir: Path, embedder_weights: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A library with 'hopper' embedded from a real photo through the CLI (real MTCNN, saved weights)."""
    path = tmp_path_factory.mktemp("lib") / "characters.h5"
    r = run(
        "embed",
        photo_dir / "grace_hopper.jpg",
        "--name",
        "hopper",
        "--store",
        path,
        "--embedder-weights",
        embedder_weights,
        "--json",
    )
    assert r.exit_code == 0, r.output
    return path


def test_embed_writes_character_readable_by_plain_h5py(embedded_store: Path, embedder_weights: Path) -> None:
    with h5py.File(embedded_store, "r") as f:
        ds = f["characters"]["hopper"]
        assert ds.shape == (1792,)
        assert ds.dtype == np.float32
        assert ds.attrs["kind"] == "photo"
        assert ds.attrs["embedder_id"].startswith("inception-resnet-v1/sha256:")
        prov = json.loads(ds.attrs["provenance"])
    src = prov["sources"][0]
    assert src["source"].endswith("grace_hopper.jpg")
    assert len(src["sha256"]) == 64
    assert 0.9 < src["detection"]["prob"] <= 1.0
    x0, y0, x1, y1 = src["detection"]["box"]
    assert 0 <= x0 < x1 <= 512 and 0 <= y0 < y1 <= 600


def test_embed_keeps_the_face_crop_as_thumbnail(embedded_store: Path) -> None:
    lib = FaceStore(embedded_store)
    assert lib.get("hopper").has_thumbnail
    thumb = lib.thumbnail("hopper")
    assert thumb is not None and thumb.dtype == np.uint8 and thumb.shape[2] == 3 and max(thumb.shape[:2]) <= 160


@pytest.mark.slow
def test_embed_json_and_crop(photo_dir: Path, embedder_weights: Path, tmp_path: Path) -> None:
    r = run(
        "embed",
        photo_dir / "astronaut.jpg",
        photo_dir / "grace_hopper.jpg",
        "--name",
        "two",
        "--embedder-weights",
        embedder_weights,
        "--save-crop",
        tmp_path / "crops",
        "--json",
    )
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert len(out["photos"]) == 2
    assert len(out["crops"]) == 2
    from PIL import Image

    for c in out["crops"]:
        assert Image.open(c).size == (160, 160)
    # the stored vector is the mean of the per-photo vectors (paper §3.3)
    from face0cli.faces.embedders import FacenetEmbedder, embed_photo

    emb = FacenetEmbedder(weights=embedder_weights)
    a = embed_photo(emb, photo_dir / "astronaut.jpg").vector
    b = embed_photo(emb, photo_dir / "grace_hopper.jpg").vector
    stored = FaceStore(store_path()).get("two").vector
    np.testing.assert_allclose(stored, (a + b) / 2, rtol=1e-4, atol=1e-5)


def test_embed_table_output(photo_dir: Path, embedder_weights: Path) -> None:
    r = run("embed", photo_dir / "astronaut.jpg", "--name", "eileen", "--embedder-weights", embedder_weights)
    assert r.exit_code == 0, r.output
    assert "eileen" in r.stdout and "prob" in r.stdout


def test_embed_missing_weights_one_sentence(photo_dir: Path) -> None:
    # a model whose embedder is the VGGFace2 InceptionResnetV1 (a hub id: never fetched), without its weights
    r = run("embed", photo_dir / "astronaut.jpg", "--name", "x", "--model", "someone/face0-sd14")
    assert_clean_error(r, "20180402-114759-vggface2.pt")
    assert not store_path().exists()


BAD_PHOTOS = {
    "missing": lambda d: d / "nope.jpg",
    "directory": lambda d: d,
    "zero_bytes": lambda d: _write(d / "empty.jpg", b""),
    "truncated": lambda d: _write(d / "trunc.jpg", (d / "astronaut.jpg").read_bytes()[:5000]),
    "text_as_jpg": lambda d: _write(d / "notes.jpg", b"this is not an image\n"),
}


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("case", sorted(BAD_PHOTOS))
def test_embed_bad_files(case: str, photo_dir: Path, embedder_weights: Path, tmp_path: Path) -> None:
    add_char("keep")
    before = digest(store_path())
    d = tmp_path / "in"
    d.mkdir()
    (d / "astronaut.jpg").write_bytes((photo_dir / "astronaut.jpg").read_bytes())
    bad = BAD_PHOTOS[case](d)
    r = run("embed", bad, "--name", "newone", "--embedder-weights", embedder_weights)
    assert_clean_error(r)
    assert digest(store_path()) == before


@pytest.mark.parametrize("photo,needle", [("coffee.jpg", "no face"), ("tiny_face.png", "")])
def test_embed_no_face_or_too_small(photo: str, needle: str, photo_dir: Path, embedder_weights: Path) -> None:
    add_char("keep")
    before = digest(store_path())
    r = run("embed", photo_dir / photo, "--name", "newone", "--embedder-weights", embedder_weights)
    assert_clean_error(r, needle)
    assert r.exit_code == 3
    assert digest(store_path()) == before


@pytest.mark.slow
def test_embed_invalid_and_duplicate_names(photo_dir: Path, embedder_weights: Path) -> None:
    add_char("taken")
    before = digest(store_path())
    for bad in ("bad name", "../x", "", "a" * 65, "random"):
        r = run("embed", photo_dir / "astronaut.jpg", "--name", bad, "--embedder-weights", embedder_weights)
        assert_clean_error(r)
    r = run("embed", photo_dir / "astronaut.jpg", "--name", "taken", "--embedder-weights", embedder_weights)
    assert_clean_error(r, "--force")
    assert digest(store_path()) == before
    r = run(
        "embed",
        photo_dir / "astronaut.jpg",
        "--name",
        "taken",
        "--force",
        "--embedder-weights",
        embedder_weights,
    )
    assert r.exit_code == 0, r.output
    assert FaceStore(store_path()).get("taken").dim == 1792


# ------------------------------------------------------------------------------------------------ character


def test_character_list_show_rename_rm_export_import(tmp_path: Path) -> None:
    add_char("alice", seed=1)
    add_char("bob", seed=2)
    r = run("character", "list")
    assert r.exit_code == 0 and "alice" in r.stdout and "bob" in r.stdout
    listing = json.loads(run("character", "list", "--json").stdout)
    assert [c["name"] for c in listing] == ["alice", "bob"]
    shown = json.loads(run("character", "show", "alice", "--json").stdout)
    assert shown["embedder_id"] == "test/emb" and shown["dim"] == 8

    r = run("character", "rename", "alice", "carol", "--json")
    assert r.exit_code == 0 and json.loads(r.stdout) == {"renamed": "alice", "to": "carol"}
    assert_clean_error(run("character", "rename", "carol", "bob"), "--force")
    out = tmp_path / "share.h5"
    r = run("character", "export", "carol", "bob", "--out", out, "--json")
    assert r.exit_code == 0 and sorted(json.loads(r.stdout)["exported"]) == ["bob", "carol"]
    r = run("character", "rm", "carol", "bob", "--json")
    assert r.exit_code == 0 and json.loads(r.stdout) == {"removed": ["carol", "bob"]}
    assert json.loads(run("character", "list", "--json").stdout) == []
    r = run("character", "import", out, "--json")
    assert r.exit_code == 0, r.output
    assert sorted(json.loads(r.stdout)["imported"]) == ["bob", "carol"]
    np.testing.assert_array_equal(FaceStore(store_path()).get("carol").vector, rng_vector(8, 1))


def test_character_unknown_and_rm_is_all_or_nothing() -> None:
    add_char("alice")
    before = digest(store_path())
    assert_clean_error(run("character", "show", "alic"), "alic")
    assert_clean_error(run("character", "rm", "alice", "ghost"), "ghost")
    assert digest(store_path()) == before


def test_character_list_empty_library() -> None:
    r = run("character", "list", "--json")
    assert r.exit_code == 0 and json.loads(r.stdout) == []


@pytest.mark.parametrize("kind", ["random_bytes", "foreign_h5", "newer_format"])
def test_bad_store_files(kind: str) -> None:
    path = store_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    if kind == "random_bytes":
        path.write_bytes(os.urandom(4096))
    elif kind == "foreign_h5":
        with h5py.File(path, "w") as f:
            f["data"] = np.arange(3)
    else:
        add_char("alice")
        with h5py.File(path, "a") as f:
            f.attrs["format_version"] = 99
    before = digest(path)
    for args in (["character", "list"], ["character", "show", "alice"], ["mix", "a", "b", "--name", "c"]):
        r = run(*args)
        assert_clean_error(r, "newer" if kind == "newer_format" else str(path.name))
    assert digest(path) == before


# ------------------------------------------------------------------------------------------------------ mix


def test_mix_weighted_mean_lerp_direction() -> None:
    a, b, c = add_char("alice", seed=1), add_char("bob", seed=2), add_char("carl", seed=3)
    assert run("mix", "alice=0.7", "bob=0.3", "--name", "ab").exit_code == 0
    lib = FaceStore(store_path())
    np.testing.assert_allclose(lib.get("ab").vector, 0.7 * a.vector + 0.3 * b.vector, rtol=1e-5, atol=1e-6)
    assert lib.get("ab").kind == "mix"
    assert lib.get("ab").provenance["parents"] == ["alice", "bob"]

    assert run("mix", "alice", "bob", "--t", "0.25", "--name", "lerp").exit_code == 0
    np.testing.assert_allclose(
        FaceStore(store_path()).get("lerp").vector, 0.75 * a.vector + 0.25 * b.vector, rtol=1e-5, atol=1e-6
    )

    r = run("mix", "--base", "alice", "--towards", "bob", "--origin", "carl", "--amount", "0.5", "--name", "d")
    assert r.exit_code == 0, r.output
    np.testing.assert_allclose(
        FaceStore(store_path()).get("d").vector, a.vector + 0.5 * (b.vector - c.vector), rtol=1e-5, atol=1e-5
    )


@pytest.mark.parametrize(
    "args,needle",
    [
        (["alice=nan", "bob=1"], "finite"),
        (["alice=inf", "bob=1"], "finite"),
        (["alice=1", "other=1"], "embedder"),
        (["alice=1", "ghost=1"], "ghost"),
        (["alice=1", "bob=-1"], ""),
        (["alice"], ""),
        (["alice", "bob", "--t", "nan"], "finite"),
        (["alice", "bob", "--t", "1.5"], "--extrapolate"),
        (["alice", "bob", "--t", "-0.1"], "between 0 and 1"),
    ],
)
def test_mix_bad_input(args: list[str], needle: str) -> None:
    add_char("alice", seed=1)
    add_char("bob", seed=2)
    add_char("other", dim=16, seed=3, embedder="other/emb")
    before = digest(store_path())
    assert_clean_error(run("mix", *args, "--name", "m"), needle)
    assert digest(store_path()) == before


def test_mix_extrapolates_only_when_asked() -> None:
    a, b = add_char("alice", seed=1), add_char("bob", seed=2)
    assert run("mix", "alice", "bob", "--t", "1.5", "--extrapolate", "--name", "far").exit_code == 0
    np.testing.assert_allclose(
        FaceStore(store_path()).get("far").vector, b.vector + 0.5 * (b.vector - a.vector), atol=1e-5
    )


@pytest.mark.parametrize("command", [["embed", "photo.jpg"], ["mix", "alice", "bob"]])
def test_n_is_never_the_name(command: list[str]) -> None:
    """-n is no short form of --name anywhere: --n is the image count of generate and debias."""
    add_char("alice", seed=1)
    add_char("bob", seed=2)
    before = digest(store_path())
    r = run(*command, "-n", "x")
    assert r.exit_code != 0 and "Traceback" not in r.output
    assert digest(store_path()) == before


def test_a_folder_that_cannot_be_created_is_one_line(tmp_path: Path) -> None:
    add_char("alice", seed=1)
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    assert_clean_error(run("character", "export", "alice", "--out", blocker / "sub" / "lib.h5"), "cannot write")
    assert blocker.read_text() == "x" and not (tmp_path / "sub").exists()


def test_brackets_in_an_error_show_as_they_are(tmp_path: Path) -> None:
    """Messages are plain text, not rich markup: a path like shots[bold]/x or an extra's name [lora] survives."""
    add_char("alice", seed=1)
    blocker = tmp_path / "shots[bold]"
    blocker.write_text("x")
    r = run("character", "export", "alice", "--out", blocker / "[lora]" / "lib.h5")
    assert_clean_error(r, "cannot write", "shots[bold]/[lora]")


def test_brackets_in_a_result_line_show_as_they_are(tmp_path: Path) -> None:
    """Results on stdout are plain text too: a folder named [draft] is not read as a rich markup tag."""
    add_char("alice", seed=1)
    out = tmp_path / "[draft]" / "lib.h5"
    r = run("character", "export", "alice", "--out", out)
    assert r.exit_code == 0, r.output
    assert f"exported 1 character(s) to {out}" in r.output.replace("\n", "")


# ------------------------------------------------------------------------------------------------ start-up


@pytest.mark.slow
@pytest.mark.parametrize("argv", [["--help"], ["character", "list"], ["mix", "--help"]])
def test_light_commands_do_not_import_torch(argv: list[str], tmp_path: Path) -> None:
    code = (
        "import atexit, sys\n"
        "atexit.register(lambda: sys.stderr.write('\\nTORCH=%s' % ('torch' in sys.modules)))\n"
        "from face0cli.cli.app import main\n"
        f"sys.argv = ['face0'] + {argv!r}\n"
        "main()\n"
    )
    env = dict(os.environ, FACE0_STORE=str(tmp_path / "lib.h5"))
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert p.returncode == 0, p.stderr
    assert "TORCH=False" in p.stderr


@pytest.mark.slow
def test_python_dash_m_and_version() -> None:
    p = subprocess.run([sys.executable, "-m", "face0cli", "--version"], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0 and p.stdout.startswith("face0 ")
