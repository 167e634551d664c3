"""The character library: named face embeddings in one HDF5 file (the only code that touches that file).

A character is a face embedding (paper §2.1: a photo's face through the embedder; §3.1: a sample of the
embeddings' Gaussian mixture; §3.3: a mix of other characters) kept under a name with its provenance, tags
and, optionally, a small thumbnail (the face crop, or an image generated with it) to browse the library by.
The file is readable by plain h5py without face0; docs/store-format.md describes the schema.

Every write takes a lock (``<store>.lock``) for its whole read-modify-write, builds the new file as a
temporary file beside the store, fsyncs it and moves it over the store with ``os.replace``, so a crash at
any moment leaves either the old file or the new one, and concurrent writers never lose each other's work.
Readers open the file read-only without a lock: a replaced file is never changed in place.
"""

from __future__ import annotations

import builtins
import contextlib
import difflib
import glob
import json
import os
import re
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import filelock
import h5py
import numpy as np

from face0cli import __version__
from face0cli.errors import (
    BadInput,
    CharacterExists,
    InvalidName,
    NewerFormat,
    StoreError,
    UnknownCharacter,
)
from face0cli.library.names import NAME_SHAPE, is_valid_name

NAME_RULE = f"a name has {NAME_SHAPE}, and is not one of the reserved words 'random' and 'none'"
RESERVED_NAMES = frozenset({"random", "none"})

KINDS: tuple[str, ...] = ("photo", "random", "mix")

TAG_RULE = "a tag has 1 to 32 letters, digits, '-', '_' or '.' and starts with a letter or digit"
_TAG_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,31}")

THUMBNAIL_SIZE = 128
"""The longest side of a stored thumbnail in pixels; larger images are shrunk keeping their aspect."""
THUMBNAILS = "thumbnails"
"""The root group of the thumbnail datasets (uint8, H x W x 3), each named by its character's attribute."""

LOCK_TIMEOUT_S = 120.0
"""How long a writer waits for another writer's lock before giving up with StoreError."""

_TMP_SUFFIX = ".face0-tmp"
_LIBVER = ("v108", "latest")
"""HDF5 1.8+ object formats, whose metadata carries checksums (the vectors have fletcher32 checksums)."""

_before_replace: Callable[[Path], None] | None = None
"""Test hook: called with the finished temporary file just before it replaces the store."""


def check_name(name: str) -> str:
    """Return NAME if it follows NAME_RULE, else raise InvalidName saying why.

    Args:
        name: a proposed character name (also the HDF5 dataset name, so '/' and '.' alone are refused).
    """
    if not is_valid_name(name):
        raise InvalidName(f"invalid character name {name!r}: {NAME_RULE}.")
    if name.lower() in RESERVED_NAMES:
        raise InvalidName(
            f"'{name}' is reserved (--face random:SEED means a random face, --face none no face); choose another name."
        )
    return name


def check_tags(tags: Iterable[str]) -> tuple[str, ...]:
    """Tags following TAG_RULE, lower-cased, without repeats, sorted; InvalidName naming the first bad one."""
    out: set[str] = set()
    for tag in tags:
        if not isinstance(tag, str) or _TAG_RE.fullmatch(tag) is None:
            raise InvalidName(f"invalid tag {tag!r}: {TAG_RULE}.")
        out.add(tag.lower())
    return tuple(sorted(out))


def as_thumbnail(image: Any, size: int = THUMBNAIL_SIZE) -> np.ndarray:
    """An image (PIL image or H x W [x 3|4] array) as a uint8 H x W x 3 thumbnail of at most SIZE per side.

    Raises:
        BadInput: it is not an image (wrong shape, empty, not finite).
    """
    from PIL import Image

    if not isinstance(image, Image.Image):
        arr = np.asarray(image)
        if arr.ndim == 2:
            arr = np.repeat(arr[:, :, None], 3, axis=2)
        if arr.ndim != 3 or arr.shape[2] not in (3, 4) or arr.shape[0] == 0 or arr.shape[1] == 0:
            raise BadInput(f"a thumbnail must be an H x W x 3 image, got shape {arr.shape}.")
        if arr.dtype != np.uint8:
            with np.errstate(invalid="ignore"):
                if not np.isfinite(arr).all():
                    raise BadInput("a thumbnail image has NaN or infinite values.")
            scale = 255.0 if arr.max(initial=0) <= 1.0 else 1.0  # floats in [0, 1] as diffusers gives them
            arr = np.clip(np.rint(arr.astype(np.float64) * scale), 0, 255).astype(np.uint8)
        image = Image.fromarray(arr[:, :, :3])
    image = image.convert("RGB")
    if max(image.size) > size:
        image = image.copy()
        image.thumbnail((size, size), Image.Resampling.LANCZOS)
    return np.asarray(image, dtype=np.uint8).copy()


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _provenance_json(provenance: dict[str, Any]) -> str:
    try:
        return json.dumps(provenance, sort_keys=True, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise BadInput(f"the provenance of a character must be JSON-serialisable ({e}).") from e


@dataclass(frozen=True, eq=False)
class Character:
    """A named face embedding with where it came from (paper §2.1 photo, §3.1 random, §3.3 mix).

    Attributes:
        name: follows NAME_RULE.
        vector: (D,) float32, read-only.
        embedder_id: identifies the embedder (and its weights) that defines the vector space.
        dim: D.
        kind: "photo", "random" or "mix".
        provenance: JSON-serialisable dict (photos: source files, sha256, boxes, probabilities; random: seed
            and GMM identity; mix: parents and weights or operation).
        created: ISO 8601 UTC time of creation.
        note: free text.
        tags: sorted lower-case tags (TAG_RULE), for filtering the library.
        has_thumbnail: whether the library keeps a thumbnail for it (FaceStore.thumbnail reads it).

    Characters compare by identity (the vector is an array); compare fields to compare contents.
    """

    name: str
    vector: np.ndarray
    embedder_id: str
    dim: int
    kind: str
    provenance: dict[str, Any] = field(default_factory=dict)
    created: str = ""
    note: str = ""
    tags: tuple[str, ...] = ()
    has_thumbnail: bool = False

    @classmethod
    def new(
        cls,
        name: str,
        vector: np.ndarray | Sequence[float],
        embedder_id: str,
        kind: str,
        provenance: dict[str, Any],
        note: str = "",
        tags: Iterable[str] = (),
    ) -> Character:
        """Make a character created now, checking its name, vector (finite, 1-D), kind and provenance.

        Args:
            vector: (D,) embedding; stored as float32 (values beyond float32's range are refused).
        """
        check_name(name)
        if not isinstance(embedder_id, str) or not embedder_id:
            raise BadInput("a character needs a non-empty embedder id.")
        if kind not in KINDS:
            raise BadInput(f"character kind must be one of {', '.join(KINDS)}, got {kind!r}.")
        if not isinstance(provenance, dict):
            raise BadInput("the provenance of a character must be a dict.")
        _provenance_json(provenance)
        with np.errstate(over="ignore", invalid="ignore"):
            vec = np.array(vector, dtype=np.float32)
        if vec.ndim != 1 or vec.size == 0:
            raise BadInput(f"a face embedding must be a non-empty 1-D vector, got shape {vec.shape}.")
        if not np.isfinite(vec).all():
            raise BadInput(f"the embedding of '{name}' has NaN or infinite values.")
        vec.setflags(write=False)
        return cls(name, vec, embedder_id, int(vec.shape[0]), kind, provenance, _now(), str(note), check_tags(tags))

    @property
    def norm(self) -> float:
        """Euclidean norm of the vector."""
        return float(np.linalg.norm(self.vector.astype(np.float64)))

    def to_json(self, include_vector: bool = False) -> dict[str, Any]:
        """A JSON-ready dict of every field; the vector is replaced by its norm unless include_vector.

        "tags" and "thumbnail" (true) appear only for a character that has tags or a thumbnail.
        """
        out: dict[str, Any] = {
            "name": self.name,
            "kind": self.kind,
            "embedder_id": self.embedder_id,
            "dim": self.dim,
            "norm": round(self.norm, 6),
            "created": self.created,
            "note": self.note,
            "provenance": self.provenance,
        }
        if self.tags:
            out["tags"] = list(self.tags)
        if self.has_thumbnail:
            out["thumbnail"] = True
        if include_vector:
            out["vector"] = [float(v) for v in self.vector]
        return out


def default_store_path() -> Path:
    """The library file: $FACE0_STORE, else $XDG_DATA_HOME/face0/characters.h5 (~/.local/share by default)."""
    env = os.environ.get("FACE0_STORE")
    if env:
        return Path(env).expanduser()
    data_home = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(data_home).expanduser() / "face0" / "characters.h5"


def _text(value: Any) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


class FaceStore:
    """A character library in one HDF5 file; a missing file is an empty library.

    Args:
        path: the library file (created with its parent folders on the first write).
    """

    FORMAT = "face0-characters"
    FORMAT_VERSION = 1
    GROUP = "characters"

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path).expanduser()

    def __repr__(self) -> str:
        return f"FaceStore({str(self.path)!r})"

    # ------------------------------------------------------------------------------------------ reading

    @classmethod
    def _check_header(cls, f: h5py.File, path: Path) -> h5py.Group:
        """Check the root attributes and return the characters group; StoreError / NewerFormat if foreign."""
        fmt = f.attrs.get("format")
        if fmt is None or _text(fmt) != cls.FORMAT:
            raise StoreError(f"{path} is an HDF5 file but not a face0 character library (no format '{cls.FORMAT}').")
        try:
            version = int(f.attrs["format_version"])
        except (KeyError, TypeError, ValueError) as e:
            raise StoreError(f"{path} is corrupt: its format_version is missing or not a number.") from e
        if version > cls.FORMAT_VERSION:
            raise NewerFormat(
                f"{path} was written by a newer face0 (format {version}, this face0 reads up to "
                f"{cls.FORMAT_VERSION}); upgrade face0."
            )
        if version < 1:
            raise StoreError(f"{path} is corrupt: format_version {version} does not exist.")
        group = f.get(cls.GROUP)
        if not isinstance(group, h5py.Group):
            raise StoreError(f"{path} is corrupt: it has no '/{cls.GROUP}' group.")
        return group

    @contextlib.contextmanager
    def _open(self) -> Iterator[h5py.Group | None]:
        """Open the library read-only and yield its characters group (None when the file does not exist)."""
        path = self.path
        if not path.exists():
            yield None
            return
        if path.is_dir():
            raise StoreError(f"{path} is a folder, not a character library file.")
        try:
            f = h5py.File(path, "r", locking=False)
        except OSError as e:
            raise StoreError(f"{path} is not a readable HDF5 character library (corrupt or not HDF5).") from e
        try:
            yield self._check_header(f, path)
        except (OSError, RuntimeError) as e:  # h5py reading damaged metadata
            raise StoreError(f"{path} is corrupt ({e}).") from e
        finally:
            f.close()

    @staticmethod
    def _read(group: h5py.Group, name: str, path: Path) -> Character:
        """Read one character from its dataset; StoreError naming the file if it is malformed."""
        try:
            ds = group[name]
            if not isinstance(ds, h5py.Dataset) or ds.ndim != 1:
                raise ValueError("not a 1-D dataset")
            vector = np.asarray(ds[()], dtype=np.float32)
            vector.setflags(write=False)
            a = ds.attrs
            dim = int(a["dim"])
            if dim != vector.shape[0]:
                raise ValueError(f"dim {dim} but {vector.shape[0]} values")
            kind = _text(a["kind"])
            if kind not in KINDS:
                raise ValueError(f"unknown kind {kind!r}")
            provenance = json.loads(_text(a["provenance"]))
            if not isinstance(provenance, dict):
                raise ValueError("provenance is not a JSON object")
            tags = json.loads(_text(a["tags"])) if "tags" in a else []
            if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
                raise ValueError("tags is not a JSON list of strings")
            return Character(
                name=name,
                vector=vector,
                embedder_id=_text(a["embedder_id"]),
                dim=dim,
                kind=kind,
                provenance=provenance,
                created=_text(a["created"]),
                note=_text(a.get("note", "")),
                tags=tuple(tags),
                has_thumbnail=FaceStore._thumbnail_dataset(group, ds) is not None,
            )
        except (KeyError, ValueError, TypeError, OSError) as e:
            raise StoreError(f"{path} is corrupt: character '{name}' cannot be read ({e}).") from e

    def names(self) -> list[str]:
        """The character names, sorted, without reading any vector."""
        with self._open() as group:
            return sorted(group.keys()) if group is not None else []

    def list(self) -> list[Character]:
        """Every character, sorted by name (a missing file is an empty library)."""
        with self._open() as group:
            if group is None:
                return []
            return [self._read(group, n, self.path) for n in sorted(group.keys())]

    def get(self, name: str) -> Character:
        """The character called NAME; UnknownCharacter (with a close match, if any) when there is none."""
        with self._open() as group:
            names = list(group.keys()) if group is not None else []
            if name not in names:
                raise self._unknown(name, names)
            return self._read(group, name, self.path)  # type: ignore[arg-type]

    def find(
        self, tag: str | None = None, kind: str | None = None, grep: str | None = None
    ) -> builtins.list[Character]:
        """The characters with TAG, of KIND, and whose name, note, tags or provenance contain GREP (any case).

        A filter that is None is not applied; with none, this is list().

        Raises:
            BadInput: KIND is not one of KINDS.
        """
        if kind is not None and kind not in KINDS:
            raise BadInput(f"character kind must be one of {', '.join(KINDS)}, got {kind!r}.")
        wanted = tag.lower() if tag is not None else None
        needle = grep.lower() if grep else None
        out = []
        for c in self.list():
            if wanted is not None and wanted not in c.tags:
                continue
            if kind is not None and c.kind != kind:
                continue
            if needle is not None:
                hay = " ".join([c.name, c.note, *c.tags, json.dumps(c.provenance, sort_keys=True)]).lower()
                if needle not in hay:
                    continue
            out.append(c)
        return out

    def tags(self) -> dict[str, int]:
        """Every tag in the library with how many characters have it, sorted by tag."""
        counts: dict[str, int] = {}
        for c in self.list():
            for t in c.tags:
                counts[t] = counts.get(t, 0) + 1
        return dict(sorted(counts.items()))

    @staticmethod
    def _thumbnail_dataset(group: h5py.Group, ds: h5py.Dataset) -> h5py.Dataset | None:
        """The thumbnail dataset a character's `thumbnail` attribute names, if it exists and is an image."""
        ref = ds.attrs.get("thumbnail")
        if ref is None:
            return None
        ref = _text(ref)
        if not ref.startswith(f"/{THUMBNAILS}/"):
            return None
        thumb = group.file.get(ref)
        if not isinstance(thumb, h5py.Dataset) or thumb.ndim != 3 or thumb.shape[2] != 3 or thumb.dtype != np.uint8:
            return None
        return thumb

    def thumbnail(self, name: str) -> np.ndarray | None:
        """The thumbnail of NAME as a uint8 H x W x 3 array, or None if it has none; UnknownCharacter if no NAME."""
        return self.thumbnails([name])[name]

    def thumbnails(self, names: Sequence[str] | None = None) -> dict[str, np.ndarray | None]:
        """Thumbnails of NAMES (all characters if None), in one read: name -> H x W x 3 uint8 array or None."""
        with self._open() as group:
            keys = sorted(group.keys()) if group is not None else []
            wanted = keys if names is None else list(dict.fromkeys(names))
            out: dict[str, np.ndarray | None] = {}
            for n in wanted:
                if n not in keys:
                    raise self._unknown(n, keys)
                thumb = self._thumbnail_dataset(group, group[n])  # type: ignore[index]
                out[n] = None if thumb is None else np.asarray(thumb[()], dtype=np.uint8)
            return out

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name in self.names()

    def __len__(self) -> int:
        return len(self.names())

    def _unknown(self, name: str, names: Iterable[str]) -> UnknownCharacter:
        names = list(names)
        if not names:
            return UnknownCharacter(f"no character '{name}': the library {self.path} is empty.")
        close = difflib.get_close_matches(name, names, n=1)
        hint = f"; did you mean '{close[0]}'?" if close else " (see 'face0 character list')."
        return UnknownCharacter(f"no character '{name}' in {self.path}{hint}")

    # ------------------------------------------------------------------------------------------ writing

    @contextlib.contextmanager
    def _transaction(self, fresh: bool = False) -> Iterator[h5py.Group]:
        """Lock the store, yield the characters group of a temporary copy, then atomically replace the store.

        If the body raises, the temporary file is removed and the store is untouched. With fresh=True the
        temporary file starts empty instead of as a copy (for export over an existing file). A symlinked
        store is written through the link (the link stays a link).
        """
        path = self.path.resolve()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            lock = filelock.FileLock(str(path) + ".lock", timeout=LOCK_TIMEOUT_S)
            lock.acquire()
        except filelock.Timeout as e:
            raise StoreError(f"{path} is locked by another face0 process; try again later.") from e
        except OSError as e:
            raise StoreError(f"cannot write the character library {path} ({e.strerror or e}).") from e
        tmp: Path | None = None
        try:
            self._remove_stale_temps(path)
            exists = path.exists()
            if exists and not fresh:
                with FaceStore(path)._open() as group:  # never build on a foreign, corrupt or newer file
                    list(group.keys())  # type: ignore[union-attr]
            elif exists and path.is_dir():
                raise StoreError(f"{path} is a folder, not a character library file.")
            fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=_TMP_SUFFIX, dir=path.parent)
            os.close(fd)
            tmp = Path(name)
            if exists:
                shutil.copymode(path, tmp)
            if exists and not fresh:
                shutil.copyfile(path, tmp)
                f = h5py.File(tmp, "r+", locking=False, libver=_LIBVER)
            else:
                f = h5py.File(tmp, "w", locking=False, libver=_LIBVER)
                f.attrs["format"] = self.FORMAT
                f.attrs["format_version"] = self.FORMAT_VERSION
                f.create_group(self.GROUP)
            try:
                f.attrs["created_by"] = f"face0 {__version__}"
                yield f[self.GROUP]
                self._collect_thumbnails(f)
                f.flush()
            finally:
                f.close()
            with open(tmp, "rb+") as fh:
                os.fsync(fh.fileno())
            if _before_replace is not None:
                _before_replace(tmp)
            os.replace(tmp, path)
            tmp = None
            self._fsync_dir(path.parent)
        except (OSError, RuntimeError) as e:  # h5py reports some write failures as RuntimeError
            raise StoreError(f"cannot write the character library {path} ({getattr(e, 'strerror', None) or e}).") from e
        finally:
            if tmp is not None:
                with contextlib.suppress(OSError):
                    tmp.unlink()
            lock.release()

    @staticmethod
    def _remove_stale_temps(path: Path) -> None:
        """Delete temporary files left by writers that were killed (we hold the lock, so none is live)."""
        for p in path.parent.glob(f".{glob.escape(path.name)}.*{_TMP_SUFFIX}"):
            with contextlib.suppress(OSError):
                p.unlink()

    @staticmethod
    def _fsync_dir(directory: Path) -> None:
        with contextlib.suppress(OSError):
            fd = os.open(directory, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

    @classmethod
    def _collect_thumbnails(cls, f: h5py.File) -> None:
        """Delete thumbnails no character names (left by a replaced or removed character, or an older face0)."""
        thumbs = f.get(THUMBNAILS)
        if not isinstance(thumbs, h5py.Group):
            return
        used = {_text(ds.attrs["thumbnail"]) for ds in f[cls.GROUP].values() if "thumbnail" in ds.attrs}
        for key in list(thumbs.keys()):
            if f"/{THUMBNAILS}/{key}" not in used:
                del thumbs[key]
        if not len(thumbs):
            del f[THUMBNAILS]

    @staticmethod
    def _write_thumbnail(group: h5py.Group, ds: h5py.Dataset, thumbnail: np.ndarray | None) -> None:
        """Point the character's `thumbnail` attribute at a new thumbnail dataset (or drop it for None)."""
        if "thumbnail" in ds.attrs:
            del ds.attrs["thumbnail"]  # the old dataset is collected at the end of the transaction
        if thumbnail is None:
            return
        data = as_thumbnail(thumbnail)
        thumbs = group.file.require_group(THUMBNAILS)
        key = uuid.uuid4().hex  # never a name an older face0 could reuse for another character
        thumbs.create_dataset(key, data=data, chunks=data.shape, fletcher32=True, compression="gzip")
        ds.attrs["thumbnail"] = f"/{THUMBNAILS}/{key}"

    @staticmethod
    def _write(group: h5py.Group, char: Character) -> None:
        """Write CHAR's dataset (replacing one of its name); its thumbnail is written by _write_thumbnail."""
        if char.name in group:
            del group[char.name]
        data = np.asarray(char.vector, dtype=np.float32)
        ds = group.create_dataset(char.name, data=data, chunks=data.shape, fletcher32=True)
        ds.attrs["embedder_id"] = char.embedder_id
        ds.attrs["dim"] = int(char.dim)
        ds.attrs["kind"] = char.kind
        ds.attrs["provenance"] = _provenance_json(char.provenance)
        ds.attrs["created"] = char.created
        ds.attrs["note"] = char.note
        if char.tags:
            ds.attrs["tags"] = json.dumps(list(check_tags(char.tags)))

    def add(self, char: Character, force: bool = False, thumbnail: Any = None) -> None:
        """Save one character (with a thumbnail image if given); CharacterExists if the name is taken and not force."""
        self.add_many([char], force=force, thumbnails=None if thumbnail is None else {char.name: thumbnail})

    def add_many(
        self, chars: Sequence[Character], force: bool = False, thumbnails: dict[str, Any] | None = None
    ) -> None:
        """Save several characters at once: either all are saved or none (one atomic replace).

        A character replaced with force loses its old thumbnail unless THUMBNAILS gives a new one.

        Args:
            thumbnails: name -> image (PIL image or H x W x 3 array, see as_thumbnail) for some of CHARS.

        Raises:
            CharacterExists: a name is taken and not force (nothing is written).
            BadInput: the same name twice in CHARS, or a character with an invalid name.
        """
        chars = list(chars)
        seen: set[str] = set()
        for c in chars:
            check_name(c.name)
            if c.name in seen:
                raise BadInput(f"character '{c.name}' is given twice.")
            seen.add(c.name)
        if not chars:
            return
        thumbs = {n: as_thumbnail(t) for n, t in (thumbnails or {}).items() if t is not None}
        unknown = sorted(set(thumbs) - seen)
        if unknown:
            raise BadInput(f"a thumbnail is given for '{unknown[0]}', which is not among the characters added.")
        with self._transaction() as group:
            taken = sorted(seen.intersection(group.keys()))
            if taken and not force:
                what = (
                    f"a character named '{taken[0]}' exists"
                    if len(taken) == 1
                    else (f"characters named {', '.join(repr(t) for t in taken)} exist")
                )
                raise CharacterExists(f"{what} already in {self.path}; use --force to replace.")
            for c in chars:
                self._write(group, c)
                if thumbs.get(c.name) is not None:
                    self._write_thumbnail(group, group[c.name], thumbs[c.name])

    def set_thumbnail(self, name: str, image: Any) -> None:
        """Keep IMAGE (PIL image or H x W x 3 array; shrunk to THUMBNAIL_SIZE) as NAME's thumbnail; None drops it."""
        data = None if image is None else as_thumbnail(image)
        with self._edit(name) as ds:
            self._write_thumbnail(ds.parent, ds, data)

    def set_tags(self, name: str, tags: Iterable[str]) -> tuple[str, ...]:
        """Replace NAME's tags (TAG_RULE; lower-cased); returns them. InvalidName for a bad tag."""
        new = check_tags(tags)
        with self._edit(name) as ds:
            if new:
                ds.attrs["tags"] = json.dumps(list(new))
            elif "tags" in ds.attrs:
                del ds.attrs["tags"]
        return new

    def add_tags(self, name: str, tags: Iterable[str]) -> tuple[str, ...]:
        """Add TAGS to NAME's tags; returns all its tags now."""
        return self._change_tags(name, check_tags(tags), add=True)

    def remove_tags(self, name: str, tags: Iterable[str]) -> tuple[str, ...]:
        """Remove TAGS from NAME's tags (those it has); returns the tags left."""
        return self._change_tags(name, check_tags(tags), add=False)

    def _change_tags(self, name: str, tags: tuple[str, ...], add: bool) -> tuple[str, ...]:
        with self._edit(name) as ds:
            old = json.loads(_text(ds.attrs["tags"])) if "tags" in ds.attrs else []
            new = check_tags(set(old) | set(tags) if add else set(old) - set(tags))
            if new:
                ds.attrs["tags"] = json.dumps(list(new))
            elif "tags" in ds.attrs:
                del ds.attrs["tags"]
        return new

    @contextlib.contextmanager
    def _edit(self, name: str) -> Iterator[h5py.Dataset]:
        """A write transaction over one existing character's dataset; UnknownCharacter if there is none."""
        if name not in self:  # cheap check first: do not create a file to find it missing
            raise self._unknown(name, self.names())
        with self._transaction() as group:
            keys = list(group.keys())
            if name not in keys:
                raise self._unknown(name, keys)
            yield group[name]

    def remove(self, name: str) -> None:
        """Delete the character NAME; UnknownCharacter if there is none."""
        with self._edit(name) as ds:
            del ds.parent[name]

    def rename(self, old: str, new: str, force: bool = False) -> None:
        """Rename OLD to NEW; CharacterExists if NEW is taken and not force (then NEW is replaced)."""
        check_name(new)
        if old not in self:
            raise self._unknown(old, self.names())
        if old == new:
            return
        with self._transaction() as group:
            keys = list(group.keys())
            if old not in keys:
                raise self._unknown(old, keys)
            if new in keys:
                if not force:
                    raise CharacterExists(f"a character named '{new}' exists already; use --force to replace.")
                del group[new]
            group.move(old, new)

    def export(
        self, names: Sequence[str] | None, out_path: str | os.PathLike[str], force: bool = False
    ) -> builtins.list[str]:
        """Write the characters NAMES (all if None) into a new library file OUT_PATH; returns the names.

        Raises:
            UnknownCharacter: a name is not in this library.
            BadInput: OUT_PATH exists and not force, or it is this library itself.
        """
        out = FaceStore(out_path)
        if out.path.exists() and out.path.resolve() == self.path.resolve():
            raise BadInput(f"cannot export {self.path} onto itself.")
        if out.path.exists() and not force:
            raise BadInput(f"{out.path} exists already; use --force to replace it.")
        chars = self._select(self.list(), names)
        thumbs = self.thumbnails([c.name for c in chars if c.has_thumbnail])
        with out._transaction(fresh=True) as group:
            for c in chars:
                self._write(group, c)
                if thumbs.get(c.name) is not None:
                    self._write_thumbnail(group, group[c.name], thumbs[c.name])
        return [c.name for c in chars]

    def import_from(
        self, path: str | os.PathLike[str], force: bool = False, names: Sequence[str] | None = None
    ) -> builtins.list[str]:
        """Add the characters of another library file (only NAMES if given); returns the names added.

        Raises:
            StoreError / NewerFormat: PATH is not a face0 library this face0 can read.
            UnknownCharacter: one of NAMES is not in PATH.
            CharacterExists: a name is taken here and not force (nothing is added).
        """
        src = FaceStore(path)
        if not src.path.exists():
            raise BadInput(f"{src.path} does not exist.")
        if self.path.exists() and src.path.resolve() == self.path.resolve():
            raise BadInput(f"cannot import {self.path} into itself.")
        chars = src._select(src.list(), names)
        thumbs = src.thumbnails([c.name for c in chars if c.has_thumbnail])
        self.add_many(chars, force=force, thumbnails=thumbs)
        return [c.name for c in chars]

    def _select(self, chars: builtins.list[Character], names: Sequence[str] | None) -> builtins.list[Character]:
        if names is None:
            return chars
        by_name = {c.name: c for c in chars}
        out: builtins.list[Character] = []
        for n in dict.fromkeys(names):
            if n not in by_name:
                raise self._unknown(n, by_name)
            out.append(by_name[n])
        return out


__all__ = [
    "KINDS",
    "NAME_RULE",
    "TAG_RULE",
    "THUMBNAIL_SIZE",
    "Character",
    "FaceStore",
    "as_thumbnail",
    "check_name",
    "check_tags",
    "default_store_path",
]
