"""The naming rule of characters, eval identities and eval settings: one rule, in one place."""

from __future__ import annotations

import re
from typing import Any

NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
NAME_SHAPE = "1 to 64 letters, digits, '-', '_' or '.', starting with a letter or digit"
"""The shape of a name, in words (characters are also HDF5 dataset names, so '/' and '.' alone are refused)."""


def is_valid_name(name: Any) -> bool:
    """True if NAME is text of NAME_SHAPE."""
    return isinstance(name, str) and NAME_PATTERN.fullmatch(name) is not None
