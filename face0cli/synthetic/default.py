"""Where the embedded default model lives: a face0 model directory shipped as package data.

It is the default `--model` of every command that needs one; `--model` / `$FACE0_MODEL` choose another.
`face0 synth build --out DIR --install` rebuilds it from nothing and installs it here.
"""

from __future__ import annotations

from pathlib import Path

from face0cli.errors import ModelError

DEFAULT_MODEL_DIR = Path(__file__).resolve().parent.parent / "assets" / "default-model"


def default_model() -> Path:
    """The embedded default model's directory.

    Raises:
        ModelError: it is not installed (a checkout without the shipped weights).
    """
    if not (DEFAULT_MODEL_DIR / "face0.json").is_file():
        raise ModelError(
            f"the embedded default model is missing from {DEFAULT_MODEL_DIR}: pass --model DIR, set FACE0_MODEL, "
            "or rebuild it with `face0 synth build --out build/ --install`."
        )
    return DEFAULT_MODEL_DIR
