"""Readers for image-caption datasets, the raw material of the training triplets (paper §2.1, §2.3).

Three kinds of source give one result, a `Dataset`: a sorted list of `Sample`s (key, ref, caption, score;
the image itself loads lazily) and `ReadStats` counting what could not be paired.

- **folder**: images (``.jpg .jpeg .png .webp .bmp``) anywhere under a folder, each with a caption file of
  the same stem beside it: ``.txt`` (the caption), or ``.json`` with a ``"caption"`` (or ``"text"``) string.
  The key is the path of the stem relative to the folder (``sub/0001``); a ``.txt`` caption wins over a
  ``.json`` one; a ``.json`` also provides the score field.
- **tar**: webdataset / img2dataset shards: plain ``.tar`` files of members ``{key}.jpg|jpeg|png|webp`` and
  ``{key}.txt|json`` (webdataset keys: the member path up to the first dot of its file name). A glob
  (``shards/*.tar``), one shard, a list of shards, or a folder holding only ``.tar`` files. Damaged bytes
  between members (a corrupt header, a truncated shard) are counted as corrupt members and skipped; the
  members after them are still read.
- **table**: a ``.csv`` / ``.tsv`` or ``.parquet`` file with an image path column and a caption column (names
  configurable; relative paths are relative to the table's folder). The key is the path as written.

Order is deterministic: folder and table samples sorted by key, tar samples by shard path then key. So
`Dataset.shard` (contiguous ranges, see there) gives every process the same, stable share.

An optional score filter (``min_score`` on ``score_column``, e.g. a LAION aesthetics score) drops pairs
whose score is lower or missing; a JSON caption file holds the score as a field, a table as a column.

No torch here: this module is imported by the training side's DataLoader workers too.
"""

from __future__ import annotations

import csv
import functools
import glob
import hashlib
import io
import json
import math
import os
import re
import tarfile
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, TypeGuard

from PIL import Image

from face0cli.errors import BadInput, ImageError, ParameterError

IMAGE_EXTS: tuple[str, ...] = ("jpg", "jpeg", "png", "webp", "bmp")
"""Image extensions, in order of preference when one key has several images (the others are duplicates)."""
CAPTION_EXTS: tuple[str, ...] = ("txt", "json")
CAPTION_FIELDS: tuple[str, ...] = ("caption", "text")
"""JSON fields that hold the caption, the first string one wins."""
TABLE_EXTS: tuple[str, ...] = (".csv", ".tsv", ".parquet")

_TAR_REF = re.compile(r"(?P<shard>.+\.tar)::(?P<member>.+)")


# ------------------------------------------------------------------------------------------------ samples


@dataclass(frozen=True)
class Sample:
    """One image-caption pair (paper §2.3); the image is decoded only by `load`.

    Attributes:
        key: unique within its source (folder: relative stem; tar: webdataset key; table: the path cell).
        ref: where the image is: a file path, or ``"<shard>.tar::<member>"`` for a tar member.
        caption: the caption, stripped, never empty.
        score: the score field / column when one was asked for, else None.
        span: (byte offset, size) of a tar member's data inside its shard, so loading needs no tar scan.
    """

    key: str
    ref: str
    caption: str
    score: float | None = None
    span: tuple[int, int] | None = field(default=None, repr=False)

    def load(self) -> Image.Image:
        """Decode the image as RGB; ImageError (or BadInput) when it cannot be read."""
        if self.span is None:
            return open_ref(self.ref)
        shard, member = _split_tar_ref(self.ref)
        return _image_from_bytes(_read_span(shard, *self.span), f"{shard}::{member}")


@dataclass
class ReadStats:
    """What a reader could not turn into a sample (all counts; nothing here is fatal).

    Attributes:
        images_without_caption: images with no caption file / cell, or one without a usable caption
            (empty text, JSON without a "caption" or "text" string, undecodable bytes).
        captions_without_image: caption files (or table rows) whose image does not exist.
        duplicate_images: extra images of a key that has several (``a.jpg`` and ``a.png``); the first in
            IMAGE_EXTS order is used.
        corrupt_members: damaged regions of tar shards (a corrupt header or a truncated member), skipped.
        below_min_score: pairs dropped by the score filter (lower than min_score, or no score).
    """

    images_without_caption: int = 0
    captions_without_image: int = 0
    duplicate_images: int = 0
    corrupt_members: int = 0
    below_min_score: int = 0

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


@dataclass
class Dataset:
    """A sorted list of image-caption samples plus how it was read (paper §2.3).

    Attributes:
        kind: "folder", "tar" or "table".
        source: what was given (paths as strings, or the glob pattern).
        samples: sorted, see the module docstring.
        stats: what could not be paired.
        options: reader options that change the samples (columns, score filter), saved with outputs.
    """

    kind: str
    source: list[str]
    samples: list[Sample]
    stats: ReadStats
    options: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.samples)

    def __iter__(self) -> Iterator[Sample]:
        return iter(self.samples)

    def __getitem__(self, i: int) -> Sample:
        return self.samples[i]

    def shard(self, i: int, n: int, align: int = 1) -> range:
        """The indices of shard i of n: see `shard_range`."""
        return shard_range(len(self.samples), i, n, align)

    def fingerprint(self) -> str:
        """sha256 of every sample's key, ref, caption and score, in order: equal fingerprints, equal data."""
        h = hashlib.sha256()
        for s in self.samples:
            h.update(json.dumps([s.key, s.ref, s.caption, s.score]).encode("utf-8"))
            h.update(b"\n")
        return h.hexdigest()

    def describe(self) -> dict[str, Any]:
        """A JSON-ready description (kind, source, options, counts) saved in the triplet file's settings."""
        return {
            "kind": self.kind,
            "source": self.source,
            "options": self.options,
            "samples": len(self.samples),
            "stats": self.stats.to_dict(),
        }


def shard_range(total: int, i: int, n: int, align: int = 1) -> range:
    """Sample indices of shard i of n: a contiguous range, made of whole blocks of `align` samples.

    The blocks (``total / align`` rounded up) are split into n contiguous runs whose sizes differ by at most
    one block; shard i takes run i. Shards 0..n-1 concatenated are exactly ``range(total)``, in order, so
    merging part files is a concatenation. With align = the prep chunk size, every chunk of a sharded run is
    a chunk of the unsharded run (same batches, same numbers).
    """
    if n < 1 or not 0 <= i < n:
        raise ParameterError(f"a shard is i/N with 0 <= i < N, got {i}/{n}.")
    if align < 1:
        raise ParameterError(f"shard alignment must be >= 1, got {align}.")
    blocks = -(-total // align)
    lo, hi = (blocks * i) // n, (blocks * (i + 1)) // n
    return range(min(lo * align, total), min(hi * align, total))


def parse_shard(spec: str) -> tuple[int, int]:
    """Parse ``"i/N"`` (e.g. ``--shard 0/4``) into (i, N)."""
    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", spec)
    if m is None:
        raise ParameterError(f"a shard is written i/N (e.g. 0/4), got {spec!r}.")
    i, n = int(m.group(1)), int(m.group(2))
    shard_range(0, i, n)
    return i, n


# ------------------------------------------------------------------------------------------------ opening


def open_dataset(
    source: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    *,
    image_column: str = "image",
    caption_column: str = "caption",
    score_column: str | None = None,
    min_score: float | None = None,
) -> Dataset:
    """Read an image-caption dataset of any supported kind (paper §2.3), chosen from what `source` is.

    Args:
        source: a folder of images + captions; a folder of only ``.tar`` shards; a ``.tar`` file, a glob
            of them, or a list of them; a ``.csv`` / ``.tsv`` / ``.parquet`` table.
        image_column, caption_column: table columns (tables only).
        score_column: JSON field (folder, tar) or column (table) holding a score, e.g. an aesthetics score.
        min_score: keep pairs whose score is >= this; needs score_column.
    """
    if min_score is not None:
        if score_column is None:
            raise ParameterError("a minimum score needs the score column (or JSON field) to read it from.")
        if not isinstance(min_score, (int, float)) or not math.isfinite(min_score):
            raise ParameterError(f"the minimum score must be a finite number, got {min_score!r}.")
    filt: dict[str, Any] = {"score_column": score_column, "min_score": min_score}
    if isinstance(source, (list, tuple)):
        return read_shards([Path(s) for s in source], **filt)
    text = os.fspath(source)  # type: ignore[arg-type]
    if glob.has_magic(text):
        shards = sorted(Path(p) for p in glob.glob(text))
        if not shards:
            raise BadInput(f"no file matches {text}.")
        return read_shards(shards, pattern=text, **filt)
    path = Path(text)
    if not path.exists():
        raise BadInput(f"{path} does not exist.")
    if path.is_dir():
        entries = [p for p in path.iterdir() if not p.name.startswith(".")]
        if entries and all(p.suffix == ".tar" for p in entries):
            return read_shards(sorted(entries), pattern=str(path), **filt)
        return read_folder(path, **filt)
    if path.suffix == ".tar":
        return read_shards([path], **filt)
    if path.suffix.lower() in TABLE_EXTS:
        return read_table(path, image_column=image_column, caption_column=caption_column, **filt)
    kinds = "a folder, .tar shards (a file, a glob or a list) or a .csv/.parquet table"
    raise BadInput(f"{path} is not a dataset: give {kinds}.")


def _usable_pair(caption: str | None, n_images: int, stats: ReadStats) -> TypeGuard[str]:
    """Count a caption without its image, an image without its caption, or extra images of one key in STATS;
    True when the key is a usable image-caption pair (its first image is used)."""
    if n_images == 0:
        stats.captions_without_image += 1
        return False
    stats.duplicate_images += n_images - 1
    if caption is None:
        stats.images_without_caption += 1
        return False
    return True


def read_folder(root: Path, *, score_column: str | None = None, min_score: float | None = None) -> Dataset:
    """Read a folder of images with same-stem ``.txt`` / ``.json`` captions (recursive; skips dot files)."""
    root = Path(root)
    if not root.is_dir():
        raise BadInput(f"{root} is not a folder.")
    groups: dict[str, dict[str, Path]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        rel = Path(dirpath).relative_to(root)
        for name in sorted(filenames):
            stem, dot, ext = name.rpartition(".")
            ext = ext.lower()
            if name.startswith(".") or not dot or not stem or ext not in IMAGE_EXTS + CAPTION_EXTS:
                continue
            key = (rel / stem).as_posix()
            group = groups.setdefault(key, {})
            if ext in group:
                ext = f"{ext}#{name}"  # a second file of one kind (a.JPG beside a.jpg): a duplicate image
            group[ext] = Path(dirpath) / name

    stats = ReadStats()
    samples: list[Sample] = []
    for key in sorted(groups):
        files = groups[key]
        images = [files[e] for e in sorted(files, key=_image_rank) if e.split("#")[0] in IMAGE_EXTS]
        caption, score = _caption_from_files(files.get("txt"), files.get("json"), score_column)
        if not _usable_pair(caption, len(images), stats):
            continue
        sample = Sample(key, str(images[0].resolve()), caption, score)
        if _passes(sample, min_score, stats):
            samples.append(sample)
    options = {"score_column": score_column, "min_score": min_score}
    return Dataset("folder", [str(root.resolve())], samples, stats, options)


def read_shards(
    shards: Sequence[Path],
    *,
    pattern: str | None = None,
    score_column: str | None = None,
    min_score: float | None = None,
) -> Dataset:
    """Read webdataset / img2dataset tar shards (``{key}.jpg`` + ``{key}.txt|json``) in sorted shard order."""
    if not shards:
        raise BadInput("no tar shards given.")
    stats = ReadStats()
    samples: list[Sample] = []
    for shard in sorted({Path(s).resolve() for s in shards}):
        if not shard.is_file():
            raise BadInput(f"tar shard {shard} does not exist.")
        members, damaged = _scan_tar(shard)
        stats.corrupt_members += damaged
        groups: dict[str, dict[str, tarfile.TarInfo]] = {}
        for info in members:
            folder, _, base = info.name.rpartition("/")
            stem, dot, ext = base.partition(".")
            ext = ext.lower()
            if not dot or not stem or ext not in IMAGE_EXTS + CAPTION_EXTS:
                continue
            key = f"{folder}/{stem}" if folder else stem
            groups.setdefault(key, {})[ext] = info  # a repeated member name: the later one wins, like tar -x
        with open(shard, "rb") as f:
            for key in sorted(groups):
                files = groups[key]
                images = [files[e] for e in IMAGE_EXTS if e in files]
                txt, js = (_read_member(f, files[e]) if e in files else None for e in CAPTION_EXTS)
                caption, score = _parse_caption(txt, js, score_column)
                if not _usable_pair(caption, len(images), stats):
                    continue
                img = images[0]
                sample = Sample(key, f"{shard}::{img.name}", caption, score, (img.offset_data, img.size))
                if _passes(sample, min_score, stats):
                    samples.append(sample)
    options = {"score_column": score_column, "min_score": min_score}
    source = [pattern] if pattern is not None else [str(Path(s).resolve()) for s in shards]
    return Dataset("tar", source, samples, stats, options)


def read_table(
    path: Path,
    *,
    image_column: str = "image",
    caption_column: str = "caption",
    score_column: str | None = None,
    min_score: float | None = None,
) -> Dataset:
    """Read a CSV / TSV / parquet table of image paths and captions (paths relative to the table's folder)."""
    path = Path(path)
    columns = [image_column, caption_column] + ([score_column] if score_column else [])
    rows = _table_rows(path, columns)
    base = path.resolve().parent
    stats = ReadStats()
    keyed: list[tuple[str, int, Sample]] = []
    for n, (image, caption, *rest) in enumerate(rows):
        image = "" if image is None else str(image).strip()
        caption = "" if caption is None else str(caption).strip()
        image_path = base / image if image else None
        if image_path is None or not image_path.is_file():
            stats.captions_without_image += 1
            continue
        if not caption:
            stats.images_without_caption += 1
            continue
        sample = Sample(image, str(image_path.resolve()), caption, _to_score(rest[0]) if rest else None)
        if _passes(sample, min_score, stats):
            keyed.append((image, n, sample))
    samples = [s for _, _, s in sorted(keyed, key=lambda t: (t[0], t[1]))]
    options = {
        "image_column": image_column,
        "caption_column": caption_column,
        "score_column": score_column,
        "min_score": min_score,
    }
    return Dataset("table", [str(path.resolve())], samples, stats, options)


# ------------------------------------------------------------------------------------------------ images


def open_ref(ref: str) -> Image.Image:
    """Decode the image a triplet's ``ref`` points to (a file, or ``shard.tar::member``) as RGB.

    The training side loads images with this; a tar shard's member index is built once per process.
    """
    m = _TAR_REF.fullmatch(ref)
    if m is None:
        from face0cli.faces.images import load_image

        return load_image(Path(ref))
    shard, member = m.group("shard"), m.group("member")
    span = _tar_index(shard).get(member)
    if span is None:
        raise BadInput(f"{shard} has no member {member}.")
    return _image_from_bytes(_read_span(shard, *span), ref)


def _split_tar_ref(ref: str) -> tuple[str, str]:
    m = _TAR_REF.fullmatch(ref)
    if m is None:
        raise BadInput(f"{ref} is not a tar member reference (shard.tar::member).")
    return m.group("shard"), m.group("member")


def _read_span(shard: str, offset: int, size: int) -> bytes:
    try:
        with open(shard, "rb") as f:
            f.seek(offset)
            data = f.read(size)
    except OSError as e:
        raise BadInput(f"cannot read {shard} ({e.strerror or e}).") from e
    if len(data) != size:
        raise ImageError(f"{shard} is truncated: a member ends past the end of the file.")
    return data


def _image_from_bytes(data: bytes, name: str) -> Image.Image:
    """Decode image bytes (a tar member) with the same checks as images.load_image gives files."""
    from face0cli.faces.images import load_image

    return load_image(io.BytesIO(data), name=name)


# ------------------------------------------------------------------------------------------------ helpers


def _image_rank(ext: str) -> tuple[int, str]:
    base = ext.split("#")[0]
    return (IMAGE_EXTS.index(base) if base in IMAGE_EXTS else len(IMAGE_EXTS), ext)


def _passes(sample: Sample, min_score: float | None, stats: ReadStats) -> bool:
    if min_score is None:
        return True
    if sample.score is None or sample.score < min_score:
        stats.below_min_score += 1
        return False
    return True


def _to_score(value: Any) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        score = float(value)
    except (TypeError, ValueError):
        return None
    return score if math.isfinite(score) else None


Caption = tuple[str | None, float | None]
"""(caption, score) read from caption files; caption None when none is usable."""


def _caption_from_files(txt: Path | None, js: Path | None, score_column: str | None) -> Caption:
    def read(p: Path | None) -> bytes | None:
        if p is None:
            return None
        try:
            return p.read_bytes()
        except OSError:
            return b""

    return _parse_caption(read(txt), read(js), score_column)


def _parse_caption(txt: bytes | None, js: bytes | None, score_column: str | None) -> Caption:
    """(caption, score) from a .txt and/or .json caption file's bytes; caption None when none is usable."""
    caption: str | None = None
    score: float | None = None
    if txt is not None:
        try:
            caption = txt.decode("utf-8-sig").strip() or None
        except UnicodeDecodeError:
            caption = None
    if js is not None:
        try:
            meta = json.loads(js.decode("utf-8-sig"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            meta = None
        if isinstance(meta, dict):
            if caption is None:
                texts = [meta.get(k) for k in CAPTION_FIELDS]
                caption = next((t.strip() for t in texts if isinstance(t, str) and t.strip()), None)
            if score_column is not None:
                score = _to_score(meta.get(score_column))
    return caption, score


def _read_member(f: BinaryIO, info: tarfile.TarInfo) -> bytes:
    f.seek(info.offset_data)
    return f.read(info.size)


def _scan_tar(shard: Path) -> tuple[list[tarfile.TarInfo], int]:
    """The regular-file members of a plain tar, and how many damaged regions were skipped.

    tarfile with ``ignore_zeros`` steps over blocks that are not valid headers and resynchronises on the next
    member; non-zero bytes between one member's data and the next header (or the end of the file) are one
    damaged region, and a member whose data runs past the end of the file (a truncated shard) is another.
    """
    size = shard.stat().st_size
    damaged = 0
    members: list[tarfile.TarInfo] = []
    try:
        tf = tarfile.open(shard, mode="r:", ignore_zeros=True)  # noqa: SIM115 (closed by the with below)
    except (tarfile.ReadError, OSError) as e:
        raise BadInput(f"{shard} is not a readable tar shard ({e}).") from e
    with tf, open(shard, "rb") as raw:
        expected = 0
        while True:
            try:
                info = tf.next()
            except tarfile.ReadError:  # the previous member's data runs past the end of the file
                break
            if info is None:
                break
            if info.offset > expected and _has_data(raw, expected, info.offset):
                damaged += 1
            expected = info.offset_data + -(-info.size // tarfile.BLOCKSIZE) * tarfile.BLOCKSIZE
            if info.isfile():
                members.append(info)
        if expected < size and _has_data(raw, expected, size):
            damaged += 1
    whole = [m for m in members if m.offset_data + m.size <= size]
    return whole, damaged + len(members) - len(whole)


def _has_data(raw: BinaryIO, start: int, stop: int) -> bool:
    """Whether bytes [start, stop) hold anything but zeros (tar padding and end-of-archive blocks)."""
    raw.seek(start)
    left = stop - start
    while left > 0:
        block = raw.read(min(left, 1 << 20))
        if not block:
            return False
        if block.count(0) != len(block):
            return True
        left -= len(block)
    return False


@functools.lru_cache(maxsize=256)
def _tar_index(shard: str) -> dict[str, tuple[int, int]]:
    members, _ = _scan_tar(Path(shard))
    return {m.name: (m.offset_data, m.size) for m in members}


def _table_rows(path: Path, columns: list[str]) -> list[tuple[Any, ...]]:
    """The given columns of a CSV / TSV / parquet table, row by row."""
    suffix = path.suffix.lower()
    if not path.is_file():
        raise BadInput(f"{path} does not exist.")
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        try:
            names = pq.read_schema(path).names
            _check_columns(path, columns, names)
            table = pq.read_table(path, columns=columns)
        except (OSError, ValueError) as e:  # pyarrow's ArrowInvalid is a ValueError
            raise BadInput(f"{path} is not a readable parquet file ({e}).") from e
        return list(zip(*(table.column(c).to_pylist() for c in columns)))
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f, delimiter="\t" if suffix == ".tsv" else ",")
            _check_columns(path, columns, reader.fieldnames or [])
            return [tuple(row.get(c) for c in columns) for row in reader]
    except (UnicodeDecodeError, csv.Error) as e:
        raise BadInput(f"{path} is not a readable {suffix[1:].upper()} file ({e}).") from e


def _check_columns(path: Path, wanted: list[str], names: Sequence[str]) -> None:
    missing = [c for c in wanted if c not in names]
    if missing:
        wanted_text = ", ".join(repr(c) for c in missing)
        raise BadInput(f"{path} has no column {wanted_text} (its columns: {', '.join(names) or 'none'}).")
