"""The character library: named face embeddings in one HDF5 file (the only code that touches that file).

A character is a face embedding (paper §2.1: a photo's face through the embedder; §3.1: a sample of the
embeddings' Gaussian mixture; §3.3: a mix of other characters) kept under a name with its provenance.
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
import shutil
import tempfile
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

    @classmethod
    def new(
        cls,
        name: str,
        vector: np.ndarray | Sequence[float],
        embedder_id: str,
        kind: str,
        provenance: dict[str, Any],
        note: str = "",
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
        return cls(name, vec, embedder_id, int(vec.shape[0]), kind, provenance, _now(), str(note))

    @property
    def norm(self) -> float:
        """Euclidean norm of the vector."""
        return float(np.linalg.norm(self.vector.astype(np.float64)))

    def to_json(self, include_vector: bool = False) -> dict[str, Any]:
        """A JSON-ready dict of every field; the vector is replaced by its norm unless include_vector."""
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
            return Character(
                name=name,
                vector=vector,
                embedder_id=_text(a["embedder_id"]),
                dim=dim,
                kind=kind,
                provenance=provenance,
                created=_text(a["created"]),
                note=_text(a.get("note", "")),
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

    @staticmethod
    def _write(group: h5py.Group, char: Character) -> None:
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

    def add(self, char: Character, force: bool = False) -> None:
        """Save one character; CharacterExists if the name is taken and not force."""
        self.add_many([char], force=force)

    def add_many(self, chars: Sequence[Character], force: bool = False) -> None:
        """Save several characters at once: either all are saved or none (one atomic replace).

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

    def remove(self, name: str) -> None:
        """Delete the character NAME; UnknownCharacter if there is none."""
        if name not in self:  # cheap check first: do not create a file to find it missing
            raise self._unknown(name, self.names())
        with self._transaction() as group:
            keys = list(group.keys())
            if name not in keys:
                raise self._unknown(name, keys)
            del group[name]

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
        with out._transaction(fresh=True) as group:
            for c in chars:
                self._write(group, c)
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
        self.add_many(chars, force=force)
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
    "Character",
    "FaceStore",
    "check_name",
    "default_store_path",
]
