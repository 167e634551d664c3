"""Image-caption data -> a triplet file (image ref, caption, face embedding) for training (paper §2.1, §2.3).

For every sample: load the image, detect faces (MTCNN), keep the largest, drop it under 20 px, crop it with
the paper's margins to 160x160 and embed it; embeddings are computed in batches. docs/triplets-format.md
describes the HDF5 file.

**Chunks and resume.** Samples are processed in chunks of ``PrepConfig.chunk_size`` (chunk k is samples
``[k*C, (k+1)*C)`` of the dataset's sorted order). Each chunk is committed by opening the file, appending its
rows, flushing, then writing the ``done`` / ``rows`` / ``summary`` attributes, and closing it again, so
between chunks the file on disk is always closed and consistent. A run stopped at any point (Ctrl-C, a crash,
a kill) loses at most the chunk in flight: the next run drops rows past ``rows`` (a write cut short) and goes
on at sample ``done``. Chunks are the same in every run, so a resumed file equals an uninterrupted one.

**Shards.** ``shard=(i, N)`` prepares the i-th of N contiguous, chunk-aligned ranges (`data.shard_range`) into
``<out>.part-i-of-N.h5``; `merge_parts` copies the parts, in order, into one triplet file (a plain copy, not
an HDF5 virtual dataset, so the result stands alone and the parts can go). Launched with several processes
(``accelerate launch`` / ``torchrun``), `prep` does this by itself: each process takes the shard of its rank,
all wait at a barrier, the main process merges. On GPUs, build each process's embedder on
``accelerate.PartialState().device``; on CPU each process gets its share of the cores as torch threads.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import h5py
import numpy as np

from face0cli import __version__
from face0cli.config import PrepConfig
from face0cli.data.readers import Dataset, Sample
from face0cli.errors import BadInput, EmbedderMismatch, Face0Error, NewerFormat, NoFaceFound

if TYPE_CHECKING:
    from PIL import Image
    from rich.table import Table

    from face0cli.faces.embedders import Embedder

FORMAT = "face0-triplets"
FORMAT_VERSION = 1

EncodeLatents = Callable[[list["Image.Image"]], np.ndarray]
"""Hook for ``--latents MODEL``: full RGB images of the kept samples -> an (n, ...) float array (e.g. VAE
latents at the training resolution; the callable resizes/crops itself). Its ``id`` attribute, if any, is
saved in the settings."""

_STR = h5py.string_dtype("utf-8")
_ROW_CHUNK = 64
"""HDF5 chunk rows of the embedding dataset: 64 x 1792 x 4 B = 459 KiB, under h5py's 1 MiB chunk cache."""

_after_chunk: Callable[[Path, int], None] | None = None
"""Test hook: called with the file and its ``done`` count after each committed chunk."""


# ------------------------------------------------------------------------------------------------ summary


@dataclass
class PrepSummary:
    """What prep did with each sample (paper §2.3: no face, faces under 20 px, unreadable images are dropped).

    Attributes:
        out: the triplet (or part) file.
        samples: image-caption pairs in this file's range.
        seen: of those, processed so far (equal to samples once complete).
        kept: rows written (one face each).
        no_face, too_small, unreadable: samples dropped, by reason.
        missing_caption, missing_image, duplicate_images, corrupt_members, below_min_score: what the reader
            could not pair (whole dataset; `data.ReadStats`).
        seconds: processing time (summed over resumed runs; the longest part for merged shards).
        shards: how many part files were merged into this one (1: none).
    """

    out: str = ""
    samples: int = 0
    seen: int = 0
    kept: int = 0
    no_face: int = 0
    too_small: int = 0
    unreadable: int = 0
    missing_caption: int = 0
    missing_image: int = 0
    duplicate_images: int = 0
    corrupt_members: int = 0
    below_min_score: int = 0
    seconds: float = 0.0
    shards: int = 1

    _PER_SAMPLE = ("samples", "seen", "kept", "no_face", "too_small", "unreadable")
    _READER = ("missing_caption", "missing_image", "duplicate_images", "corrupt_members", "below_min_score")

    @property
    def images_per_s(self) -> float:
        return self.seen / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["seconds"] = round(self.seconds, 3)
        d["images_per_s"] = round(self.images_per_s, 2)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PrepSummary:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    def table(self) -> Table:
        """The summary as a rich table (counts and rate)."""
        from rich.table import Table

        t = Table(title=f"face0 prep -> {self.out}", title_justify="left")
        t.add_column("")
        t.add_column("count", justify="right")
        rows = [
            ("image-caption pairs", self.samples),
            ("seen", self.seen),
            ("kept (one face each)", self.kept),
            ("no face", self.no_face),
            ("face too small", self.too_small),
            ("unreadable image", self.unreadable),
            ("image without caption", self.missing_caption),
            ("caption without image", self.missing_image),
            ("duplicate image of a key", self.duplicate_images),
            ("corrupt tar member", self.corrupt_members),
            ("below minimum score", self.below_min_score),
        ]
        for label, n in rows:
            t.add_row(label, str(n))
        t.add_row("images/s", f"{self.images_per_s:.1f}")
        return t


# ------------------------------------------------------------------------------------------------ prep


def part_path(out: Path, i: int, n: int) -> Path:
    """The part file of shard i of n: ``<out>.part-i-of-N.h5``."""
    out = Path(out)
    return out.with_name(f"{out.name}.part-{i}-of-{n}.h5")


def prep(
    dataset: Dataset,
    out: Path,
    embedder: Embedder,
    cfg: PrepConfig = PrepConfig(),
    shard: tuple[int, int] | None = None,
    *,
    resume: bool = True,
    batch_size: int = 32,
    encode_latents: EncodeLatents | None = None,
    show_progress: bool = True,
) -> PrepSummary:
    """Turn a dataset into a triplet file: largest face >= 20 px, margin crop, embedding (paper §2.1, §2.3).

    Args:
        dataset: from `data.open_dataset`.
        out: the triplet file (HDF5). With a shard, the part file `part_path(out, i, N)` is written instead.
        embedder: detects, crops and embeds (`faces.Embedder`); its id and dim are saved, checked on resume.
        cfg: minimum face size and chunk size.
        shard: (i, N) to prepare only shard i of N. None: the whole dataset, or, when launched with several
            processes (accelerate / torchrun), this process's shard followed by a merge on the main process.
        resume: go on with an unfinished file of the same data and settings (else start it over).
        batch_size: faces per embedder call.
        encode_latents: optional hook writing a ``latents`` dataset (see `EncodeLatents`).
        show_progress: a progress bar with images/s on stderr (main process only).

    Returns:
        The summary of this file (merged file under several processes). Raises BadInput for an empty dataset,
        and NoFaceFound when no image has a usable face (unsharded: nothing is left on disk).
    """
    if batch_size < 1:
        raise BadInput(f"batch size must be >= 1, got {batch_size}.")
    if len(dataset) == 0:
        note = _reader_note(dataset)
        raise BadInput(f"{_source(dataset)} has no image-caption pairs ({note}); nothing to prepare.")
    out = Path(out)
    job = _Job(dataset, embedder, cfg, resume, batch_size, encode_latents, show_progress)
    if shard is not None:
        i, n = shard
        return _prep_range(job, part_path(out, i, n), dataset.shard(i, n, cfg.chunk_size), shard)
    state = _distributed_state(embedder)
    if state is not None and state.num_processes > 1:
        return _prep_distributed(job, state, out)
    summary = _prep_range(job, out, range(len(dataset)), None)
    if summary.kept == 0:
        out.unlink(missing_ok=True)
        raise _no_faces(job, summary)
    return summary


@dataclass(frozen=True)
class _Job:
    """What every range of one prep run shares."""

    dataset: Dataset
    embedder: Embedder
    cfg: PrepConfig
    resume: bool
    batch_size: int
    encode_latents: EncodeLatents | None
    show_progress: bool


def _prep_distributed(job: _Job, state: Any, out: Path) -> PrepSummary:
    """Each process prepares the shard of its rank; after a barrier the main process merges the parts."""
    n, rank = state.num_processes, state.process_index
    if job.resume and out.exists():
        with _open_h5(out, "r") as f:
            _check_resumable(out, f.attrs, _header(job, range(len(job.dataset)), None))
            if f.attrs["complete"]:
                return read_summary(out)
    rng = job.dataset.shard(rank, n, job.cfg.chunk_size)
    local = dataclasses.replace(job, show_progress=job.show_progress and state.is_local_main_process)
    _prep_range(local, part_path(out, rank, n), rng, (rank, n))
    state.wait_for_everyone()
    parts = [part_path(out, i, n) for i in range(n)]
    total = _sum_summaries([read_summary(p) for p in parts], str(out))
    state.wait_for_everyone()  # every process has read the parts before the main process merges them away
    if total.kept == 0:
        if state.is_main_process:
            for p in parts:
                p.unlink(missing_ok=True)
        raise _no_faces(job, total)
    if state.is_main_process:
        merge_parts(out, parts=parts)
    state.wait_for_everyone()
    return read_summary(out)


def _prep_range(job: _Job, path: Path, rng: range, shard: tuple[int, int] | None) -> PrepSummary:
    """Prepare samples rng of the dataset into path, chunk by chunk, resuming what path already holds."""
    header = _header(job, rng, shard)
    summary = _open_or_create(path, header, job.dataset, job.resume)
    if summary.seen >= len(rng):
        return summary
    from face0cli.console import progress

    bar = progress(rate_unit="images/s") if job.show_progress else None
    t_run = time.perf_counter()
    seen_before, seconds_before = summary.seen, summary.seconds
    task = None
    if bar is not None:
        bar.start()
        label = f"prep {path.name}" if shard is None else f"prep shard {shard[0]}/{shard[1]}"
        task = bar.add_task(label, total=len(rng), completed=summary.seen, rate="")
    try:
        start = rng.start + summary.seen
        for lo in range(start, rng.stop, job.cfg.chunk_size):
            chunk = range(lo, min(lo + job.cfg.chunk_size, rng.stop))
            rows = _process_chunk(job, chunk, summary)
            summary.seen += len(chunk)
            summary.seconds = seconds_before + time.perf_counter() - t_run
            _commit(path, rows, summary)
            if _after_chunk is not None:
                _after_chunk(path, summary.seen)
            if bar is not None and task is not None:
                rate = (summary.seen - seen_before) / max(time.perf_counter() - t_run, 1e-9)
                bar.update(task, completed=summary.seen, rate=f"{rate:.1f} images/s")
    finally:
        if bar is not None:
            bar.stop()
    return summary


@dataclass
class _Rows:
    """The rows of one chunk, ready to append."""

    index: list[int]
    key: list[str]
    ref: list[str]
    caption: list[str]
    box: np.ndarray
    prob: np.ndarray
    size: np.ndarray
    embedding: np.ndarray
    latents: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.index)


def _process_chunk(job: _Job, chunk: range, summary: PrepSummary) -> _Rows:
    """Detect, filter, crop (paper §2.3) and embed (§2.1) one chunk of samples; counts go into summary."""
    embedder, batch_size = job.embedder, job.batch_size
    kept: list[tuple[int, Sample, Any, tuple[int, int]]] = []
    crops: list[Image.Image] = []
    images: list[Image.Image] = []
    for idx in chunk:
        sample = job.dataset[idx]
        try:
            image = sample.load()
        except BadInput:
            summary.unreadable += 1
            continue
        detections = embedder.detect(image)
        if not detections:
            summary.no_face += 1
            continue
        face = detections[0]
        if face.size < job.cfg.min_face:
            summary.too_small += 1
            continue
        kept.append((idx, sample, face, image.size))
        crops.append(embedder.crop(image, face.box))
        if job.encode_latents is not None:
            images.append(image)
    dim = embedder.dim
    vectors = [embedder.embed(crops[j : j + batch_size]) for j in range(0, len(crops), batch_size)]
    embedding = np.concatenate(vectors).astype(np.float32) if vectors else np.zeros((0, dim), np.float32)
    if embedding.shape != (len(kept), dim):
        raise EmbedderMismatch(
            f"the embedder returned an array of {embedding.shape} for {len(kept)} faces of dimension {dim}."
        )
    latents = None
    if job.encode_latents is not None and images:
        latents = np.asarray(job.encode_latents(images), dtype=np.float32)
        if latents.shape[0] != len(images):
            raise BadInput(f"encode_latents returned {latents.shape[0]} latents for {len(images)} images.")
    summary.kept += len(kept)
    return _Rows(
        index=[k[0] for k in kept],
        key=[k[1].key for k in kept],
        ref=[k[1].ref for k in kept],
        caption=[k[1].caption for k in kept],
        box=np.array([k[2].box for k in kept], np.float32).reshape(-1, 4),
        prob=np.array([k[2].prob for k in kept], np.float32),
        size=np.array([k[3] for k in kept], np.int32).reshape(-1, 2),
        embedding=embedding,
        latents=latents,
    )


# ------------------------------------------------------------------------------------------------ the file


def _header(job: _Job, rng: range, shard: tuple[int, int] | None) -> dict[str, Any]:
    """Root attributes of a new file; the ones under _MUST_MATCH decide whether an old file can be resumed."""
    dataset, embedder, cfg = job.dataset, job.embedder, job.cfg
    crop = getattr(embedder, "cfg", None)
    is_config = dataclasses.is_dataclass(crop) and not isinstance(crop, type)
    crop_dict = dataclasses.asdict(crop) if is_config else None  # type: ignore[arg-type]
    latents_id = None
    if job.encode_latents is not None:
        hook = job.encode_latents
        latents_id = str(getattr(hook, "id", getattr(hook, "__qualname__", "encode_latents")))
    settings = {
        "prep": dataclasses.asdict(cfg),
        "crop": crop_dict,
        "dataset": dataset.describe(),
        "latents": latents_id,
    }
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "created_by": f"face0 {__version__}",
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "embedder_id": embedder.id,
        "dim": int(embedder.dim),
        "settings": json.dumps(settings, sort_keys=True),
        "dataset_fingerprint": dataset.fingerprint(),
        "dataset_samples": len(dataset),
        "range_start": rng.start,
        "range_stop": rng.stop,
        "shard": f"{shard[0]}/{shard[1]}" if shard else "",
        "chunk_size": cfg.chunk_size,
        "min_face": cfg.min_face,
        "latents_id": latents_id or "",
        "complete": len(rng) == 0,
        "done": 0,
        "rows": 0,
    }


_MUST_MATCH = ("dataset_fingerprint", "range_start", "range_stop", "chunk_size", "min_face", "latents_id")


def _check_format(path: Path, attrs: Any) -> None:
    if attrs.get("format") != FORMAT:
        raise BadInput(f"{path} is not a face0 triplet file.")
    version = int(attrs.get("format_version", 0))
    if version > FORMAT_VERSION:
        newest = FORMAT_VERSION
        raise NewerFormat(f"{path} has triplet format {version}; this face0 reads up to {newest}: upgrade.")


def _open_h5(path: Path, mode: str) -> h5py.File:
    try:
        return h5py.File(path, mode)
    except OSError as e:
        raise BadInput(f"{path} is not a readable HDF5 file ({e}).") from e


def _open_or_create(path: Path, header: dict[str, Any], dataset: Dataset, resume: bool) -> PrepSummary:
    """The summary so far of a resumable file at path (trimmed to its committed rows), or of a new file."""
    if path.exists():
        with _open_h5(path, "r+" if resume else "r") as f:
            _check_format(path, f.attrs)
            if resume:
                _check_resumable(path, f.attrs, header)
                rows = int(f.attrs["rows"])
                for name in _row_datasets(f):
                    if f[name].shape[0] != rows:
                        f[name].resize(rows, axis=0)  # a write cut short after the last commit
                return PrepSummary.from_dict({**json.loads(f.attrs["summary"]), "out": str(path)})
        path.unlink()
    path.parent.mkdir(parents=True, exist_ok=True)
    samples = header["range_stop"] - header["range_start"]
    summary = PrepSummary(out=str(path), samples=samples, **_reader_counts(dataset))
    tmp = path.with_name(path.name + ".face0-tmp")
    with h5py.File(tmp, "w") as f:
        for k, v in header.items():
            f.attrs[k] = v
        f.attrs["summary"] = json.dumps(summary.to_dict(), sort_keys=True)
        _create_datasets(f, header["dim"])
    _fsync(tmp)
    os.replace(tmp, path)
    return summary


def _create_datasets(f: h5py.File, dim: int) -> None:
    grow = {"maxshape": (None,), "chunks": (1024,)}
    f.create_dataset("index", (0,), np.int64, **grow)
    for name in ("key", "ref", "caption"):
        f.create_dataset(name, (0,), _STR, **grow)
    f.create_dataset("prob", (0,), np.float32, fletcher32=True, **grow)
    f.create_dataset("box", (0, 4), np.float32, maxshape=(None, 4), chunks=(1024, 4), fletcher32=True)
    f.create_dataset("size", (0, 2), np.int32, maxshape=(None, 2), chunks=(1024, 2))
    grow2 = {"maxshape": (None, dim), "chunks": (_ROW_CHUNK, dim), "fletcher32": True}
    f.create_dataset("embedding", (0, dim), np.float32, **grow2)


ROW_DATASETS = ("index", "key", "ref", "caption", "prob", "box", "size", "embedding", "latents")
"""Datasets with one row per triplet (latents only when an encode_latents hook was given)."""


def _row_datasets(f: h5py.File) -> list[str]:
    return [n for n in ROW_DATASETS if n in f]


def _commit(path: Path, rows: _Rows, summary: PrepSummary) -> None:
    """Append one chunk's rows, flush, then record done/rows/summary: the chunk's atomic commit."""
    with _open_h5(path, "r+") as f:
        n0 = int(f.attrs["rows"])
        if len(rows):
            columns: dict[str, Any] = {
                "index": np.asarray(rows.index, np.int64),
                "key": rows.key,
                "ref": rows.ref,
                "caption": rows.caption,
                "prob": rows.prob,
                "box": rows.box,
                "size": rows.size,
                "embedding": rows.embedding,
            }
            if rows.latents is not None:
                if "latents" not in f:
                    shape = rows.latents.shape[1:]
                    grow = {"maxshape": (None, *shape), "chunks": (1, *shape)}
                    f.create_dataset("latents", (n0, *shape), np.float32, **grow)
                columns["latents"] = rows.latents
            for name, values in columns.items():
                ds = f[name]
                ds.resize(n0 + len(rows), axis=0)
                ds[n0:] = values
            f.flush()
        f.attrs["rows"] = n0 + len(rows)
        f.attrs["done"] = summary.seen
        f.attrs["complete"] = summary.seen >= summary.samples
        f.attrs["summary"] = json.dumps(summary.to_dict(), sort_keys=True)


def read_summary(path: Path) -> PrepSummary:
    """The PrepSummary stored in a triplet or part file."""
    with _open_h5(Path(path), "r") as f:
        _check_format(Path(path), f.attrs)
        return PrepSummary.from_dict({**json.loads(f.attrs["summary"]), "out": str(path)})


def _check_resumable(path: Path, attrs: Any, header: dict[str, Any]) -> None:
    """Refuse to go on with a file of another format, embedder, dataset or settings than header's."""
    _check_format(path, attrs)
    if attrs["embedder_id"] != header["embedder_id"] or int(attrs["dim"]) != header["dim"]:
        raise EmbedderMismatch(
            f"{path} holds embeddings of {attrs['embedder_id']} ({int(attrs['dim'])}-d), not of "
            f"{header['embedder_id']} ({header['dim']}-d); choose another output or start it over."
        )
    changed = [k for k in _MUST_MATCH if _plain(attrs.get(k)) != header[k]]
    if changed:
        raise BadInput(
            f"{path} was started with other data or settings ({', '.join(changed)} differ); "
            "delete it or start it over instead of resuming."
        )


# ------------------------------------------------------------------------------------------------ merge


def merge_parts(
    out: Path, n: int | None = None, *, parts: Sequence[Path] | None = None, remove: bool = True
) -> PrepSummary:
    """Concatenate the part files of a sharded prep, in shard order, into one triplet file (a copy).

    Args:
        out: the merged file (replaced atomically if it exists).
        n: the number of shards; parts are then ``part_path(out, i, n)``. Both None: found by globbing
            ``<out>.part-*-of-*.h5``.
        parts: the part files, in shard order (instead of n).
        remove: delete the parts after a successful merge.
    """
    out = Path(out)
    if parts is None:
        parts = _find_parts(out, n)
    parts = [Path(p) for p in parts]
    if not parts:
        raise BadInput(f"no part files to merge into {out}.")
    metas: list[dict[str, Any]] = []
    for p in parts:
        if not p.exists():
            raise BadInput(f"part file {p} is missing; run its shard first.")
        with _open_h5(p, "r") as f:
            _check_format(p, f.attrs)
            metas.append({k: _plain(v) for k, v in f.attrs.items()})
    first = metas[0]
    for p, m in zip(parts, metas):
        if not m.get("complete"):
            todo = m["range_stop"] - m["range_start"]
            raise BadInput(f"part {p} is unfinished ({m['done']} of {todo} samples); run that shard again.")
        if (m["embedder_id"], m["dim"]) != (first["embedder_id"], first["dim"]):
            raise EmbedderMismatch(
                f"{p} holds embeddings of {m['embedder_id']} ({m['dim']}-d), {parts[0]} of "
                f"{first['embedder_id']} ({first['dim']}-d)."
            )
        for k in ("dataset_fingerprint", "chunk_size", "min_face", "latents_id", "dataset_samples"):
            if m[k] != first[k]:
                raise BadInput(f"{p} and {parts[0]} were made from other data or settings ({k} differs).")
    stops = [m["range_start"] for m in metas[1:]] + [first["dataset_samples"]]
    if metas[0]["range_start"] != 0 or any(m["range_stop"] != s for m, s in zip(metas, stops)):
        raise BadInput(f"the parts of {out} do not cover the dataset once, in order; give all the shards.")

    summaries = [PrepSummary.from_dict(json.loads(m["summary"])) for m in metas]
    total = _sum_summaries(summaries, str(out))
    tmp = out.with_name(out.name + ".face0-tmp")
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        with h5py.File(tmp, "w") as dst:
            for k, v in first.items():
                dst.attrs[k] = v
            dst.attrs.update(
                {
                    "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                    "range_start": 0,
                    "range_stop": first["dataset_samples"],
                    "shard": "",
                    "merged_from": len(parts),
                    "done": total.seen,
                    "rows": total.kept,
                    "complete": True,
                    "summary": json.dumps(total.to_dict(), sort_keys=True),
                }
            )
            _create_datasets(dst, int(first["dim"]))
            row = 0
            for p in parts:
                with _open_h5(p, "r") as src:
                    nrows = int(src.attrs["rows"])
                    for name in _row_datasets(src):
                        if name not in dst:
                            ds = src[name]
                            shape = ds.shape[1:]
                            grow = {"maxshape": (None, *shape), "chunks": ds.chunks}
                            dst.create_dataset(name, (row, *shape), ds.dtype, **grow)
                        dst[name].resize(row + nrows, axis=0)
                        for a in range(0, nrows, 4096):
                            b = min(a + 4096, nrows)
                            dst[name][row + a : row + b] = src[name][a:b]
                    row += nrows
        _fsync(tmp)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    if remove:
        for p in parts:
            p.unlink(missing_ok=True)
    return total


def _find_parts(out: Path, n: int | None) -> list[Path]:
    if n is None:
        pat = re.compile(re.escape(out.name) + r"\.part-\d+-of-(\d+)\.h5")
        names = [p.name for p in out.parent.glob(f"{out.name}.part-*-of-*.h5")]
        counts = {int(m.group(1)) for name in names if (m := pat.fullmatch(name))}
        if len(counts) != 1:
            what = "no part files" if not counts else f"parts of different shard counts ({sorted(counts)})"
            raise BadInput(f"{out}: found {what}; give the number of shards.")
        n = counts.pop()
    return [part_path(out, i, n) for i in range(n)]


def _sum_summaries(summaries: Sequence[PrepSummary], out: str) -> PrepSummary:
    total = PrepSummary(out=out, shards=len(summaries))
    for name in PrepSummary._PER_SAMPLE:
        setattr(total, name, sum(getattr(s, name) for s in summaries))
    for name in PrepSummary._READER:
        setattr(total, name, getattr(summaries[0], name))
    total.seconds = max(s.seconds for s in summaries)
    return total


# ------------------------------------------------------------------------------------------------ reading


class TripletFile:
    """Random access to a finished triplet file for training (paper §2.1: image, caption, face embedding).

    Torch-free. The HDF5 file opens lazily in the process that reads it and reopens after a fork, so one
    object can be handed to DataLoader workers (it pickles without its handle).

    Attributes:
        path, embedder_id, dim, settings (dict), summary (PrepSummary), has_latents.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._file: h5py.File | None = None
        self._pid = -1
        if not self.path.is_file():
            raise BadInput(f"triplet file {self.path} does not exist.")
        with _open_h5(self.path, "r") as f:
            _check_format(self.path, f.attrs)
            if not f.attrs.get("complete"):
                done, total = int(f.attrs["done"]), int(f.attrs["range_stop"]) - int(f.attrs["range_start"])
                raise BadInput(
                    f"{self.path} is unfinished ({done} of {total} samples); run face0 prep again to finish."
                )
            self.embedder_id = str(f.attrs["embedder_id"])
            self.dim = int(f.attrs["dim"])
            self.settings: dict[str, Any] = json.loads(f.attrs["settings"])
            self.summary = PrepSummary.from_dict({**json.loads(f.attrs["summary"]), "out": str(self.path)})
            self._len = int(f.attrs["rows"])
            self.has_latents = "latents" in f

    def __len__(self) -> int:
        return self._len

    def _h5(self) -> h5py.File:
        if self._file is None or self._pid != os.getpid():
            self._file = h5py.File(self.path, "r")
            self._pid = os.getpid()
        return self._file

    def __getitem__(self, i: int) -> dict[str, Any]:
        """Row i: ref, caption, key (str), embedding (D,) float32, box (4,) float32, prob, [latents]."""
        if not -self._len <= i < self._len:
            raise IndexError(f"triplet {i} out of range for {self._len} rows")
        i %= self._len
        f = self._h5()
        item: dict[str, Any] = {
            "ref": f["ref"].asstr()[i],
            "caption": f["caption"].asstr()[i],
            "key": f["key"].asstr()[i],
            "embedding": f["embedding"][i],
            "box": f["box"][i],
            "prob": float(f["prob"][i]),
        }
        if self.has_latents:
            item["latents"] = f["latents"][i]
        return item

    def embedding(self, i: int) -> np.ndarray:
        """Row i's face embedding alone, (D,) float32."""
        if not -self._len <= i < self._len:
            raise IndexError(f"triplet {i} out of range for {self._len} rows")
        return np.asarray(self._h5()["embedding"][i % self._len], dtype=np.float32)

    def embeddings(self) -> np.ndarray:
        """All face embeddings, (N, D) float32 (e.g. to fit the face-space GMM, paper §3.1)."""
        return self._h5()["embedding"][:]

    def captions(self) -> list[str]:
        return list(self._h5()["caption"].asstr()[:])

    def keys(self) -> list[str]:
        """Every row's sample key, in row order."""
        return list(self._h5()["key"].asstr()[:])

    def close(self) -> None:
        if self._file is not None and self._pid == os.getpid():
            self._file.close()
        self._file = None

    def __enter__(self) -> TripletFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_file"], state["_pid"] = None, -1
        return state


Triplets = TripletFile


def read_triplets(path: str | os.PathLike[str]) -> TripletFile:
    """Open a finished, non-empty triplet file for training (paper §2.1); BadInput / NewerFormat otherwise."""
    t = TripletFile(path)
    if len(t) == 0:
        raise BadInput(f"{t.path} has no triplets (no image had a usable face).")
    return t


# ------------------------------------------------------------------------------------------------ helpers


def _fsync(path: Path) -> None:
    """Flush a finished file to disk before it replaces another (the replace is then atomic on disk too)."""
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def _plain(value: Any) -> Any:
    """An HDF5 attribute as a plain Python value."""
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, np.generic):
        return value.item()
    return value


def _source(dataset: Dataset) -> str:
    src = dataset.source
    return ", ".join(src) if len(src) <= 3 else f"{src[0]} (+{len(src) - 1} more)"


def _reader_counts(dataset: Dataset) -> dict[str, int]:
    s = dataset.stats
    return {
        "missing_caption": s.images_without_caption,
        "missing_image": s.captions_without_image,
        "duplicate_images": s.duplicate_images,
        "corrupt_members": s.corrupt_members,
        "below_min_score": s.below_min_score,
    }


def _reader_note(dataset: Dataset) -> str:
    parts = [f"{k.replace('_', ' ')}: {v}" for k, v in _reader_counts(dataset).items() if v]
    return "; ".join(parts) if parts else "no images with captions found"


def _no_faces(job: _Job, summary: PrepSummary) -> Face0Error:
    return NoFaceFound(
        f"no image of {_source(job.dataset)} has a face of at least {job.cfg.min_face} px "
        f"({summary.seen} seen: {summary.no_face} without a face, {summary.too_small} too small, "
        f"{summary.unreadable} unreadable); there is nothing to train on."
    )


def _distributed_state(embedder: Embedder) -> Any:
    """accelerate's PartialState when this process is one of several launched (WORLD_SIZE > 1), else None."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return None
    from accelerate import PartialState

    cpu = str(getattr(embedder, "device", "cpu")).startswith("cpu")
    state = PartialState(cpu=cpu)
    if cpu and "OMP_NUM_THREADS" not in os.environ:
        import torch

        local = int(os.environ.get("LOCAL_WORLD_SIZE", state.num_processes))
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        torch.set_num_threads(max(1, cores // max(local, 1)))
    return state
