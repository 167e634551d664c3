"""Domain errors. Library code raises these; only cli.py turns them into one red line and an exit code."""

from __future__ import annotations


class Face0Error(Exception):
    """Base class: a problem the user can fix. The message is one sentence, shown as is."""

    exit_code = 1


class BadInput(Face0Error):
    """A file or value given by the user cannot be used (missing, a directory, empty, corrupt, ...)."""

    exit_code = 2


class ImageError(BadInput):
    """A file that should be an image cannot be decoded, or is too large to decode safely."""


class ParameterError(BadInput, ValueError):
    """An option is out of range or not finite (also a ValueError, as Python code calling face0 expects)."""


class NoFaceFound(Face0Error):
    """The detector found no face in a photo."""

    exit_code = 3


class FaceTooSmall(NoFaceFound):
    """The largest face in a photo is under the minimum size (20 px in the paper)."""


class InvalidName(BadInput):
    """A character name breaks the naming rule."""


class UnknownCharacter(Face0Error):
    """No character of that name in the library."""

    exit_code = 4


class CharacterExists(Face0Error):
    """A character of that name exists already and --force was not given."""

    exit_code = 5


class StoreError(Face0Error):
    """The character library file is corrupt, foreign, or cannot be written."""

    exit_code = 6


class NewerFormat(StoreError):
    """A file (store, model directory, triplets) was written by a newer face0 format version."""


class EmbedderMismatch(Face0Error):
    """Vectors from different embedders or of different dimensions are combined."""

    exit_code = 7


class MissingWeights(Face0Error):
    """Weights that cannot be downloaded here are not present; the message names the file and where to put it."""

    exit_code = 8


class MissingPackage(Face0Error):
    """An optional package that a feature needs is not installed; the message names the pip command."""

    exit_code = 10


class ModelError(Face0Error):
    """A model directory is missing a part, is malformed, or does not fit the request."""

    exit_code = 9


def one_line(e: BaseException, limit: int = 200) -> str:
    """An exception's message as one line without a final full stop (at most LIMIT characters), for the
    sentence of a domain error that wraps it; the exception's type name when it has no message."""
    text = " ".join(str(e).split()).rstrip(".") or type(e).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."
