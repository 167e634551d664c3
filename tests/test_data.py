"""Image-caption readers (paper §2.3): folder, tar shards, CSV / parquet: counts, order, loading, shards."""

from __future__ import annotations

import csv
import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from face0cli.data.readers import Dataset, open_dataset, open_ref, parse_shard, read_shards, shard_range
from face0cli.errors import BadInput, ParameterError

# The test dataset: (key, image kind, caption file). Sorted keys; what prep should make of each image.
#   face: astronaut / grace hopper / cameraman / mirrored astronaut -> kept
#   coffee, flat colour -> no face; a 15x19 px face -> too small; garbage bytes -> unreadable
# plus an image without caption, one whose caption is blank, and a caption without image.
KEPT = ["astronaut", "camera", "grace_hopper", "people/astronaut_flip"]
SAMPLE_KEYS = [
    "astronaut",
    "camera",
    "coffee",
    "corrupt",
    "flat",
    "grace_hopper",
    "people/astronaut_flip",
    "tiny_face",
]
CAPTIONS = {
    "astronaut": "a photo of an astronaut",
    "camera": "a man with a camera",
    "coffee": "a cup of coffee",
    "corrupt": "a broken file",
    "flat": "a flat blue square",
    "grace_hopper": "a portrait of a woman in uniform",
    "people/astronaut_flip": "a mirrored astronaut",
    "tiny_face": "a small face far away",
}
SCORES = {"grace_hopper": 6.5, "camera": 5.0}
"""The "aesthetic" JSON field / column; the other samples have none."""


def _images() -> dict[str, bytes]:
    """Encoded image bytes by key (corrupt is not an image)."""
    import matplotlib.cbook
    import skimage.data

    def enc(arr: np.ndarray, fmt: str) -> bytes:
        buf = io.BytesIO()
        Image.fromarray(arr).save(buf, format=fmt, **({"quality": 95} if fmt == "JPEG" else {}))
        return buf.getvalue()

    astro = skimage.data.astronaut()
    # a face of about 15x19 px: the astronaut shrunk to 96 px on a grey canvas (MTCNN still finds it)
    small = Image.fromarray(astro).resize((96, 96), Image.LANCZOS)
    canvas = Image.new("RGB", (256, 256), (128, 128, 128))
    canvas.paste(small, (80, 80))
    hopper = Path(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)).read_bytes()
    return {
        "astronaut": enc(astro, "JPEG"),
        "camera": enc(skimage.data.camera(), "PNG"),
        "coffee": enc(skimage.data.coffee(), "JPEG"),
        "corrupt": b"this is not a JPEG file at all\n" * 10,
        "flat": enc(np.full((200, 300, 3), (40, 80, 200), np.uint8), "PNG"),
        "grace_hopper": hopper,
        "people/astronaut_flip": enc(np.ascontiguousarray(astro[:, ::-1]), "JPEG"),
        "tiny_face": enc(np.asarray(canvas), "PNG"),
        "nocap": enc(np.full((64, 64, 3), 200, np.uint8), "PNG"),
        "blankcap": enc(np.full((64, 64, 3), 100, np.uint8), "JPEG"),
    }


EXT = {"camera": "png", "flat": "png", "tiny_face": "png", "nocap": "png"}


def _ext(key: str) -> str:
    return EXT.get(key, "jpg")


def _caption_files(key: str) -> dict[str, bytes]:
    """Caption files of a key: JSON (with the score) for the scored ones, "text" field for flat, else .txt."""
    if key in SCORES:
        return {"json": json.dumps({"caption": CAPTIONS[key], "aesthetic": SCORES[key]}).encode()}
    if key == "flat":
        return {"json": json.dumps({"text": CAPTIONS[key], "width": 300}).encode()}
    return {"txt": CAPTIONS[key].encode()}


def make_folder(root: Path) -> Path:
    """The test dataset as a folder of images with .txt / .json captions."""
    root.mkdir(parents=True, exist_ok=True)
    for key, data in _images().items():
        path = root / f"{key}.{_ext(key)}"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        if key in CAPTIONS:
            for ext, cap in _caption_files(key).items():
                (root / f"{key}.{ext}").write_bytes(cap)
    (root / "blankcap.txt").write_text("   \n")
    (root / "orphan.txt").write_text("a caption whose image is lost")
    (root / "notes.md").write_text("not part of the dataset")
    (root / ".hidden.jpg").write_bytes(b"ignored")
    return root


def _add(tf: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tf.addfile(info, io.BytesIO(data))


def make_shards(folder: Path, out: Path) -> list[Path]:
    """The folder dataset as two webdataset shards, the second with a damaged member ("broken", whose caption
    is then an orphan): counts as the folder plus one corrupt member and one caption without image."""
    out.mkdir(parents=True, exist_ok=True)
    first = {"astronaut", "camera", "coffee", "corrupt"}
    shards = [out / "shard-00000.tar", out / "shard-00001.tar"]
    files = sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith("."))
    with (
        tarfile.open(shards[0], "w", format=tarfile.USTAR_FORMAT) as t0,
        tarfile.open(shards[1], "w", format=tarfile.USTAR_FORMAT) as t1,
    ):
        for p in files:
            name = p.relative_to(folder).as_posix()
            key = name.rsplit(".", 1)[0]
            _add(t0 if key in first else t1, name, p.read_bytes())
            if name == "flat.png":  # the damaged member sits in the middle of shard 1
                _add(t1, "broken.jpg", _images()["coffee"])
                _add(t1, "broken.txt", b"an image whose tar header is damaged")
    _damage_header(shards[1], "broken.jpg")
    return shards


def _damage_header(shard: Path, member: str) -> None:
    with tarfile.open(shard) as tf:
        offset = tf.getmember(member).offset
    with open(shard, "r+b") as f:
        f.seek(offset)
        f.write(b"\xff" * 512)


def make_table(folder: Path, path: Path) -> Path:
    """The folder dataset as a CSV or parquet table beside the folder (relative paths), plus a row whose image
    is missing and a row with an empty caption."""
    rows = []
    for key in SAMPLE_KEYS:
        file = f"{folder.name}/{key}.{_ext(key)}"
        rows.append({"file": file, "text": CAPTIONS[key], "aesthetic": SCORES.get(key)})
    rows.append({"file": f"{folder.name}/missing.jpg", "text": "a missing image", "aesthetic": 9.0})
    rows.append({"file": f"{folder.name}/nocap.png", "text": "", "aesthetic": None})
    rows.reverse()  # the reader sorts
    if path.suffix == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(rows), path)
    else:
        with open(path, "w", newline="") as f:
            w = csv.DictWriter(f, ["file", "text", "aesthetic"])
            w.writeheader()
            w.writerows([{**r, "aesthetic": "" if r["aesthetic"] is None else r["aesthetic"]} for r in rows])
    return path


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_folder(tmp_path_factory.mktemp("data") / "ds")


# ------------------------------------------------------------------------------------------------ folder


def test_folder_pairs_sorted_with_counts(folder: Path) -> None:
    ds = open_dataset(folder)
    assert ds.kind == "folder"
    assert [s.key for s in ds] == SAMPLE_KEYS
    assert [s.caption for s in ds] == [CAPTIONS[k] for k in SAMPLE_KEYS]
    assert ds.stats.to_dict() == {
        "images_without_caption": 2,  # nocap.png, blankcap.jpg (blank .txt)
        "captions_without_image": 1,  # orphan.txt
        "duplicate_images": 0,
        "corrupt_members": 0,
        "below_min_score": 0,
    }
    assert ds[0].ref == str((folder / "astronaut.jpg").resolve())
    assert ds[SAMPLE_KEYS.index("people/astronaut_flip")].ref.endswith("people/astronaut_flip.jpg")
    assert all(s.score is None for s in ds)  # no score column asked for


def test_folder_score_filter(folder: Path) -> None:
    ds = open_dataset(folder, score_column="aesthetic", min_score=5.5)
    assert [(s.key, s.score) for s in ds] == [("grace_hopper", 6.5)]
    assert ds.stats.below_min_score == len(SAMPLE_KEYS) - 1
    scored = open_dataset(folder, score_column="aesthetic")
    assert {s.key: s.score for s in scored if s.score is not None} == SCORES
    with pytest.raises(ParameterError):
        open_dataset(folder, min_score=5.5)


def test_folder_duplicates_and_lazy_load(tmp_path: Path) -> None:
    Image.new("RGB", (8, 6), (255, 0, 0)).save(tmp_path / "a.png")
    Image.new("RGB", (8, 6), (0, 255, 0)).save(tmp_path / "a.jpg")
    (tmp_path / "a.PNG").write_bytes((tmp_path / "a.png").read_bytes())  # same kind, other case
    (tmp_path / "a.txt").write_text("red or green")
    ds = open_dataset(tmp_path)
    assert len(ds) == 1 and ds.stats.duplicate_images == 2
    assert ds[0].ref.endswith("a.jpg")  # jpg comes first in IMAGE_EXTS
    img = ds[0].load()
    assert img.mode == "RGB" and img.size == (8, 6) and img.getpixel((4, 3))[1] > 200


def test_corrupt_image_fails_only_on_load(folder: Path) -> None:
    ds = open_dataset(folder)
    sample = ds[SAMPLE_KEYS.index("corrupt")]
    with pytest.raises(BadInput):
        sample.load()


def test_fingerprint_tracks_content(folder: Path, tmp_path: Path) -> None:
    assert open_dataset(folder).fingerprint() == open_dataset(folder).fingerprint()
    copy = make_folder(tmp_path / "ds")
    before = open_dataset(copy).fingerprint()
    (copy / "coffee.txt").write_text("a cup of tea")
    assert open_dataset(copy).fingerprint() != before


# ------------------------------------------------------------------------------------------------ tar


def test_shards_match_folder_and_skip_damage(folder: Path, tmp_path: Path) -> None:
    shards = make_shards(folder, tmp_path / "shards")
    ds = open_dataset(str(tmp_path / "shards" / "*.tar"))
    assert ds.kind == "tar"
    assert [s.key for s in ds] == SAMPLE_KEYS  # the damaged member's neighbours are still there
    assert [s.caption for s in ds] == [CAPTIONS[k] for k in SAMPLE_KEYS]
    assert ds.stats.corrupt_members == 1
    assert ds.stats.captions_without_image == 2  # orphan.txt and broken.txt (its image is lost)
    assert ds.stats.images_without_caption == 2
    assert ds[0].ref == f"{shards[0].resolve()}::astronaut.jpg"
    # a list of shards, and a folder of shards, read the same
    assert [s.ref for s in open_dataset(list(reversed(shards)))] == [s.ref for s in ds]
    assert open_dataset(tmp_path / "shards").fingerprint() == ds.fingerprint()
    # lazy loading from the member's bytes gives the same pixels as the file
    for s, f in zip(ds, open_dataset(folder)):
        if s.key != "corrupt":
            assert np.array_equal(np.asarray(s.load()), np.asarray(f.load()))
            assert np.array_equal(np.asarray(open_ref(s.ref)), np.asarray(f.load()))


def test_truncated_shard_counts_the_cut_member(folder: Path, tmp_path: Path) -> None:
    shard = tmp_path / "cut.tar"
    with tarfile.open(shard, "w") as tf:
        for key in ("astronaut", "coffee"):
            _add(tf, f"{key}.jpg", (folder / f"{key}.jpg").read_bytes())
            _add(tf, f"{key}.txt", CAPTIONS[key].encode())
    with tarfile.open(shard) as tf:
        cut = tf.getmember("coffee.jpg").offset_data + 100
    shard.write_bytes(shard.read_bytes()[:cut])
    ds = read_shards([shard])
    assert [s.key for s in ds] == ["astronaut"]
    assert ds.stats.corrupt_members == 1


def test_not_a_tar(tmp_path: Path) -> None:
    bad = tmp_path / "bad.tar"
    bad.write_bytes(b"")
    with pytest.raises(BadInput):
        open_dataset(bad)
    with pytest.raises(BadInput):
        open_dataset(str(tmp_path / "nothing-*.tar"))


# ------------------------------------------------------------------------------------------------ tables


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_table(folder: Path, suffix: str) -> None:
    table = make_table(folder, folder.parent / f"pairs{suffix}")
    ds = open_dataset(table, image_column="file", caption_column="text", score_column="aesthetic")
    assert ds.kind == "table"
    assert [s.key for s in ds] == [f"ds/{k}.{_ext(k)}" for k in SAMPLE_KEYS]
    assert [s.ref for s in ds] == [s.ref for s in open_dataset(folder)]
    assert [s.caption for s in ds] == [CAPTIONS[k] for k in SAMPLE_KEYS]
    assert {s.key.split("/")[1].split(".")[0]: s.score for s in ds if s.score is not None} == SCORES
    assert ds.stats.captions_without_image == 1 and ds.stats.images_without_caption == 1
    columns = {"image_column": "file", "caption_column": "text", "score_column": "aesthetic"}
    filtered = open_dataset(table, **columns, min_score=6)
    assert [s.key for s in filtered] == ["ds/grace_hopper.jpg"]
    with pytest.raises(BadInput, match="no column 'image'"):
        open_dataset(table, caption_column="text")


# ------------------------------------------------------------------------------------------------ shards


CASES = [(0, 3, 1), (10, 3, 1), (10, 4, 4), (9, 2, 4), (5, 8, 2), (64, 2, 64)]


@pytest.mark.parametrize("total,n,align", CASES)
def test_shard_ranges_cover_in_order(total: int, n: int, align: int) -> None:
    ranges = [shard_range(total, i, n, align) for i in range(n)]
    assert [j for r in ranges for j in r] == list(range(total))
    for r in ranges:
        assert r.start % align == 0  # every shard starts on a chunk boundary
    lengths = [len(r) for r in ranges]
    assert max(lengths) - min(lengths) <= align


def test_parse_shard() -> None:
    assert parse_shard("1/4") == (1, 4)
    for bad in ("4/4", "x/2", "1/0", "-1/2"):
        with pytest.raises(ParameterError):
            parse_shard(bad)


def test_unknown_source(tmp_path: Path) -> None:
    (tmp_path / "x.zip").write_bytes(b"PK")
    with pytest.raises(BadInput):
        open_dataset(tmp_path / "x.zip")
    with pytest.raises(BadInput):
        open_dataset(tmp_path / "missing")
    empty = open_dataset(tmp_path)
    assert isinstance(empty, Dataset) and len(empty) == 0
