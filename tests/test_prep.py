"""face0 prep (paper §2.1, §2.3): dataset -> triplet file, with real MTCNN and a seeded InceptionResnetV1.

The dataset (tests/test_data.py) has 8 image-caption pairs: 4 faces, 2 images without a face, a face under
20 px and an unreadable file; plus 2 images without caption and 1 caption without image.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import pickle
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest

from face0cli.config import PrepConfig
from face0cli.data import prep as prep_module
from face0cli.data.prep import (
    FORMAT,
    PrepSummary,
    TripletFile,
    merge_parts,
    part_path,
    prep,
    read_summary,
    read_triplets,
)
from face0cli.data.readers import open_dataset, open_ref
from face0cli.errors import BadInput, EmbedderMismatch, NewerFormat, NoFaceFound
from tests.test_data import CAPTIONS, KEPT, SAMPLE_KEYS, _ext, make_folder, make_shards, make_table

CFG = PrepConfig(chunk_size=3)
"""8 samples in chunks of 3: [0, 3), [3, 6), [6, 8); shard 0/2 is the first chunk, shard 1/2 the others."""
ROOT = Path(__file__).resolve().parent.parent

COUNTS = {
    "samples": 8,
    "seen": 8,
    "kept": 4,
    "no_face": 2,  # coffee, flat
    "too_small": 1,  # tiny_face
    "unreadable": 1,  # corrupt
    "missing_caption": 2,  # nocap, blankcap
    "missing_image": 1,  # orphan.txt
    "duplicate_images": 0,
    "corrupt_members": 0,
    "below_min_score": 0,
    "shards": 1,
}


@pytest.fixture(scope="module")
def embedder() -> Any:
    from face0cli.faces.embedders import FacenetEmbedder

    return FacenetEmbedder(seed=0)


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_folder(tmp_path_factory.mktemp("prep") / "ds")


@pytest.fixture(scope="module")
def reference(folder: Path, embedder: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An uninterrupted, unsharded, single-process prep of the folder."""
    out = tmp_path_factory.mktemp("ref") / "triplets.h5"
    prep(open_dataset(folder), out, embedder, CFG, show_progress=False)
    return out


class Wrapped:
    """The test embedder with a different id, or one that stops (like Ctrl-C) at its n-th detection."""

    def __init__(self, inner: Any, *, stop_at: int | None = None, id: str | None = None) -> None:
        self.inner, self.stop_at, self.calls = inner, stop_at, 0
        self.id = id or inner.id
        self.dim, self.cfg = inner.dim, inner.cfg

    def detect(self, image: Any) -> Any:
        self.calls += 1
        if self.stop_at is not None and self.calls >= self.stop_at:
            raise KeyboardInterrupt
        return self.inner.detect(image)

    def crop(self, image: Any, box: Any) -> Any:
        return self.inner.crop(image, box)

    def embed(self, crops: Any) -> Any:
        return self.inner.embed(crops)


def snapshot(path: Path) -> tuple[dict[str, np.ndarray], dict[str, Any], dict[str, Any]]:
    """Datasets, root attributes and summary of a triplet file, less what differs between equal runs
    (creation time, timing)."""
    with h5py.File(path, "r") as f:
        data = {name: f[name][()] for name in f}
        attrs = {k: prep_module._plain(v) for k, v in f.attrs.items() if k not in ("created", "summary")}
        summary = json.loads(f.attrs["summary"])
    for k in ("seconds", "images_per_s", "out"):
        summary.pop(k)
    return data, attrs, summary


def assert_same_file(a: Path, b: Path, *, skip: tuple[str, ...] = (), atol: float = 0.0) -> None:
    da, aa, sa = snapshot(a)
    db, ab, sb = snapshot(b)
    assert sorted(da) == sorted(db)
    for name in da:
        if atol and da[name].dtype.kind == "f":
            np.testing.assert_allclose(da[name], db[name], atol=atol, rtol=0, err_msg=name)
        else:
            np.testing.assert_array_equal(da[name], db[name], err_msg=name)
    for k in skip:  # root attributes or summary keys
        for d in (aa, ab, sa, sb):
            d.pop(k, None)
    assert aa == ab
    assert sa == sb


# ------------------------------------------------------------------------------------------------ one run


def test_prep_folder_counts_and_schema(reference: Path, embedder: Any, folder: Path) -> None:
    summary = read_summary(reference)
    assert {k: v for k, v in summary.to_dict().items() if k in COUNTS} == COUNTS
    with h5py.File(reference, "r") as f:
        assert f.attrs["format"] == FORMAT and f.attrs["format_version"] == 1
        assert f.attrs["embedder_id"] == embedder.id and f.attrs["dim"] == embedder.dim
        assert bool(f.attrs["complete"]) and f.attrs["rows"] == 4 and f.attrs["done"] == 8
        settings = json.loads(f.attrs["settings"])
        assert settings["prep"] == {"min_face": 20, "chunk_size": 3}
        assert settings["crop"]["margin_top"] == 33 and settings["dataset"]["kind"] == "folder"
        assert f["embedding"].shape == (4, embedder.dim) and f["embedding"].dtype == np.float32
        assert f["embedding"].chunks[1] == embedder.dim
        assert f["box"].shape == (4, 4) and f["box"].dtype == np.float32
        assert list(f["key"].asstr()[:]) == KEPT
        assert list(f["index"][:]) == [SAMPLE_KEYS.index(k) for k in KEPT]
        assert list(f["caption"].asstr()[:]) == [CAPTIONS[k] for k in KEPT]
        assert f["prob"][:].min() > 0.9
    # each row is what the embedder gives that image's largest face
    t = read_triplets(reference)
    assert len(t) == 4 and t.embedder_id == embedder.id and t.dim == embedder.dim
    for i in range(len(t)):
        row = t[i]
        assert row["ref"] == str((folder / f"{row['key']}.{_ext(row['key'])}").resolve())
        image = open_ref(row["ref"])
        face = embedder.detect(image)[0]
        np.testing.assert_allclose(row["box"], np.asarray(face.box, np.float32), atol=1e-3)
        direct = embedder.embed([embedder.crop(image, face.box)])[0]
        np.testing.assert_allclose(row["embedding"], direct, atol=1e-4)
    # the mirrored astronaut is the same person but not the same vector
    e = t.embeddings()
    assert e.shape == (4, embedder.dim) and not np.allclose(e[0], e[3])


def test_summary_table_and_json(reference: Path) -> None:
    from rich.console import Console

    summary = read_summary(reference)
    console = Console(record=True, width=100)
    console.print(summary.table())
    text = console.export_text()
    assert "kept (one face each)" in text and "images/s" in text
    assert json.loads(json.dumps(summary.to_dict()))["kept"] == 4
    assert summary.images_per_s > 0


@pytest.mark.parametrize("kind", ["tar", "csv", "parquet"])
def test_prep_other_sources_same_triplets(kind: str, reference: Path, folder: Path, embedder: Any, tmp_path):
    if kind == "tar":
        make_shards(folder, tmp_path / "shards")
        ds = open_dataset(str(tmp_path / "shards" / "shard-*.tar"))
        extra = {"missing_image": 2, "corrupt_members": 1}  # + the damaged member's orphan caption
    else:
        table = make_table(folder, folder.parent / f"pairs.{kind}")
        ds = open_dataset(table, image_column="file", caption_column="text")
        extra = {"missing_caption": 1, "missing_image": 1}  # the empty caption, missing.jpg
    summary = prep(ds, tmp_path / "t.h5", embedder, CFG, show_progress=False)
    assert {k: v for k, v in summary.to_dict().items() if k in COUNTS} == {**COUNTS, **extra}
    got, ref = read_triplets(tmp_path / "t.h5"), read_triplets(reference)
    assert [got[i]["caption"] for i in range(4)] == [ref[i]["caption"] for i in range(4)]
    np.testing.assert_array_equal(got.embeddings(), ref.embeddings())  # same pixels, same batches
    for i in range(4):
        np.testing.assert_array_equal(got[i]["box"], ref[i]["box"])
    if kind == "tar":
        assert got[0]["ref"].endswith("shard-00000.tar::astronaut.jpg")


# ------------------------------------------------------------------------------------------------ resume


def test_interrupted_then_resumed_equals_uninterrupted(reference: Path, folder: Path, embedder, tmp_path):
    out = tmp_path / "t.h5"
    ds = open_dataset(folder)
    # detections: astronaut, camera, coffee (chunk 0), flat, grace_hopper (5th: stop, chunk 1 lost)
    with pytest.raises(KeyboardInterrupt):
        prep(ds, out, Wrapped(embedder, stop_at=5), CFG, show_progress=False)
    with h5py.File(out, "r") as f:
        assert not f.attrs["complete"] and f.attrs["done"] == 3 and f.attrs["rows"] == 2
    with pytest.raises(BadInput, match="unfinished"):
        read_triplets(out)
    # a write cut short after the last commit leaves rows past @rows: resume drops them
    with h5py.File(out, "r+") as f:
        for name in ("embedding", "key", "ref"):
            f[name].resize(5, axis=0)
        f["embedding"][2:] = 7.0
    summary = prep(ds, out, embedder, CFG, show_progress=False)
    assert summary.seen == 8 and summary.kept == 4
    assert_same_file(out, reference)


@pytest.mark.slow
def test_killed_process_resumes(reference: Path, folder: Path, embedder: Any, tmp_path: Path) -> None:
    out = tmp_path / "t.h5"
    code = (
        "import os, signal, sys\n"
        "from face0cli.data import prep as p\n"
        "from face0cli.config import PrepConfig\n"
        "from face0cli.data.readers import open_dataset\n"
        "from face0cli.faces.embedders import FacenetEmbedder\n"
        "p._after_chunk = lambda path, done: os.kill(os.getpid(), signal.SIGKILL) if done >= 6 else None\n"
        "p.prep(open_dataset(sys.argv[1]), sys.argv[2], FacenetEmbedder(seed=0), PrepConfig(chunk_size=3),"
        " show_progress=False)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code, str(folder), str(out)], cwd=ROOT, capture_output=True)
    assert proc.returncode == -9, proc.stderr.decode()[-2000:]
    with h5py.File(out, "r") as f:
        assert not f.attrs["complete"] and f.attrs["done"] == 6 and f.attrs["rows"] == 3
    prep(open_dataset(folder), out, embedder, CFG, show_progress=False)
    assert_same_file(out, reference)


def test_finished_file_is_left_alone(reference: Path, folder: Path, embedder: Any, tmp_path: Path) -> None:
    out = tmp_path / "t.h5"
    shutil.copy(reference, out)
    summary = prep(open_dataset(folder), out, Wrapped(embedder, stop_at=1), CFG, show_progress=False)
    assert summary.kept == 4  # no detection ran
    assert_same_file(out, reference)


def test_resume_refuses_other_embedder_newer_format_other_data(
    reference: Path, folder: Path, embedder: Any, tmp_path: Path
) -> None:
    out = tmp_path / "t.h5"
    ds = open_dataset(folder)
    shutil.copy(reference, out)
    with pytest.raises(EmbedderMismatch):
        prep(ds, out, Wrapped(embedder, id="another-embedder"), CFG, show_progress=False)
    with pytest.raises(BadInput, match="other data or settings"):
        prep(ds, out, embedder, PrepConfig(chunk_size=4), show_progress=False)
    with pytest.raises(BadInput, match="other data or settings"):
        prep(open_dataset(folder, score_column="aesthetic"), out, embedder, CFG, show_progress=False)
    with h5py.File(out, "r+") as f:
        f.attrs["format_version"] = 2
    with pytest.raises(NewerFormat):
        prep(ds, out, embedder, CFG, show_progress=False)
    with pytest.raises(NewerFormat):
        read_triplets(out)
    # resume=False starts a file over, of any embedder (but never one of a newer format)
    with pytest.raises(NewerFormat):
        prep(ds, out, embedder, CFG, resume=False, show_progress=False)
    shutil.copy(reference, out)
    other = Wrapped(embedder, id="another-embedder")
    summary = prep(ds, out, other, CFG, resume=False, show_progress=False)
    assert summary.kept == 4 and read_triplets(out).embedder_id == "another-embedder"
    foreign = tmp_path / "foreign.h5"
    with h5py.File(foreign, "w") as f:
        f.attrs["format"] = "something-else"
    with pytest.raises(BadInput, match="not a face0 triplet file"):
        prep(ds, foreign, embedder, CFG, resume=False, show_progress=False)


# ------------------------------------------------------------------------------------------------ shards


def test_shards_merged_equal_unsharded(reference: Path, folder: Path, embedder: Any, tmp_path: Path) -> None:
    out = tmp_path / "t.h5"
    ds = open_dataset(folder)
    s0 = prep(ds, out, embedder, CFG, shard=(0, 2), show_progress=False)
    s1 = prep(ds, out, embedder, CFG, shard=(1, 2), show_progress=False)
    assert (s0.samples, s1.samples) == (3, 5) and s0.kept + s1.kept == 4
    assert part_path(out, 1, 2).name == "t.h5.part-1-of-2.h5" and part_path(out, 1, 2).exists()
    assert not out.exists()
    with pytest.raises(BadInput, match="missing"):
        merge_parts(out, 3)
    summary = merge_parts(out)  # finds the 2 parts itself
    assert not part_path(out, 0, 2).exists() and not part_path(out, 1, 2).exists()
    assert {k: v for k, v in summary.to_dict().items() if k in COUNTS} == {**COUNTS, "shards": 2}
    assert_same_file(out, reference, skip=("merged_from", "shards"))


def test_more_shards_than_chunks(reference: Path, folder: Path, embedder: Any, tmp_path: Path) -> None:
    """4 shards of 3 chunks: shard 0/4 is empty, yet finished, and the merge is the unsharded file."""
    out = tmp_path / "t.h5"
    ds = open_dataset(folder)
    sizes = [prep(ds, out, embedder, CFG, shard=(i, 4), show_progress=False).samples for i in range(4)]
    assert sizes == [0, 3, 3, 2]
    merge_parts(out, 4)
    assert_same_file(out, reference, skip=("merged_from", "shards"))


def test_merge_refuses_unfinished_or_mixed_parts(folder: Path, embedder: Any, tmp_path: Path) -> None:
    out = tmp_path / "t.h5"
    ds = open_dataset(folder)
    prep(ds, out, embedder, CFG, shard=(0, 2), show_progress=False)
    with pytest.raises(KeyboardInterrupt):
        prep(ds, out, Wrapped(embedder, stop_at=2), CFG, shard=(1, 2), show_progress=False)
    with pytest.raises(BadInput, match="unfinished"):
        merge_parts(out, 2)
    prep(
        ds,
        out,
        Wrapped(embedder, id="another-embedder"),
        CFG,
        shard=(1, 2),
        resume=False,
        show_progress=False,
    )
    with pytest.raises(EmbedderMismatch):
        merge_parts(out, 2)
    assert part_path(out, 0, 2).exists()  # nothing removed on failure


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_processes_with_accelerate(reference: Path, folder: Path, tmp_path: Path) -> None:
    """A real 2-process run (gloo on CPU): each rank preps its shard, rank 0 merges."""
    out = tmp_path / "t.h5"
    accelerate = Path(sys.executable).with_name("accelerate")
    cmd = [str(accelerate), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1"]
    cmd += ["--main_process_port", str(_free_port()), "--mixed_precision", "no", "--dynamo_backend", "no"]
    cmd += [str(ROOT / "tests" / "_prep_launch.py"), str(folder), str(out), str(CFG.chunk_size)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [json.loads(x) for x in proc.stdout.splitlines() if x.startswith('{"rank"')]
    assert sorted(x["rank"] for x in lines) == [0, 1]
    assert all(x["summary"]["kept"] == 4 and x["summary"]["shards"] == 2 for x in lines)
    assert not part_path(out, 0, 2).exists() and not part_path(out, 1, 2).exists()
    # one torch thread per process instead of two: float results may differ in the last bits
    assert_same_file(out, reference, skip=("merged_from", "shards"), atol=1e-4)


# ------------------------------------------------------------------------------------------------ failures


def test_empty_dataset_and_no_faces(folder: Path, embedder: Any, tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "orphan.txt").write_text("no image")
    with pytest.raises(BadInput, match="no image-caption pairs"):
        prep(open_dataset(empty), tmp_path / "e.h5", embedder, CFG, show_progress=False)
    faceless = tmp_path / "faceless"
    faceless.mkdir()
    for key in ("coffee", "flat", "tiny_face"):
        for p in folder.glob(f"{key}.*"):
            shutil.copy(p, faceless / p.name)
    out = tmp_path / "f.h5"
    with pytest.raises(NoFaceFound, match="nothing to train on"):
        prep(open_dataset(faceless), out, embedder, CFG, show_progress=False)
    assert not out.exists()


# -------------------------------------------------------------------------------------------- latents, reader


def test_latents_hook(folder: Path, embedder: Any, tmp_path: Path) -> None:
    def encode(images: list[Any]) -> np.ndarray:
        return np.stack([np.asarray(im.resize((4, 4))).transpose(2, 0, 1) / 255.0 for im in images])

    encode.id = "mean-colour-4x4"  # type: ignore[attr-defined]
    out = tmp_path / "t.h5"
    prep(open_dataset(folder), out, embedder, CFG, encode_latents=encode, show_progress=False)
    t = read_triplets(out)
    assert t.has_latents

    for i in range(len(t)):
        row = t[i]
        assert row["latents"].shape == (3, 4, 4) and row["latents"].dtype == np.float32
        np.testing.assert_allclose(row["latents"], encode([open_ref(row["ref"])])[0], atol=1e-6)
    with h5py.File(out, "r") as f:
        assert f.attrs["latents_id"] == "mean-colour-4x4"


def _first_caption(t: TripletFile) -> str:
    return t[0]["caption"]


def test_triplet_file_pickles_and_forks(reference: Path) -> None:
    t = read_triplets(reference)
    first = t[0]
    assert set(first) == {"ref", "caption", "key", "embedding", "box", "prob"}
    assert t[-1]["key"] == KEPT[-1]
    with pytest.raises(IndexError):
        t[4]
    clone = pickle.loads(pickle.dumps(t))  # opened file handle not pickled
    np.testing.assert_array_equal(clone[0]["embedding"], first["embedding"])
    # the parent's handle is open: the forked child reopens the file
    with multiprocessing.get_context("fork").Pool(1) as pool:
        assert pool.apply(_first_caption, (t,)) == first["caption"]
    t.close()
    assert isinstance(t.summary, PrepSummary) and t.summary.kept == 4
