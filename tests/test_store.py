"""FaceStore: schema, round trips, the name rule, bad files, atomic locked writes (concurrency, SIGKILL)."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from datetime import datetime, timedelta
from pathlib import Path

import h5py
import numpy as np
import pytest

from face0cli import __version__
from face0cli.errors import (
    BadInput,
    CharacterExists,
    InvalidName,
    NewerFormat,
    StoreError,
    UnknownCharacter,
)
from face0cli.library import store
from face0cli.library.store import Character, FaceStore, check_name, default_store_path

REPO = Path(__file__).resolve().parents[1]


def vec(seed: int, dim: int = 8) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(dim).astype(np.float32)


def char(name: str, seed: int = 0, dim: int = 8, **kw) -> Character:
    kw.setdefault("embedder_id", "test/emb")
    kw.setdefault("kind", "photo")
    kw.setdefault("provenance", {"seed": seed})
    return Character.new(name, vec(seed, dim), **kw)


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def temps(directory: Path) -> list[Path]:
    return [p for p in directory.iterdir() if p.name.endswith(".face0-tmp")]


@pytest.fixture
def lib(tmp_path: Path) -> FaceStore:
    return FaceStore(tmp_path / "lib" / "characters.h5")


def child_env() -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))


# ------------------------------------------------------------------------------------------ schema, fields


def test_file_is_plain_hdf5_with_documented_schema(lib: FaceStore) -> None:
    prov = {"sources": [{"file": "a.jpg", "sha256": "0" * 64, "box": [1.0, 2.0, 30.0, 40.0], "prob": 0.99}]}
    lib.add(Character.new("alice", vec(1, 16), "inception/sha256:abc", "photo", prov, note="hi"))
    with h5py.File(lib.path, "r") as f:
        assert f.attrs["format"] == "face0-characters"
        assert int(f.attrs["format_version"]) == 1
        assert f.attrs["created_by"] == f"face0 {__version__}"
        assert list(f.keys()) == ["characters"]
        ds = f["characters"]["alice"]
        assert ds.dtype == np.float32 and ds.shape == (16,)
        np.testing.assert_array_equal(ds[()], vec(1, 16))
        assert ds.attrs["embedder_id"] == "inception/sha256:abc"
        assert int(ds.attrs["dim"]) == 16
        assert ds.attrs["kind"] == "photo"
        assert json.loads(ds.attrs["provenance"]) == prov
        assert ds.attrs["note"] == "hi"
        assert datetime.fromisoformat(ds.attrs["created"]).utcoffset() == timedelta(0)


def test_round_trip_of_every_field(lib: FaceStore) -> None:
    prov = {"parents": ["a", "b"], "weights": [0.25, 0.75], "op": "weighted_mean", "nested": {"ü": [1, None]}}
    c = Character.new("mix-1.v_2", vec(3, 1792), "emb/x", "mix", prov, note="ünïcode note ✓")
    lib.add(c)
    got = FaceStore(lib.path).get("mix-1.v_2")
    assert got.name == c.name and got.embedder_id == c.embedder_id and got.dim == 1792 == c.dim
    assert got.kind == "mix" and got.provenance == prov and got.created == c.created and got.note == c.note
    assert got.vector.dtype == np.float32
    np.testing.assert_array_equal(got.vector, c.vector)
    assert [x.name for x in lib.list()] == ["mix-1.v_2"]


def test_new_sets_dim_created_and_freezes_vector() -> None:
    before = datetime.now().astimezone()
    c = Character.new("a", [1.0, 2.0, 2.0], "e", "random", {"seed": 3})
    assert c.dim == 3 and c.vector.dtype == np.float32
    created = datetime.fromisoformat(c.created)
    assert created.utcoffset() == timedelta(0)
    assert abs((created - before).total_seconds()) < 5
    with pytest.raises(ValueError):
        c.vector[0] = 5.0
    with pytest.raises(AttributeError):
        c.name = "b"  # type: ignore[misc]


@pytest.mark.parametrize(
    "vector",
    [[1.0, float("nan")], [float("inf"), 0.0], [1e39, 0.0], [[1.0, 2.0]], []],
    ids=["nan", "inf", "overflows-float32", "2-d", "empty"],
)
def test_new_rejects_bad_vectors(vector) -> None:
    with pytest.raises(BadInput):
        Character.new("a", vector, "e", "photo", {})


def test_new_rejects_bad_kind_provenance_embedder() -> None:
    with pytest.raises(BadInput, match="kind"):
        Character.new("a", [1.0], "e", "photograph", {})
    with pytest.raises(BadInput, match="JSON"):
        Character.new("a", [1.0], "e", "photo", {"x": object()})
    with pytest.raises(BadInput, match="JSON"):
        Character.new("a", [1.0], "e", "photo", {"x": float("nan")})
    with pytest.raises(BadInput, match="embedder"):
        Character.new("a", [1.0], "", "photo", {})


def test_to_json_has_norm_not_vector_unless_asked() -> None:
    c = Character.new("a", [3.0, 4.0], "e", "photo", {"k": 1}, note="n")
    j = c.to_json()
    assert "vector" not in j and j["norm"] == pytest.approx(5.0)
    assert j | {"created": None} == {
        "name": "a",
        "kind": "photo",
        "embedder_id": "e",
        "dim": 2,
        "norm": 5.0,
        "created": None,
        "note": "n",
        "provenance": {"k": 1},
    }
    full = json.loads(json.dumps(c.to_json(include_vector=True)))
    assert full["vector"] == [3.0, 4.0]


# ------------------------------------------------------------------------------------------------- names


@pytest.mark.parametrize("name", ["a", "Z", "7", "alice", "Alice-2.v_3", "9lives", "a" * 64, "random2", "x.."])
def test_valid_names(name: str) -> None:
    assert check_name(name) == name


@pytest.mark.parametrize(
    "name",
    [
        "",
        ".",
        "..",
        ".hidden",
        "-x",
        "_x",
        "a/b",
        "../x",
        "a b",
        " a",
        "a" * 65,
        "random",
        "RANDOM",
        "é",
        "a:b",
        "a=b",
        "a\n",
        "a\\b",
    ],
)
def test_invalid_names(name: str, lib: FaceStore) -> None:
    with pytest.raises(InvalidName):
        check_name(name)
    with pytest.raises(InvalidName):
        Character.new(name, [1.0], "e", "photo", {})
    assert not lib.path.exists()


def test_invalid_new_name_in_rename(lib: FaceStore) -> None:
    lib.add(char("alice"))
    before = digest(lib.path)
    with pytest.raises(InvalidName):
        lib.rename("alice", "a/b")
    assert digest(lib.path) == before


# ------------------------------------------------------------------------------------------ library ops


def test_missing_file_is_an_empty_library_and_reads_create_nothing(lib: FaceStore) -> None:
    assert lib.list() == [] and lib.names() == [] and len(lib) == 0 and "alice" not in lib
    with pytest.raises(UnknownCharacter, match="empty"):
        lib.get("alice")
    with pytest.raises(UnknownCharacter):
        lib.remove("alice")
    with pytest.raises(UnknownCharacter):
        lib.rename("alice", "bob")
    assert not lib.path.parent.exists()


def test_list_sorted_contains_and_unknown_suggestion(lib: FaceStore) -> None:
    lib.add_many([char("carol", 3), char("alice", 1), char("bob", 2)])
    assert [c.name for c in lib.list()] == ["alice", "bob", "carol"]
    assert "bob" in lib and "bobby" not in lib and len(lib) == 3
    with pytest.raises(UnknownCharacter, match="did you mean 'alice'"):
        lib.get("alcie")
    with pytest.raises(UnknownCharacter) as e:
        lib.get("zzzzzz")
    assert "did you mean" not in str(e.value) and "zzzzzz" in str(e.value)


def test_duplicate_without_and_with_force(lib: FaceStore) -> None:
    lib.add(char("alice", 1))
    before = digest(lib.path)
    with pytest.raises(CharacterExists, match="alice"):
        lib.add(char("alice", 2))
    assert digest(lib.path) == before
    lib.add(char("alice", 2, dim=4), force=True)
    got = lib.get("alice")
    assert got.dim == 4
    np.testing.assert_array_equal(got.vector, vec(2, 4))
    assert temps(lib.path.parent) == []


def test_add_many_is_all_or_nothing(lib: FaceStore) -> None:
    lib.add(char("bob", 2))
    before = digest(lib.path)
    with pytest.raises(CharacterExists, match="bob"):
        lib.add_many([char("alice", 1), char("bob", 5), char("carol", 3)])
    assert digest(lib.path) == before and lib.names() == ["bob"]
    with pytest.raises(BadInput, match="twice"):
        lib.add_many([char("dora", 1), char("dora", 2)])
    assert lib.names() == ["bob"]
    lib.add_many([char("alice", 1), char("bob", 5), char("carol", 3)], force=True)
    assert lib.names() == ["alice", "bob", "carol"]
    np.testing.assert_array_equal(lib.get("bob").vector, vec(5))


def test_remove(lib: FaceStore) -> None:
    lib.add_many([char("alice", 1), char("bob", 2)])
    lib.remove("alice")
    assert lib.names() == ["bob"]
    before = digest(lib.path)
    with pytest.raises(UnknownCharacter, match="alice"):
        lib.remove("alice")
    assert digest(lib.path) == before


def test_rename(lib: FaceStore) -> None:
    lib.add_many([char("alice", 1), char("bob", 2)])
    created = lib.get("alice").created
    lib.rename("alice", "carol")
    assert lib.names() == ["bob", "carol"]
    got = lib.get("carol")
    np.testing.assert_array_equal(got.vector, vec(1))
    assert got.created == created and got.provenance == {"seed": 1}
    before = digest(lib.path)
    with pytest.raises(CharacterExists, match="bob"):
        lib.rename("carol", "bob")
    with pytest.raises(UnknownCharacter, match="ghost"):
        lib.rename("ghost", "dave")
    assert digest(lib.path) == before
    lib.rename("carol", "bob", force=True)
    assert lib.names() == ["bob"]
    np.testing.assert_array_equal(lib.get("bob").vector, vec(1))
    lib.rename("bob", "bob")
    assert lib.names() == ["bob"]


def test_export_and_import(lib: FaceStore, tmp_path: Path) -> None:
    lib.add_many([char("alice", 1), char("bob", 2), char("carol", 3)])
    out = tmp_path / "share" / "two.h5"
    assert lib.export(["carol", "alice"], out) == ["carol", "alice"]
    shared = FaceStore(out)
    assert shared.names() == ["alice", "carol"]
    np.testing.assert_array_equal(shared.get("carol").vector, vec(3))
    assert shared.get("carol").created == lib.get("carol").created

    with pytest.raises(BadInput, match="exists"):
        lib.export(["bob"], out)
    with pytest.raises(UnknownCharacter, match="ghost"):
        lib.export(["ghost"], tmp_path / "ghost.h5")
    assert not (tmp_path / "ghost.h5").exists()
    with pytest.raises(BadInput, match="itself"):
        lib.export(None, lib.path, force=True)
    lib.export(["bob"], out, force=True)
    assert shared.names() == ["bob"]

    other = FaceStore(tmp_path / "other.h5")
    other.add(char("bob", 9))
    before = digest(other.path)
    with pytest.raises(CharacterExists, match="bob"):
        other.import_from(lib.path)
    assert digest(other.path) == before
    assert other.import_from(lib.path, names=["alice"]) == ["alice"]
    assert other.names() == ["alice", "bob"]
    with pytest.raises(UnknownCharacter, match="ghost"):
        other.import_from(lib.path, names=["ghost"])
    assert sorted(other.import_from(lib.path, force=True)) == ["alice", "bob", "carol"]
    np.testing.assert_array_equal(other.get("bob").vector, vec(2))
    with pytest.raises(BadInput):
        other.import_from(tmp_path / "nope.h5")
    with pytest.raises(BadInput, match="itself"):
        other.import_from(other.path)


def test_parent_folders_are_created_and_permissions_kept(tmp_path: Path) -> None:
    lib = FaceStore(tmp_path / "a" / "b" / "c" / "lib.h5")
    lib.add(char("alice"))
    assert lib.path.is_file()
    assert lib.path.stat().st_mode & 0o777 == 0o600  # biometric data: private unless the user says otherwise
    os.chmod(lib.path, 0o640)
    lib.add(char("bob"))
    assert lib.path.stat().st_mode & 0o777 == 0o640


def test_symlinked_store_stays_a_link(tmp_path: Path) -> None:
    real = FaceStore(tmp_path / "real" / "characters.h5")
    real.add(char("alice", 1))
    link = tmp_path / "link.h5"
    link.symlink_to(real.path)
    FaceStore(link).add(char("bob", 2))
    assert link.is_symlink()
    assert real.names() == ["alice", "bob"] == FaceStore(link).names()


def test_default_store_path(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("FACE0_STORE", str(tmp_path / "x.h5"))
    assert default_store_path() == tmp_path / "x.h5"
    monkeypatch.delenv("FACE0_STORE")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert default_store_path() == tmp_path / "xdg" / "face0" / "characters.h5"
    monkeypatch.delenv("XDG_DATA_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_store_path() == tmp_path / "home" / ".local" / "share" / "face0" / "characters.h5"


@pytest.mark.slow
def test_store_module_imports_no_torch_or_sklearn() -> None:
    code = "import sys, face0cli.library.store; print(sorted(m for m in ('torch', 'sklearn') if m in sys.modules))"
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=child_env(), timeout=60)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == "[]"


# -------------------------------------------------------------------------------------------- bad files


def _make_bad(kind: str, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if kind == "random_bytes":
        path.write_bytes(np.random.default_rng(0).bytes(4096))
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "truncated":
        FaceStore(path).add_many([char("alice", 1, dim=2048), char("bob", 2, dim=2048)])
        path.write_bytes(path.read_bytes()[:3000])
    elif kind == "foreign_h5":
        with h5py.File(path, "w") as f:
            f["data"] = np.arange(3)
    elif kind == "no_group":
        with h5py.File(path, "w") as f:
            f.attrs["format"] = "face0-characters"
            f.attrs["format_version"] = 1
    elif kind == "bad_character":
        FaceStore(path).add(char("alice"))
        with h5py.File(path, "a") as f:
            del f["characters"]["alice"].attrs["embedder_id"]
    elif kind == "newer_format":
        FaceStore(path).add(char("alice"))
        with h5py.File(path, "a") as f:
            f.attrs["format_version"] = 2


BAD = ["random_bytes", "empty", "truncated", "foreign_h5", "no_group", "newer_format"]


@pytest.mark.parametrize("kind", BAD)
def test_bad_files_give_store_errors_and_stay_unchanged(kind: str, lib: FaceStore, tmp_path: Path) -> None:
    _make_bad(kind, lib.path)
    before = digest(lib.path)
    expected = NewerFormat if kind == "newer_format" else StoreError
    reads = [lib.list, lib.names, lambda: lib.get("alice"), lambda: "alice" in lib]
    writes = [
        lambda: lib.add(char("zed")),
        lambda: lib.add(char("zed"), force=True),
        lambda: lib.remove("alice"),
        lambda: lib.rename("alice", "zed"),
        lambda: lib.export(["alice"], tmp_path / "out.h5"),
        lambda: FaceStore(tmp_path / "fresh.h5").import_from(lib.path),
    ]
    for op in reads + writes:
        with pytest.raises(expected) as e:
            op()
        assert str(lib.path) in str(e.value)
        if kind == "newer_format":
            assert "newer face0 (format 2, this face0 reads up to 1); upgrade face0" in str(e.value)
    assert digest(lib.path) == before
    assert temps(lib.path.parent) == []
    assert not (tmp_path / "out.h5").exists() and not (tmp_path / "fresh.h5").exists()


def test_one_malformed_character(lib: FaceStore, tmp_path: Path) -> None:
    """A character whose attributes were damaged (e.g. edited by hand) fails reads that need it, names itself,
    and can be removed; the others stay usable."""
    _make_bad("bad_character", lib.path)
    lib.add(char("bob", 2))
    before = digest(lib.path)
    for op in (lib.list, lambda: lib.get("alice"), lambda: lib.export(None, tmp_path / "out.h5")):
        with pytest.raises(StoreError, match="character 'alice'") as e:
            op()
        assert str(lib.path) in str(e.value)
    assert digest(lib.path) == before and not (tmp_path / "out.h5").exists()
    np.testing.assert_array_equal(lib.get("bob").vector, vec(2))
    lib.remove("alice")
    assert [c.name for c in lib.list()] == ["bob"]


@pytest.mark.parametrize("offset", [0, 600, 1100, 2000, 9000, 12000])
def test_damaged_bytes_are_detected_or_harmless(offset: int, lib: FaceStore) -> None:
    """Random bytes written over part of a library: every read either raises StoreError naming the file or
    returns exactly the stored data (metadata and vectors carry checksums)."""
    lib.add_many([char("alice", 1, dim=2048), char("bob", 2, dim=2048)])
    data = bytearray(lib.path.read_bytes())
    assert offset + 200 < len(data)
    data[offset : offset + 200] = np.random.default_rng(offset).bytes(200)
    lib.path.write_bytes(bytes(data))
    try:
        chars = lib.list()
    except StoreError as e:
        assert str(lib.path) in str(e)
    else:
        assert [c.name for c in chars] == ["alice", "bob"]
        np.testing.assert_array_equal(chars[0].vector, vec(1, 2048))
        np.testing.assert_array_equal(chars[1].vector, vec(2, 2048))


def test_a_folder_at_the_store_path(lib: FaceStore) -> None:
    lib.path.mkdir(parents=True)
    for op in (lib.list, lambda: lib.add(char("a"))):
        with pytest.raises(StoreError, match="folder"):
            op()


# ----------------------------------------------------------------------------------------- write errors


def test_unwritable_location_is_a_store_error(tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("not a folder")
    lib = FaceStore(tmp_path / "afile" / "lib.h5")
    with pytest.raises(StoreError, match="cannot write"):
        lib.add(char("alice"))


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_folder_is_a_store_error(lib: FaceStore) -> None:
    lib.add(char("alice"))
    before = digest(lib.path)
    os.chmod(lib.path.parent, 0o500)
    try:
        with pytest.raises(StoreError, match="cannot write"):
            lib.add(char("bob"))
    finally:
        os.chmod(lib.path.parent, 0o700)
    assert digest(lib.path) == before and temps(lib.path.parent) == []


def test_failure_before_replace_leaves_store_and_no_temp(lib: FaceStore, monkeypatch: pytest.MonkeyPatch) -> None:
    lib.add(char("alice"))
    before = digest(lib.path)
    seen: list[Path] = []

    def disk_full(tmp: Path) -> None:
        seen.append(tmp)
        assert FaceStore(tmp).names() == ["alice", "bob"]  # the temp copy holds the new state
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(store, "_before_replace", disk_full)
    with pytest.raises(StoreError, match="No space left"):
        lib.add(char("bob"))
    assert seen and not seen[0].exists()
    assert digest(lib.path) == before and temps(lib.path.parent) == []


# --------------------------------------------------------------------------------- concurrency and kills

WRITER = """
import sys, time
from pathlib import Path
import numpy as np
from face0cli.library.store import Character, FaceStore
path, tag, n, go = sys.argv[1], sys.argv[2], int(sys.argv[3]), Path(sys.argv[4])
started = Path(sys.argv[5]) if len(sys.argv) > 5 else None  # created once the first character is written
while not go.exists():
    time.sleep(0.005)
lib = FaceStore(path)
for i in range(n):
    lib.add(Character.new(f"{tag}-{i}", np.full(64, i, np.float32), "e", "photo", {"writer": tag, "i": i}))
    if started is not None and i == 0:
        started.touch()
"""


@pytest.mark.slow
def test_concurrent_writers_lose_nothing(lib: FaceStore, tmp_path: Path) -> None:
    lib.add(char("seed"))
    go = tmp_path / "go"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, str(lib.path), tag, "20", str(go)],
            env=child_env(),
            stderr=subprocess.PIPE,
            text=True,
        )
        for tag in ("p", "q", "r")
    ]
    time.sleep(0.5)  # let every child import and wait at the start line
    go.touch()
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
    names = set(lib.names())
    expected = {"seed"} | {f"{t}-{i}" for t in "pqr" for i in range(20)}
    assert names == expected
    c = lib.get("q-7")
    assert c.provenance == {"writer": "q", "i": 7}
    np.testing.assert_array_equal(c.vector, np.full(64, 7, np.float32))
    assert temps(lib.path.parent) == []


def _wait_for(path: Path, proc: subprocess.Popen, timeout: float = 60) -> None:
    end = time.monotonic() + timeout
    while not path.exists():
        if proc.poll() is not None:
            raise AssertionError(f"child ended early: {proc.communicate()[1]}")
        assert time.monotonic() < end, "child never reached the hook"
        time.sleep(0.01)


@pytest.mark.slow
@pytest.mark.parametrize("where", ["inside_h5py_write", "before_replace"])
def test_sigkill_mid_write_keeps_previous_file(where: str, lib: FaceStore, tmp_path: Path) -> None:
    lib.add_many([char("alice", 1), char("bob", 2)])
    before = digest(lib.path)
    marker = tmp_path / "reached"
    code = textwrap.dedent(f"""
        import sys, time
        from pathlib import Path
        import numpy as np
        from face0cli.library import store
        from face0cli.library.store import Character, FaceStore

        def stall(*args):
            Path({str(marker)!r}).touch()
            time.sleep(120)

        if {where!r} == "before_replace":
            store._before_replace = stall
        else:
            original = FaceStore._write
            def slow_write(group, char):
                original(group, char)
                if char.name == "big-3":  # three big vectors are in the open temp file, more to come
                    group.file.flush()
                    stall()
            FaceStore._write = staticmethod(slow_write)
        chars = [Character.new(f"big-{{i}}", np.ones(500_000, np.float32) * i, "e", "photo", {{}})
                 for i in range(8)]
        FaceStore({str(lib.path)!r}).add_many(chars, force=True)
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], env=child_env(), stderr=subprocess.PIPE, text=True)
    try:
        _wait_for(marker, proc)
        leftover = temps(lib.path.parent)
        assert len(leftover) == 1 and leftover[0].stat().st_size > 4 * 500_000 * 3  # really mid-write
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert digest(lib.path) == before
    assert [c.name for c in lib.list()] == ["alice", "bob"]
    np.testing.assert_array_equal(lib.get("bob").vector, vec(2))
    # the dead writer's lock is free and its temp file is cleaned up by the next write
    lib.add(char("carol", 3))
    assert lib.names() == ["alice", "bob", "carol"] and temps(lib.path.parent) == []


@pytest.mark.slow
def test_sigkill_at_random_moments_leaves_a_consistent_prefix(lib: FaceStore, tmp_path: Path) -> None:
    """A writer adding characters one by one, killed at arbitrary moments: the file always opens and holds
    exactly the characters of some completed write."""
    go = tmp_path / "go"
    go.touch()
    rng = np.random.default_rng(0)
    done = 0
    for round_ in range(4):
        tag, started = f"r{round_}", tmp_path / f"started-{round_}"
        proc = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(lib.path), tag, "1000000", str(go), str(started)],
            env=child_env(),
            stderr=subprocess.PIPE,
            text=True,
        )
        deadline = time.monotonic() + 120  # however slow the machine is at importing, it is killed while writing
        while not started.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(float(rng.uniform(0, 0.6)))
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        assert proc.returncode == -signal.SIGKILL, proc.communicate()[1]  # killed while still writing
        names = set(lib.names())
        mine = {n for n in names if n.startswith(tag + "-")}
        assert mine == {f"{tag}-{i}" for i in range(len(mine))}, "not a prefix of the writes"
        assert len(names) == done + len(mine)
        done = len(names)
        for c in lib.list():  # every character reads back whole
            assert c.vector.shape == (64,)
    assert done > 0
