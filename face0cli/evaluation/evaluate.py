"""`face0 eval`: the paper's evaluation protocol (Face0 §4.1-4.3, Tables 1-2) over a spec file.

A spec names identities (reference photos, or library characters), prompts tagged photo-real or artistic, seeds,
and named sampler settings to compare. `run_eval` renders every (setting x identity x prompt x seed) image with
generate.render, scores it, and writes results.json, table.md (Table 1 and Table 2 shapes) and a contact sheet:

    text alignment   cosine of CLIP's image and text embeddings (§4.1)
    face alignment   cosine of a judge's embedding of the generation's largest face and of the reference face;
                     0 when the generation has no face (§4.1)
    overall          text + face (§4.1)
    best of N        per (identity, prompt), the seed with the best overall score, against the average (Table 2)
    paste            copy-paste indicator for identities with several photos: similarity to the photo that
                     conditioned the generation minus the mean similarity to the identity's other photos
                     (after FlashFace's "Paste"); near 0 = the identity, not the photo, was reproduced

Runs are resumable: every finished image is appended to results.jsonl under a hash of its parameters, and a rerun
reuses it (rescoring it only if the judges, CLIP or reference photos changed). docs/eval.md has the details.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import math
import os
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from face0cli import __version__
from face0cli.config import SAMPLE_DEFAULTS, SCHEDULER_NAMES, CropConfig
from face0cli.errors import BadInput, EmbedderMismatch, ModelError, NoFaceFound
from face0cli.evaluation.judges import (
    DEFAULT_CLIP,
    Clip,
    Detector,
    FaceFinder,
    Judge,
    JudgeContext,
    check_judge_name,
    conditioning_warning,
    is_conditioning_encoder,
    make_judge,
)
from face0cli.faces.images import file_sha256, load_image
from face0cli.generation.generate import Face, Request, make_grid, read_text_file, render, save_png

if TYPE_CHECKING:
    from rich.table import Table

    from face0cli.faces.embedders import Embedder

FORMAT = "face0-eval"
FORMAT_VERSION = 1
KEY_VERSION = 1
TAGS: tuple[str, ...] = ("photo-real", "artistic")
"""Prompt tags (paper §4.1 reports photo-realistic and artistic prompts separately)."""
METRICS: tuple[str, ...] = ("text", "face", "overall")
EXTRA_METRICS: tuple[str, ...] = ("paste", "face_other", "found")
SETTING_KEYS: tuple[str, ...] = ("w", "c", "a", "variety", "steps", "scheduler", "negative", "size", "model")
TOP_KEYS: tuple[str, ...] = ("name", "model", "identities", "prompts", "seeds", "settings", "judges", "clip")
IDENTITY_KEYS: tuple[str, ...] = ("photos", "character", "condition", "group")
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
NAME_RULE = "1 to 64 letters, digits, '-', '_' or '.', starting with a letter or digit"
TILE = 128
DASH = "—"

# =============================================================================================== the spec


@dataclass(frozen=True)
class IdentitySpec:
    """One identity to generate (paper §4.1: a reference face).

    Attributes:
        name: the identity's name in results.
        photos: reference photos (absolute paths). With no character, photos[condition] conditions the model and
            every photo is a reference for the paste indicator.
        character: a library character that conditions the model instead of a photo; its photos (given, or the
            sources in its provenance) are then the references.
        condition: index of the conditioning photo.
        group: group name for per-group aggregates (default: the identity's own name).
    """

    name: str
    photos: tuple[Path, ...] = ()
    character: str | None = None
    condition: int = 0
    group: str = ""

    def __post_init__(self) -> None:
        if not self.group:
            object.__setattr__(self, "group", self.name)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "photos": [str(p) for p in self.photos],
            "character": self.character,
            "condition": self.condition if self.character is None else None,
            "group": self.group,
        }


@dataclass(frozen=True)
class PromptSpec:
    """A prompt and its tag, photo-real or artistic (paper §4.1)."""

    text: str
    tag: str = "photo-real"


@dataclass(frozen=True)
class SettingSpec:
    """Named sampler settings to compare (paper §2.2 guidance: w, c, a; §3 variety; DDIM, 50 steps).

    Attributes:
        overrides: per prompt tag, parameters that replace these for that tag's prompts (e.g. a smaller c for
            artistic prompts, paper §3.4), as (tag, ((key, value), ...)) pairs.
        model: a model directory or hub id for this setting; None: the run's model.
    """

    name: str
    w: float = SAMPLE_DEFAULTS.w
    c: float = SAMPLE_DEFAULTS.c
    a: float = SAMPLE_DEFAULTS.a
    variety: float = SAMPLE_DEFAULTS.variety
    steps: int = SAMPLE_DEFAULTS.steps
    scheduler: str = SAMPLE_DEFAULTS.scheduler
    negative: str = ""
    height: int | None = None
    width: int | None = None
    model: str | None = None
    overrides: tuple[tuple[str, tuple[tuple[str, Any], ...]], ...] = ()

    def for_tag(self, tag: str) -> SettingSpec:
        """These settings with the overrides of prompts tagged TAG applied (and no overrides left)."""
        changes = dict(dict(self.overrides).get(tag, ()))
        return dataclasses.replace(self, overrides=(), **changes)

    def params(self) -> dict[str, Any]:
        """The sampler parameters, as generate.Request takes them."""
        keys = ("w", "c", "a", "variety", "steps", "scheduler", "negative", "height", "width")
        return {k: getattr(self, k) for k in keys}

    def to_json(self) -> dict[str, Any]:
        out = {"name": self.name, **self.params(), "model": self.model}
        if self.overrides:
            out["overrides"] = {tag: dict(changes) for tag, changes in self.overrides}
        return out


@dataclass(frozen=True)
class JudgeSpec:
    """A judge by registered name (judges.JUDGES) with its options as (key, value) pairs."""

    name: str
    options: tuple[tuple[str, Any], ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, **dict(self.options)}


@dataclass(frozen=True)
class EvalSpec:
    """An evaluation (paper §4.1-4.3): identities x prompts x seeds under each setting, scored by judges.

    Attributes:
        clip: CLIP path or hub id for text alignment (and the default of the clip-face judge); None: text off.
        model: the model of settings that name none (a run's `model=` argument overrides it).
        judges: face judges; the first is primary (the contact sheet, best-of-N picks in table order).
    """

    identities: tuple[IdentitySpec, ...]
    prompts: tuple[PromptSpec, ...]
    seeds: tuple[int, ...]
    settings: tuple[SettingSpec, ...] = (SettingSpec("default"),)
    judges: tuple[JudgeSpec, ...] = (JudgeSpec("clip-face"),)
    clip: str | None = DEFAULT_CLIP
    model: str | None = None
    name: str = "eval"

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "model": self.model,
            "clip": self.clip,
            "identities": [i.to_json() for i in self.identities],
            "prompts": [{"text": p.text, "tag": p.tag} for p in self.prompts],
            "seeds": list(self.seeds),
            "settings": [s.to_json() for s in self.settings],
            "judges": [j.to_json() for j in self.judges],
        }


# ------------------------------------------------------------------------------------------------ parsing

_Path = tuple[str | int, ...]


class _Source:
    """Where a spec came from, to name the file, line and field in errors."""

    def __init__(self, label: str, lines: Mapping[_Path, int] | None = None) -> None:
        self.label = label
        self.lines = dict(lines or {})

    def error(self, path: _Path, message: str) -> BadInput:
        line = None
        for n in range(len(path), -1, -1):
            line = self.lines.get(path[:n])
            if line is not None:
                break
        where = self.label + (f", line {line}" if line is not None else "")
        name = _field_name(path)
        return BadInput(f"{where}{f' ({name})' if name else ''}: {message.rstrip('.')}.")


def _field_name(path: _Path) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _yaml_lines(node: Any, path: _Path, out: dict[_Path, int], src: _Source) -> None:
    """1-based line of every mapping key and sequence item of a composed YAML node; BadInput for a key given twice
    (YAML loaders keep the last one silently)."""
    import yaml

    out.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key, value in node.value:
            child = (*path, str(key.value))
            if child[-1] in seen:
                src.lines[child] = key.start_mark.line + 1
                raise src.error(child, f"the field '{key.value}' is given twice")
            seen.add(str(key.value))
            _yaml_lines(value, child, out, src)
            out[child] = key.start_mark.line + 1
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _yaml_lines(item, (*path, i), out, src)


def load_spec(path: str | os.PathLike[str]) -> EvalSpec:
    """Read an eval spec file: YAML, or JSON when it ends in .json (docs/eval.md describes it).

    Relative photo, model and CLIP paths are relative to the file's folder.

    Raises:
        BadInput: the file is missing or not valid; the message names the file, the line and the field.
    """
    p = Path(path)
    text = read_text_file(p)
    lines: dict[_Path, int] = {}
    if p.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise BadInput(f"{p}, line {e.lineno}: not valid JSON ({e.msg}).") from e
    else:
        import yaml

        loader = yaml.SafeLoader(text)
        try:
            node = loader.get_single_node()
            data = loader.construct_document(node) if node is not None else None
            if node is not None:
                _yaml_lines(node, (), lines, _Source(str(p)))
        except yaml.MarkedYAMLError as e:
            mark = e.problem_mark or e.context_mark
            line = f", line {mark.line + 1}" if mark is not None else ""
            problem = (e.problem or e.context or "syntax error").rstrip(".")
            raise BadInput(f"{p}{line}: not valid YAML ({problem}).") from e
        except yaml.YAMLError as e:
            raise BadInput(f"{p}: not valid YAML ({e}).") from e
        finally:
            loader.dispose()
    return parse_spec(data, base_dir=p.parent, source=str(p), lines=lines, default_name=p.stem)


def parse_spec(
    data: Any,
    *,
    base_dir: str | os.PathLike[str] | None = None,
    source: str = "the eval spec",
    lines: Mapping[_Path, int] | None = None,
    default_name: str = "eval",
) -> EvalSpec:
    """Check a spec's data (as parsed from YAML or JSON) and build an EvalSpec.

    Args:
        data: the parsed document, a mapping.
        base_dir: folder that relative paths are relative to (default: the working directory).
        source: how to name the spec in errors.
        lines: 1-based line numbers of the fields, keyed by their path (from `load_spec`).

    Raises:
        BadInput: a field is missing, unknown or malformed; one sentence with the file, line and field.
    """
    src = _Source(source, lines)
    base = Path(base_dir) if base_dir is not None else Path.cwd()
    if not isinstance(data, Mapping):
        raise src.error((), "the spec must be a mapping with identities, prompts, seeds and settings")
    _check_keys(src, (), data, TOP_KEYS)
    for key in ("identities", "prompts", "seeds"):
        if key not in data:
            raise src.error((), f"the spec has no '{key}'")
    name = data.get("name", default_name)
    if not isinstance(name, str) or not name.strip():
        raise src.error(("name",), f"the name must be a non-empty string, got {name!r}")
    model = _optional_str(src, ("model",), data.get("model"))
    clip: str | None = DEFAULT_CLIP
    if "clip" in data:
        clip = _optional_str(src, ("clip",), data["clip"])
    return EvalSpec(
        identities=_parse_identities(src, base, data["identities"]),
        prompts=_parse_prompts(src, data["prompts"]),
        seeds=_parse_seeds(src, data["seeds"]),
        settings=_parse_settings(src, base, data.get("settings")),
        judges=_parse_judges(src, data.get("judges")),
        clip=_local_or_id(base, clip) if clip else None,
        model=_local_or_id(base, model) if model else None,
        name=name.strip(),
    )


def _check_keys(src: _Source, path: _Path, data: Mapping[Any, Any], allowed: Sequence[str]) -> None:
    for key in data:
        if key not in allowed:
            close = difflib.get_close_matches(str(key), list(allowed), n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise src.error((*path, str(key)), f"unknown field '{key}'{hint}; the fields are {', '.join(allowed)}")


def _optional_str(src: _Source, path: _Path, value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise src.error(path, f"expected a non-empty string or null, got {value!r}")
    return value.strip()


def _local_or_id(base: Path, name: str) -> str:
    """A path relative to the spec's folder if it exists there, else the text as given (a hub id or a path)."""
    candidate = (base / name).expanduser()
    if not Path(name).is_absolute() and candidate.exists():
        return str(candidate.resolve())
    path = Path(name).expanduser()
    return str(path.resolve()) if path.exists() else name


def _check_name(src: _Source, path: _Path, name: Any, what: str) -> str:
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
        raise src.error(path, f"the {what} name {name!r} breaks the rule: {NAME_RULE}")
    return name


def _parse_identities(src: _Source, base: Path, data: Any) -> tuple[IdentitySpec, ...]:
    path: _Path = ("identities",)
    if not isinstance(data, Mapping) or not data:
        raise src.error(path, "identities must map names to photos or {character: NAME}")
    out = []
    for raw_name, value in data.items():
        name = _check_name(src, (*path, str(raw_name)), str(raw_name), "identity")
        here = (*path, name)
        fields: Mapping[str, Any]
        if isinstance(value, (str, list)):
            fields = {"photos": value}
        elif isinstance(value, Mapping):
            _check_keys(src, here, value, IDENTITY_KEYS)
            fields = value
        else:
            raise src.error(here, "an identity is a photo, a list of photos, or a mapping with photos or character")
        photos = _parse_photos(src, base, (*here, "photos"), fields.get("photos"))
        character = fields.get("character")
        if character is not None:
            character = _check_name(src, (*here, "character"), character, "character")
        if not photos and character is None:
            raise src.error(here, f"the identity '{name}' needs photos or a character")
        condition = fields.get("condition", 0)
        if isinstance(condition, bool) or not isinstance(condition, int):
            raise src.error((*here, "condition"), f"condition must be a photo index, got {condition!r}")
        if character is not None and "condition" in fields:
            raise src.error((*here, "condition"), "a character conditions this identity, so condition has no use")
        if character is None and not 0 <= condition < len(photos):
            raise src.error((*here, "condition"), f"condition must be between 0 and {len(photos) - 1}, got {condition}")
        group = fields.get("group", "")
        if group:
            group = _check_name(src, (*here, "group"), group, "group")
        out.append(IdentitySpec(name, photos, character, condition, group or ""))
    return tuple(out)


def _parse_photos(src: _Source, base: Path, path: _Path, value: Any) -> tuple[Path, ...]:
    if value is None:
        return ()
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not items:
        raise src.error(path, "photos must be a path or a non-empty list of paths")
    photos = []
    for i, item in enumerate(items):
        here = path if isinstance(value, str) else (*path, i)
        if not isinstance(item, str) or not item.strip():
            raise src.error(here, f"a photo must be a path, got {item!r}")
        p = Path(item).expanduser()
        p = p if p.is_absolute() else base / p
        if not p.is_file():
            raise src.error(here, f"the photo {item} does not exist" + (" (it is a folder)" if p.is_dir() else ""))
        photos.append(p.resolve())
    if len(set(photos)) != len(photos):
        raise src.error(path, "the same photo is listed twice")
    return tuple(photos)


def _parse_prompts(src: _Source, data: Any) -> tuple[PromptSpec, ...]:
    path: _Path = ("prompts",)
    if not isinstance(data, list) or not data:
        raise src.error(path, "prompts must be a non-empty list of texts or {text, tag} mappings")
    out = []
    for i, item in enumerate(data):
        here = (*path, i)
        text: Any
        tag: Any
        if isinstance(item, str):
            text, tag = item, "photo-real"
        elif isinstance(item, Mapping):
            _check_keys(src, here, item, ("text", "tag"))
            text, tag = item.get("text"), item.get("tag", "photo-real")
        else:
            raise src.error(here, f"a prompt is a text or a {{text, tag}} mapping, got {item!r}")
        if not isinstance(text, str) or not text.strip():
            raise src.error((*here, "text") if isinstance(item, Mapping) else here, "a prompt needs a non-empty text")
        if tag not in TAGS:
            raise src.error((*here, "tag"), f"the tag must be one of {', '.join(TAGS)}, got {tag!r}")
        prompt = PromptSpec(text.strip(), tag)
        if prompt in out:
            raise src.error(here, f"the prompt {text.strip()!r} ({tag}) is listed twice")
        out.append(prompt)
    return tuple(out)


def _parse_seeds(src: _Source, data: Any) -> tuple[int, ...]:
    path: _Path = ("seeds",)
    if isinstance(data, int) and not isinstance(data, bool):
        if data < 1:
            raise src.error(path, f"seeds: N means seeds 0..N-1 and needs N >= 1, got {data}")
        return tuple(range(data))
    if not isinstance(data, list) or not data:
        raise src.error(path, "seeds must be a non-empty list of whole numbers >= 0, or a count N")
    for i, s in enumerate(data):
        if isinstance(s, bool) or not isinstance(s, int) or s < 0:
            raise src.error((*path, i), f"a seed must be a whole number >= 0, got {s!r}")
    if len(set(data)) != len(data):
        raise src.error(path, "a seed is listed twice")
    return tuple(int(s) for s in data)


def _parse_settings(src: _Source, base: Path, data: Any) -> tuple[SettingSpec, ...]:
    path: _Path = ("settings",)
    if data is None:
        return (SettingSpec("default"),)
    if not isinstance(data, Mapping) or not data:
        raise src.error(path, "settings must map names to sampler settings (w, c, a, variety, steps, scheduler, ...)")
    out = []
    for raw_name, value in data.items():
        name = _check_name(src, (*path, str(raw_name)), str(raw_name), "setting")
        here = (*path, name)
        value = value or {}
        if not isinstance(value, Mapping):
            raise src.error(here, "a setting is a mapping of sampler parameters")
        _check_keys(src, here, value, (*SETTING_KEYS, *TAGS))
        fields = _setting_fields(src, base, here, {k: v for k, v in value.items() if k not in TAGS})
        overrides = []
        for tag in TAGS:
            if tag in value:
                extra = value[tag] or {}
                if not isinstance(extra, Mapping):
                    raise src.error((*here, tag), f"the {tag} overrides are a mapping of sampler parameters")
                _check_keys(src, (*here, tag), extra, tuple(k for k in SETTING_KEYS if k != "model"))
                changes = _setting_fields(src, base, (*here, tag), extra)
                overrides.append((tag, tuple(sorted(changes.items()))))
        out.append(SettingSpec(name=name, overrides=tuple(overrides), **fields))
    return tuple(out)


def _setting_fields(src: _Source, base: Path, path: _Path, data: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        here = (*path, key)
        if key in ("w", "c", "a", "variety"):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise src.error(here, f"{key} must be a finite number, got {value!r}")
            if key == "variety" and value < 0:
                raise src.error(here, f"variety must be >= 0, got {value}")
            out[key] = float(value)
        elif key == "steps":
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise src.error(here, f"steps must be a whole number >= 1, got {value!r}")
            out[key] = value
        elif key == "scheduler":
            if value not in SCHEDULER_NAMES:
                raise src.error(here, f"the scheduler must be one of {', '.join(SCHEDULER_NAMES)}, got {value!r}")
            out[key] = value
        elif key == "negative":
            if not isinstance(value, str):
                raise src.error(here, f"negative must be a text, got {value!r}")
            out[key] = value
        elif key == "size":
            out["height"], out["width"] = _parse_size(src, here, value)
        elif key == "model":
            model = _optional_str(src, here, value)
            out[key] = _local_or_id(base, model) if model else None
    return out


def _parse_size(src: _Source, path: _Path, value: Any) -> tuple[int, int]:
    """512 -> (512, 512); "512x768" or [512, 768] (width x height) -> (height 768, width 512)."""
    if isinstance(value, int) and not isinstance(value, bool):
        width = height = value
    elif isinstance(value, list) and len(value) == 2 and all(isinstance(v, int) for v in value):
        width, height = value
    elif isinstance(value, str) and (m := re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", value)):
        width, height = int(m.group(1)), int(m.group(2))
    else:
        raise src.error(path, f'size must be 512, "512x768" or [512, 768] (width, height), got {value!r}')
    if isinstance(width, bool) or isinstance(height, bool) or min(width, height) < 8 or width % 8 or height % 8:
        raise src.error(path, f"the size must be made of positive multiples of 8, got {value!r}")
    return int(height), int(width)


def _parse_judges(src: _Source, data: Any) -> tuple[JudgeSpec, ...]:
    path: _Path = ("judges",)
    if data is None:
        return (JudgeSpec("clip-face"),)
    if not isinstance(data, list) or not data:
        raise src.error(path, "judges must be a non-empty list of judge names or {name, ...options} mappings")
    out: list[JudgeSpec] = []
    for i, item in enumerate(data):
        here = (*path, i)
        if isinstance(item, str):
            name, options = item, {}
        elif isinstance(item, Mapping) and isinstance(item.get("name"), str):
            name, options = item["name"], {str(k): v for k, v in item.items() if k != "name"}
        else:
            raise src.error(here, f"a judge is a name or a mapping with a name, got {item!r}")
        try:
            check_judge_name(name)
        except BadInput as e:
            raise src.error(here, str(e)) from e
        if any(j.name == name for j in out):
            raise src.error(here, f"the judge '{name}' is listed twice")
        out.append(JudgeSpec(name, tuple(sorted(options.items()))))
    return tuple(out)


# ================================================================================================ metrics


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine similarity of two vectors (paper §4.1); 0 when either is zero.

    Args:
        a, b: (D,) arrays.
    """
    x = np.asarray(a, np.float64).reshape(-1)
    y = np.asarray(b, np.float64).reshape(-1)
    if x.shape != y.shape:
        raise EmbedderMismatch(f"cannot compare embeddings of dimensions {x.shape[0]} and {y.shape[0]}.")
    nx, ny = float(np.linalg.norm(x)), float(np.linalg.norm(y))
    if nx == 0.0 or ny == 0.0:
        return 0.0
    return float(np.dot(x, y) / (nx * ny))


def face_alignment(generated: np.ndarray | None, references: Sequence[np.ndarray]) -> float:
    """Face alignment (paper §4.1): cosine of the generation's face and the reference face; 0 with no face.

    Args:
        generated: (D,) judge embedding of the generation's largest face, or None when it has none.
        references: one or more (D,) judge embeddings of the reference face; with several (a character made from
            several photos), the mean of the cosines.
    """
    if generated is None:
        return 0.0
    if not references:
        raise BadInput("face alignment needs at least one reference face.")
    return float(np.mean([cosine(generated, r) for r in references]))


def paste_indicator(
    generated: np.ndarray | None, references: Sequence[np.ndarray], used: int
) -> tuple[float, float] | None:
    """Copy-paste indicator (after FlashFace's "Paste"): similarity to the conditioning photo minus the mean
    similarity to the identity's other photos.

    A generation that reproduces the person scores about as close to any photo of them as to the one it was
    conditioned on (paste near 0); one that copies the photo (pose, lighting, expression) scores closer to it
    (paste > 0).

    Args:
        generated: (D,) judge embedding of the generation's face, or None (no face: undefined).
        references: R >= 2 (D,) judge embeddings of the identity's photos.
        used: index of the conditioning photo.

    Returns:
        (paste, mean similarity to the other photos), or None when there is no face or fewer than two photos.
    """
    if generated is None or len(references) < 2:
        return None
    own = cosine(generated, references[used])
    others = float(np.mean([cosine(generated, r) for i, r in enumerate(references) if i != used]))
    return own - others, others


@dataclass(frozen=True)
class Stat:
    """Mean ± standard deviation (population, ddof=0) of n values; mean and std are None when n = 0."""

    mean: float | None
    std: float | None
    n: int

    def to_json(self) -> dict[str, Any]:
        return {"mean": self.mean, "std": self.std, "n": self.n}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Stat:
        return cls(data.get("mean"), data.get("std"), int(data.get("n", 0)))

    def fmt(self, digits: int = 3) -> str:
        """'0.231 ± 0.012' as in the paper's tables, or a dash when there are no values."""
        if self.mean is None or self.std is None:
            return DASH
        return f"{self.mean:.{digits}f} ± {self.std:.{digits}f}"


def summarize(values: Iterable[float | None]) -> Stat:
    """Mean ± std of the values that are not None (paper Tables 1-2 report mean ± std)."""
    vals = np.array([v for v in values if v is not None], dtype=np.float64)
    if vals.size == 0:
        return Stat(None, None, 0)
    return Stat(float(vals.mean()), float(vals.std()), int(vals.size))


def pick_best(candidates: Sequence[Mapping[str, float | None]], by: str = "overall") -> int:
    """Index of the best of N candidates (paper Table 2: best of N seeds): the largest `by` score, ties to the
    first; candidates without a `by` score (text alignment off) are ranked by face."""
    if not candidates:
        raise BadInput("best-of-N needs at least one candidate.")

    def score(c: Mapping[str, float | None]) -> float:
        value = c.get(by)
        value = c.get("face") if value is None else value
        return -math.inf if value is None else float(value)

    return max(range(len(candidates)), key=lambda i: (score(candidates[i]), -i))


# ==================================================================================================== run


@dataclass
class EvalResults:
    """What `run_eval` wrote: every image's scores, the aggregates and the report files.

    Attributes:
        images: one dict per image (parameters, path relative to out_dir, scores), in spec order.
        aggregates: [setting][judge][scope][metric] -> {mean, std, n}; scopes "all", "tag:T", "identity:I",
            "group:G"; metrics text, face, overall, paste, face_other, found (the share of images with a face).
        best_of_n: [setting][judge][scope][metric] -> {mean, std, n} of the best seed per (identity, prompt);
            scopes "all" and "tag:T".
        judges: [{name, id, encoder_id, conditioning_encoder, primary}].
        warnings: one sentence each (e.g. a judge that is the conditioning encoder).
        generated, reused, rescored: images rendered now, taken from an earlier run, rescored from their PNG.
    """

    out_dir: Path
    spec: EvalSpec
    images: list[dict[str, Any]]
    aggregates: dict[str, Any]
    best_of_n: dict[str, Any]
    judges: list[dict[str, Any]]
    clip: str | None
    warnings: list[str]
    models: dict[str, str]
    generated: int = 0
    reused: int = 0
    rescored: int = 0
    contact_sheet_layout: dict[str, Any] = field(default_factory=dict)

    @property
    def results_json(self) -> Path:
        return self.out_dir / "results.json"

    @property
    def table_md(self) -> Path:
        return self.out_dir / "table.md"

    @property
    def contact_sheet(self) -> Path:
        return self.out_dir / "contact_sheet.png"

    def to_json(self) -> dict[str, Any]:
        """The content of results.json."""
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "face0_version": __version__,
            "spec": self.spec.to_json(),
            "models": self.models,
            "clip": self.clip,
            "judges": self.judges,
            "primary_judge": self.judges[0]["name"] if self.judges else None,
            "seeds_per_group": len(self.spec.seeds),
            "warnings": self.warnings,
            "counts": {
                "images": len(self.images),
                "generated": self.generated,
                "reused": self.reused,
                "rescored": self.rescored,
            },  # fmt: skip
            "aggregates": self.aggregates,
            "best_of_n": self.best_of_n,
            "contact_sheet": self.contact_sheet_layout,
            "images": self.images,
        }


@dataclass(frozen=True)
class _Identity:
    """An identity resolved for a run: its reference photos and how it conditions."""

    spec: IdentitySpec
    references: tuple[Path, ...]
    ref_sha256: tuple[str, ...]
    character: Any = None  # store Character, when a character conditions

    @property
    def used(self) -> int | None:
        """Index of the conditioning photo in references; None when a character conditions."""
        return None if self.spec.character is not None else self.spec.condition


@dataclass(frozen=True)
class _Job:
    setting: SettingSpec  # already resolved for the prompt's tag
    identity: _Identity
    prompt_index: int
    prompt: PromptSpec
    seed: int
    model: str


def run_eval(
    spec: EvalSpec | str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    model: str | None = None,
    device: str = "cpu",
    dtype: str = "fp32",
    store: Any = None,
    embedder_weights: str | os.PathLike[str] | None = None,
    pipe_loader: Callable[[str], Any] | None = None,
    embedder_loader: Callable[[str], Embedder] | None = None,
    clip_loader: Callable[[str], Clip] | None = None,
    detector: Detector | None = None,
    resume: bool = True,
    show_progress: bool = True,
    on_warning: Callable[[str], None] | None = None,
) -> EvalResults:
    """Run the paper's evaluation (Face0 §4.1-4.3): render, score, aggregate, report (Tables 1-2).

    Every (setting x identity x prompt x seed) image is rendered with generate.render at the setting's parameters
    (tag overrides applied) and saved in out_dir/images/SETTING/ with its parameters; each is scored and appended
    to out_dir/results.jsonl at once. Then out_dir/results.json, table.md and contact_sheet.png are written.

    Args:
        spec: an EvalSpec or a spec file (YAML / JSON).
        out_dir: output folder (created).
        model: model of the settings that name none, overriding the spec's `model` (a directory or hub id).
        device, dtype: where the model, embedder, CLIP and judges run; the model's dtype (fp32, fp16, bf16).
        store: the character library (a FaceStore or its path) for character identities; default the user's.
        embedder_weights: InceptionResnetV1 weights for embedding reference photos (the model's embedder) and
            the facenet judge's default (faces.resolve_weights order).
        pipe_loader: model -> Face0Pipeline; default Face0Pipeline.load(model, device, dtype).
        embedder_loader: the model's embedder id -> an Embedder with that id, to embed conditioning photos;
            default a FacenetEmbedder from embedder_weights.
        clip_loader: CLIP path or id -> Clip; default judges.load_clip.
        detector: face detector of the judges; default MTCNN.
        resume: reuse the images recorded in out_dir/results.jsonl; False starts over.
        show_progress: a progress bar on stderr (shown on terminals).
        on_warning: called with each warning as soon as it is known (e.g. console.warn), besides results.warnings.

    Raises:
        BadInput: bad spec or photo. ModelError: no model. NoFaceFound: a judge finds no face in a reference photo.
        EmbedderMismatch: a character or photo embedding does not fit a model. MissingWeights: CLIP or embedder
        weights are missing.
    """
    spec = spec if isinstance(spec, EvalSpec) else load_spec(spec)
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise BadInput(f"{out} is a file; give a folder for the eval outputs.")
    default_model = _local_or_id(Path.cwd(), model) if model else spec.model
    missing = [s.name for s in spec.settings if not (s.model or default_model)]
    if missing:
        raise ModelError(
            f"no model for the setting '{missing[0]}': give `model:` in the spec or a model for the run "
            "(--model or FACE0_MODEL)."
        )

    # 1. Judges and CLIP first: they fail fast, before any model is loaded or image rendered.
    ctx = JudgeContext(
        device=device,
        finder=FaceFinder(detector, device=device, cfg=CropConfig()),
        clip_id=spec.clip,
        embedder_weights=embedder_weights,
        clip_loader=clip_loader,
    )
    clip = ctx.clip(spec.clip) if spec.clip else None
    judges = [make_judge(j.name, dict(j.options), ctx) for j in spec.judges]
    judge_info = [
        {"name": j.name, "id": j.id, "encoder_id": j.encoder_id, "conditioning_encoder": False, "primary": i == 0}
        for i, j in enumerate(judges)
    ]
    warnings: list[str] = []

    def warn(message: str) -> None:
        if message not in warnings:
            warnings.append(message)
            if on_warning is not None:
                on_warning(message)

    if clip is None:
        warn("text alignment is off (clip: null), so text and overall scores are not reported.")

    # 2. Reference faces, through every judge; prompts through CLIP.
    identities = _resolve_identities(spec, store)
    ref_vecs = _reference_embeddings(identities, judges)
    text_vecs = (
        dict(zip([p.text for p in spec.prompts], clip.embed_texts([p.text for p in spec.prompts]))) if clip else {}
    )
    scored_with = {
        "clip": clip.id if clip else None,
        "judges": {j.name: j.id for j in judges},
        "references": {i.spec.name: list(i.ref_sha256) for i in identities},
    }

    # 3. The jobs, grouped by model so one model is loaded at a time.
    jobs = _jobs(spec, identities, default_model)
    out.mkdir(parents=True, exist_ok=True)
    journal = out / "results.jsonl"
    done = _read_journal(journal) if resume else {}
    if not resume:
        journal.write_text("", encoding="utf-8")
    _end_torn_line(journal)
    loader = pipe_loader or _default_pipe_loader(device, dtype)
    embedders = _EmbedderCache(embedder_loader or _default_embedder_loader(embedder_weights, device))

    records: list[dict[str, Any]] = []
    models: dict[str, str] = {}
    counts = {"generated": 0, "reused": 0, "rescored": 0}
    with _progress(show_progress) as bar, journal.open("a", encoding="utf-8") as log:
        task = bar.add_task("eval", total=sum(j.setting.steps for j in jobs))
        for model_ref in dict.fromkeys(j.model for j in jobs):
            pipe = loader(model_ref)
            embedder_id = str(pipe.face0_config.embedder_id)
            models[model_ref] = embedder_id
            for judge, entry in zip(judges, judge_info):
                if is_conditioning_encoder(judge, embedder_id):
                    entry["conditioning_encoder"] = True
                    warn(conditioning_warning(judge, embedder_id))
            faces: dict[str, Face] = {}
            for job in (job for job in jobs if job.model == model_ref):
                bar.update(task, description=f"eval {job.setting.name}")
                fingerprint = _face_fingerprint(job.identity, embedder_id)
                key = job_key(job, fingerprint)
                rel = (
                    Path("images")
                    / job.setting.name
                    / (f"{job.identity.spec.name}-p{job.prompt_index:02d}-s{job.seed}-{key[:10]}.png")
                )
                old = done.get(key)
                if old is not None and old.get("path") == rel.as_posix() and (out / rel).is_file():
                    if old.get("scored_with") == scored_with:
                        records.append(old)
                        counts["reused"] += 1
                    else:
                        image = load_image(out / rel)
                        record = _record(job, key, rel, fingerprint, old.get("unet_calls_per_step"))
                        record["scores"] = _score(image, job, judges, ref_vecs, text_vecs, clip)
                        record["scored_with"] = scored_with
                        _append(log, record)
                        records.append(record)
                        counts["rescored"] += 1
                    bar.advance(task, job.setting.steps)
                    continue
                if job.identity.spec.name not in faces:
                    faces[job.identity.spec.name] = _conditioning_face(job.identity, pipe, embedders)
                req = Request(
                    prompt=job.prompt.text,
                    face=faces[job.identity.spec.name],
                    seed=job.seed,
                    n=1,
                    model=model_ref,
                    **job.setting.params(),
                )
                for _, image, info in render(pipe, req, on_step=lambda: bar.advance(task)):
                    where: dict[str, Any] = {
                        "key": key,
                        "setting": job.setting.name,
                        "identity": job.identity.spec.name,
                    }
                    where |= {"prompt_index": job.prompt_index, "tag": job.prompt.tag}
                    params = req.params(0) | info | {"eval": where}
                    save_png(image, params, out / rel)
                    record = _record(job, key, rel, fingerprint, info.get("unet_calls_per_step"))
                    record["scores"] = _score(image, job, judges, ref_vecs, text_vecs, clip)
                    record["scored_with"] = scored_with
                    _append(log, record)
                    records.append(record)
                    counts["generated"] += 1
            del pipe

    # 4. Aggregates and the report.
    judge_names = [j.name for j in judges]
    results = EvalResults(
        out_dir=out,
        spec=spec,
        images=records,
        aggregates=aggregate(records, spec, judge_names),
        best_of_n=best_of_n_table(records, spec, judge_names),
        judges=judge_info,
        clip=clip.id if clip else None,
        warnings=warnings,
        models=models,
        generated=counts["generated"],
        reused=counts["reused"],
        rescored=counts["rescored"],
    )
    results.contact_sheet_layout = _write_contact_sheet(results, identities, ctx.finder)
    _write_json(results.results_json, results.to_json())
    _write_text(results.table_md, render_table_md(results.to_json()))
    return results


# --------------------------------------------------------------------------------------------- run helpers


def _progress(show: bool) -> Any:
    """console.progress() when asked for, else a disabled rich Progress (the same interface)."""
    from face0cli.console import progress

    if show:
        return progress()
    from rich.progress import Progress

    return Progress(disable=True)


def _default_pipe_loader(device: str, dtype: str) -> Callable[[str], Any]:
    def load(model: str) -> Any:
        from face0cli.model.pipeline import Face0Pipeline

        return Face0Pipeline.load(model, device=device, dtype=dtype)

    return load


def _default_embedder_loader(weights: str | os.PathLike[str] | None, device: str) -> Callable[[str], Embedder]:
    def load(embedder_id: str) -> Embedder:
        from face0cli.faces.embedders import FacenetEmbedder

        emb = FacenetEmbedder(weights=weights, device=device)
        if emb.id != embedder_id:
            raise EmbedderMismatch(
                f"the model was trained with the embedder {embedder_id}, but the embedder weights given are {emb.id}."
            )
        return emb

    return load


class _EmbedderCache:
    """One embedder per embedder id, and one embedding per (embedder id, photo)."""

    def __init__(self, loader: Callable[[str], Embedder]) -> None:
        self.loader = loader
        self.embedders: dict[str, Embedder] = {}
        self.vectors: dict[tuple[str, Path], tuple[np.ndarray, dict[str, Any]]] = {}

    def embed(self, embedder_id: str, photo: Path) -> tuple[np.ndarray, dict[str, Any]]:
        from face0cli.faces.embedders import embed_photo

        if (embedder_id, photo) not in self.vectors:
            if embedder_id not in self.embedders:
                emb = self.loader(embedder_id)
                if emb.id != embedder_id:
                    raise EmbedderMismatch(
                        f"the model expects the embedder {embedder_id}, but the embedder given is {emb.id}."
                    )
                self.embedders[embedder_id] = emb
            result = embed_photo(self.embedders[embedder_id], photo)
            self.vectors[(embedder_id, photo)] = (result.vector, result.to_json())
        return self.vectors[(embedder_id, photo)]


def _resolve_identities(spec: EvalSpec, store: Any) -> list[_Identity]:
    """Reference photos of each identity (a character's from the spec, else from its provenance)."""
    lib = None
    out = []
    for ident in spec.identities:
        character = None
        refs = ident.photos
        if ident.character is not None:
            if lib is None:
                lib = _open_store(store)
            character = lib.get(ident.character)
            if not refs:
                refs = _provenance_photos(character.provenance)
            if not refs:
                raise BadInput(
                    f"the identity '{ident.name}' (character '{ident.character}') has no reference photo to judge "
                    "faces against; add photos: to it in the spec."
                )
        out.append(_Identity(ident, tuple(refs), tuple(file_sha256(p) for p in refs), character))
    return out


def _open_store(store: Any) -> Any:
    from face0cli.library.store import FaceStore, default_store_path

    if store is None:
        return FaceStore(default_store_path())
    if isinstance(store, (str, os.PathLike)):
        return FaceStore(store)
    return store


def _provenance_photos(provenance: Mapping[str, Any]) -> tuple[Path, ...]:
    """The photos a character was embedded from (face0 embed records them as sources), those that still exist."""
    sources = provenance.get("sources") if isinstance(provenance, Mapping) else None
    photos = []
    for s in sources or []:
        path = Path(str(s.get("source", ""))) if isinstance(s, Mapping) else None
        if path is not None and path.is_file():
            photos.append(path.resolve())
    return tuple(dict.fromkeys(photos))


def _reference_embeddings(identities: Sequence[_Identity], judges: Sequence[Judge]) -> dict[str, dict[str, list]]:
    """[judge][identity] -> the judge's embeddings of the identity's reference photos, in order."""
    images = {p: load_image(p) for ident in identities for p in ident.references}
    out: dict[str, dict[str, list]] = {}
    for judge in judges:
        vectors = dict(zip(images, judge.embed_faces(list(images.values()))))
        out[judge.name] = {}
        for ident in identities:
            for p in ident.references:
                if vectors[p] is None:
                    raise NoFaceFound(
                        f"the judge '{judge.name}' finds no face in {p}, a reference photo of '{ident.spec.name}'."
                    )
            out[judge.name][ident.spec.name] = [vectors[p] for p in ident.references]
    return out


def _jobs(spec: EvalSpec, identities: Sequence[_Identity], default_model: str | None) -> list[_Job]:
    jobs = []
    for setting in spec.settings:
        model = setting.model or default_model
        assert model is not None  # checked by run_eval
        for ident in identities:
            for pi, prompt in enumerate(spec.prompts):
                for seed in spec.seeds:
                    jobs.append(_Job(setting.for_tag(prompt.tag), ident, pi, prompt, seed, model))
    order = list(dict.fromkeys(j.model for j in jobs))
    return sorted(jobs, key=lambda j: order.index(j.model))  # stable: spec order within a model


def _face_fingerprint(ident: _Identity, embedder_id: str) -> dict[str, Any]:
    """What determines the conditioning embedding, without computing it (resume keys)."""
    if ident.character is not None:
        digest = hashlib.sha256(np.asarray(ident.character.vector, "<f4").tobytes()).hexdigest()
        return {"kind": "character", "name": ident.spec.character, "vector_sha256": digest,
                "embedder_id": ident.character.embedder_id}  # fmt: skip
    used = ident.spec.condition
    return {"kind": "photo", "photo_sha256": ident.ref_sha256[used], "embedder_id": embedder_id}


def job_key(job: _Job, fingerprint: Mapping[str, Any]) -> str:
    """Hex SHA-256 of everything that determines an image (resume key of results.jsonl)."""
    data = {
        "v": KEY_VERSION,
        "setting": job.setting.name,
        "identity": job.identity.spec.name,
        "face": dict(fingerprint),
        "prompt": job.prompt.text,
        "seed": job.seed,
        "model": job.model,
        **job.setting.params(),
    }
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


def _conditioning_face(ident: _Identity, pipe: Any, embedders: _EmbedderCache) -> Face:
    """The embedding that conditions an identity under a model: its character's vector or its photo's."""
    cfg = pipe.face0_config
    if ident.character is not None:
        char = ident.character
        if char.embedder_id != cfg.embedder_id:
            raise EmbedderMismatch(
                f"character '{char.name}' was made by the embedder {char.embedder_id}, but the model expects the "
                f"embedder {cfg.embedder_id}."
            )
        vector = np.asarray(char.vector, np.float32)
        source: dict[str, Any] = {"kind": "character", "name": char.name, "character_kind": char.kind}
    else:
        photo = ident.references[ident.spec.condition]
        vector, prov = embedders.embed(str(cfg.embedder_id), photo)
        source = {"kind": "photo", **prov}
    if vector.shape[0] != int(cfg.embed_dim):
        raise EmbedderMismatch(
            f"the face embedding of '{ident.spec.name}' has dimension {vector.shape[0]}, but the model expects "
            f"{cfg.embed_dim}."
        )
    return Face(np.array(vector, np.float32), ident.spec.name, source)


def _record(job: _Job, key: str, rel: Path, fingerprint: Mapping[str, Any], calls: Any) -> dict[str, Any]:
    return {
        "key": key,
        "path": rel.as_posix(),
        "setting": job.setting.name,
        "model": job.model,
        "identity": job.identity.spec.name,
        "group": job.identity.spec.group,
        "prompt_index": job.prompt_index,
        "prompt": job.prompt.text,
        "tag": job.prompt.tag,
        "seed": job.seed,
        "params": job.setting.params(),
        "conditioning": dict(fingerprint),
        "unet_calls_per_step": calls,
    }


def score_image(
    prompt_vec: np.ndarray | None,
    image_vec: np.ndarray | None,
    judge_faces: Mapping[str, np.ndarray | None],
    references: Mapping[str, Sequence[np.ndarray]],
    used: int | None,
) -> dict[str, Any]:
    """An image's scores (paper §4.1) from its embeddings.

    Args:
        prompt_vec, image_vec: CLIP text and image embeddings, or None when text alignment is off.
        judge_faces: [judge] -> embedding of the generation's largest face, or None (no face).
        references: [judge] -> embeddings of the identity's reference photos.
        used: the conditioning photo's index in references; None when a character conditions.

    Returns:
        {"text": float | None, "judges": {judge: {"face", "found", "overall", "paste", "face_other"}}}.
    """
    text = cosine(image_vec, prompt_vec) if prompt_vec is not None and image_vec is not None else None
    per_judge: dict[str, Any] = {}
    for name, vec in judge_faces.items():
        refs = references[name]
        face = face_alignment(vec, [refs[used]] if used is not None else refs)
        paste = paste_indicator(vec, refs, used) if used is not None else None
        per_judge[name] = {
            "face": face,
            "found": vec is not None,
            "overall": None if text is None else text + face,
            "paste": None if paste is None else paste[0],
            "face_other": None if paste is None else paste[1],
        }
    return {"text": text, "judges": per_judge}


def _score(
    image: Image.Image,
    job: _Job,
    judges: Sequence[Judge],
    ref_vecs: Mapping[str, Mapping[str, Sequence[np.ndarray]]],
    text_vecs: Mapping[str, np.ndarray],
    clip: Clip | None,
) -> dict[str, Any]:
    image_vec = clip.embed_images([image])[0] if clip is not None else None
    faces = {j.name: j.embed_faces([image])[0] for j in judges}
    refs = {j.name: ref_vecs[j.name][job.identity.spec.name] for j in judges}
    return score_image(text_vecs.get(job.prompt.text), image_vec, faces, refs, job.identity.used)


def _read_journal(path: Path) -> dict[str, dict[str, Any]]:
    """Records of results.jsonl by key (the last wins); a torn last line (a crash mid-write) is skipped."""
    if not path.is_file():
        return {}
    out: dict[str, dict[str, Any]] = {}
    with path.open(encoding="utf-8", errors="replace") as f:
        for line in f:
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(record, dict) and isinstance(record.get("key"), str):
                out[record["key"]] = record
    return out


def _end_torn_line(path: Path) -> None:
    """End a last line cut short by a crash, so the next record starts on a line of its own."""
    if path.is_file() and path.stat().st_size:
        with path.open("rb+") as f:
            f.seek(-1, os.SEEK_END)
            if f.read(1) != b"\n":
                f.write(b"\n")


def _append(log: Any, record: Mapping[str, Any]) -> None:
    log.write(json.dumps(record, sort_keys=True) + "\n")
    log.flush()
    os.fsync(log.fileno())


def _write_json(path: Path, data: Any) -> None:
    _write_text(path, json.dumps(data, indent=2, sort_keys=False) + "\n")


def _write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


# ============================================================================================== aggregates


def _scopes(record: Mapping[str, Any]) -> Iterator[str]:
    yield "all"
    yield f"tag:{record['tag']}"
    yield f"identity:{record['identity']}"
    yield f"group:{record.get('group') or record['identity']}"


def _metric(record: Mapping[str, Any], judge: str, metric: str) -> float | None:
    scores = record["scores"]
    if metric == "text":
        return scores.get("text")
    value = scores["judges"].get(judge, {}).get(metric)
    return float(value) if isinstance(value, bool) else value  # found: 1.0 / 0.0, its mean is the detection rate


def aggregate(records: Sequence[Mapping[str, Any]], spec: EvalSpec, judges: Sequence[str]) -> dict[str, Any]:
    """Mean ± std per setting, judge, scope and metric (paper Table 1).

    Returns:
        [setting][judge][scope][metric] -> {mean, std, n}; scopes: "all", "tag:T", "identity:I", "group:G";
        metrics: text, face, overall, paste, face_other, found (1 when the judge found a face: its mean is the
        detection rate).
    """
    out: dict[str, Any] = {}
    for setting in spec.settings:
        rows = [r for r in records if r["setting"] == setting.name]
        out[setting.name] = {}
        for judge in judges:
            scopes: dict[str, list[Mapping[str, Any]]] = {}
            for r in rows:
                for scope in _scopes(r):
                    scopes.setdefault(scope, []).append(r)
            out[setting.name][judge] = {
                scope: {m: summarize(_metric(r, judge, m) for r in members).to_json() for m in METRICS + EXTRA_METRICS}
                for scope, members in scopes.items()
            }
    return out


def best_of_n_table(records: Sequence[Mapping[str, Any]], spec: EvalSpec, judges: Sequence[str]) -> dict[str, Any]:
    """Best of N seeds against the average (paper Table 2).

    For each (setting, identity, prompt) the seed with the best overall score under the judge is kept (by face
    when text alignment is off); its text, face and overall scores are then averaged over the groups.

    Returns:
        [setting][judge][scope][metric] -> {mean, std, n (groups)}; scopes "all" and "tag:T".
    """
    out: dict[str, Any] = {}
    for setting in spec.settings:
        groups: dict[tuple[str, int], list[Mapping[str, Any]]] = {}
        for r in records:
            if r["setting"] == setting.name:
                groups.setdefault((r["identity"], r["prompt_index"]), []).append(r)
        out[setting.name] = {}
        for judge in judges:
            best = []
            for members in groups.values():
                candidates = [{m: _metric(r, judge, m) for m in METRICS} for r in members]
                best.append((members[0]["tag"], candidates[pick_best(candidates)]))
            scopes: dict[str, list[Mapping[str, float | None]]] = {"all": [b for _, b in best]}
            for tag, b in best:
                scopes.setdefault(f"tag:{tag}", []).append(b)
            out[setting.name][judge] = {
                scope: {m: summarize(b[m] for b in picks).to_json() for m in METRICS} for scope, picks in scopes.items()
            }
    return out


# ================================================================================================ report


def _stat(tree: Mapping[str, Any], *keys: str) -> Stat:
    node: Any = tree
    for k in keys:
        if not isinstance(node, Mapping) or k not in node:
            return Stat(None, None, 0)
        node = node[k]
    return Stat.from_json(node)


def _md_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def render_table_md(results: Mapping[str, Any]) -> str:
    """table.md from results.json's content: Table 1 (rows = settings; text / face / overall per tag and over
    all prompts, mean ± std) and Table 2 (best of N against the average) per judge, then the paste indicator
    and per-identity face scores."""
    spec = results["spec"]
    settings = [s["name"] for s in spec["settings"]]
    tags = [t for t in TAGS if any(p["tag"] == t for p in spec["prompts"])]
    n_seeds = len(spec["seeds"])
    agg, best = results["aggregates"], results["best_of_n"]
    counts = results.get("counts", {})
    lines = [f"# face0 eval: {spec['name']}", ""]
    lines.append(
        f"{counts.get('images', 0)} images: {len(spec['identities'])} identities x {len(spec['prompts'])} prompts x "
        f"{n_seeds} seeds x {len(settings)} settings. Text alignment: CLIP {results.get('clip') or 'off'}. "
        f"Scores are mean ± std over images (population std)."
    )
    lines.append("")
    for w in results.get("warnings", []):
        lines.append(f"> **WARNING:** {w}")
        lines.append("")
    for judge in results["judges"]:
        name = judge["name"]
        lines.append(f"## Table 1 — judge `{name}` ({judge['id']})")
        lines.append("")
        if judge.get("conditioning_encoder"):
            lines += [
                "> **WARNING:** this judge is the model's conditioning encoder; its face scores are inflated.",
                "",
            ]
        header = ["setting"]
        for scope in [*tags, "all"]:
            header += [f"{scope} text", f"{scope} face", f"{scope} overall"]
        rows = []
        for s in settings:
            row = [s]
            for scope in [*(f"tag:{t}" for t in tags), "all"]:
                row += [_stat(agg, s, name, scope, m).fmt() for m in METRICS]
            rows.append(row)
        lines += _md_table(header, rows) + [""]
        found = [(s, _stat(agg, s, name, "all", "found")) for s in settings]
        lines.append(
            "Faces found in the generations (no face scores 0): "
            + ", ".join(f"{s} {st.mean:.0%} of {st.n}" for s, st in found if st.mean is not None)
            + "."
        )
        lines.append("")

        lines.append(f"### Table 2 — best of N = {n_seeds} seeds against the average (judge `{name}`)")
        lines.append("")
        header = ["setting"]
        for m in METRICS:
            header += [f"{m} average", f"{m} best of {n_seeds}"]
        rows = []
        for s in settings:
            row = [s]
            for m in METRICS:
                row += [_stat(agg, s, name, "all", m).fmt(), _stat(best, s, name, "all", m).fmt()]
            rows.append(row)
        lines += _md_table(header, rows) + [""]

        if any(_stat(agg, s, name, "all", "paste").n for s in settings):
            lines.append(f"### Copy-paste indicator (judge `{name}`, identities with several photos)")
            lines.append("")
            lines.append(
                "paste = similarity to the conditioning photo − mean similarity to the identity's other photos; "
                "near 0: the person is reproduced, > 0: the photo is copied."
            )
            lines.append("")
            header = ["setting", "paste", "similarity to other photos", "images"]
            rows = [
                [
                    s,
                    _stat(agg, s, name, "all", "paste").fmt(),
                    _stat(agg, s, name, "all", "face_other").fmt(),
                    str(_stat(agg, s, name, "all", "paste").n),
                ]  # fmt: skip
                for s in settings
            ]
            lines += _md_table(header, rows) + [""]

        groups = list(dict.fromkeys(i.get("group") or i["name"] for i in spec["identities"]))
        grouped = any((i.get("group") or i["name"]) != i["name"] for i in spec["identities"])
        scopes = [f"group:{g}" for g in groups]
        lines.append(f"### Face alignment by {'group' if grouped else 'identity'} (judge `{name}`)")
        lines.append("")
        header = ["setting", *(sc.split(":", 1)[1] for sc in scopes)]
        rows = [[s, *(_stat(agg, s, name, sc, "face").fmt() for sc in scopes)] for s in settings]
        lines += _md_table(header, rows) + [""]
    return "\n".join(lines)


def _tile(image: Image.Image) -> Image.Image:
    from face0cli.faces.embedders import pad_resize

    return pad_resize(image.convert("RGB"), TILE)


def _write_contact_sheet(results: EvalResults, identities: Sequence[_Identity], finder: FaceFinder) -> dict[str, Any]:
    """contact_sheet.png: a row per (setting, identity) with its reference face, then a tile per (prompt, seed)
    labelled with text (T) and primary-judge face (F) scores."""
    spec = results.spec
    primary = results.judges[0]["name"]
    by_key = {(r["setting"], r["identity"], r["prompt_index"], r["seed"]): r for r in results.images}
    refs = {}
    for ident in identities:
        photo = ident.references[ident.used if ident.used is not None else 0]
        image = load_image(photo)
        face = finder.largest(image)
        refs[ident.spec.name] = _tile(finder.crop(image, face) if face is not None else image)
    tiles, labels, row_labels = [], [], []
    blank = Image.new("RGB", (TILE, TILE), (40, 40, 40))
    for setting in spec.settings:
        for member in spec.identities:
            row_labels.append(f"{setting.name} / {member.name}")
            tiles.append(refs[member.name])
            labels.append("reference")
            for pi in range(len(spec.prompts)):
                for seed in spec.seeds:
                    r = by_key.get((setting.name, member.name, pi, seed))
                    if r is None:
                        tiles.append(blank)
                        labels.append("missing")
                        continue
                    tiles.append(_tile(load_image(results.out_dir / r["path"])))
                    text = r["scores"].get("text")
                    face = r["scores"]["judges"][primary]["face"]
                    labels.append((f"T{text:.2f} " if text is not None else "") + f"F{face:.2f}")
    rows, cols = len(spec.settings) * len(spec.identities), 1 + len(spec.prompts) * len(spec.seeds)
    col_labels = ["reference"] + [f"p{pi} s{seed}" for pi in range(len(spec.prompts)) for seed in spec.seeds]
    sheet = make_grid(
        tiles,
        rows,
        cols,
        row_labels=row_labels,
        col_labels=col_labels,
        title=f"face0 eval {spec.name}: T = text alignment, F = face alignment ({primary})",
        tile=TILE,
        tile_labels=labels,
    )
    save_png(sheet, {"eval": spec.name, "rows": rows, "cols": cols, "judge": primary}, results.contact_sheet)
    return {"path": "contact_sheet.png", "rows": rows, "cols": cols, "tile": TILE,
            "row_labels": row_labels, "col_labels": col_labels}  # fmt: skip


# ================================================================================================ compare


def read_results(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a results.json written by run_eval (or the folder holding it).

    Raises:
        BadInput: missing, not JSON, or not a face0 eval result.
    """
    p = Path(path)
    if p.is_dir():
        p = p / "results.json"
    text = read_text_file(p)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise BadInput(f"{p}, line {e.lineno}: not valid JSON ({e.msg}).") from e
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise BadInput(f"{p} is not a results.json written by face0 eval.")
    if int(data.get("format_version", 0)) > FORMAT_VERSION:
        raise BadInput(f"{p} was written by a newer face0 eval (format {data['format_version']}); upgrade face0.")
    return data


def compare(a_json: str | os.PathLike[str], b_json: str | os.PathLike[str]) -> tuple[Table, dict[str, Any]]:
    """Two eval results side by side per setting, judge and metric, with B − A (paper Table 1 layout).

    Settings are paired by name; when the two runs share no name but each has exactly one setting, those two are
    paired. Scopes compared: over all prompts and per tag, plus best of N over all prompts.

    Args:
        a_json, b_json: results.json files (or their folders).

    Returns:
        (a rich Table, a dict {"a", "b", "rows": [{setting, judge, scope, metric, a, b, diff}], "only_in_a",
        "only_in_b", "warnings"}); a and b are {mean, std, n}, diff is b.mean - a.mean or None.
    """
    from rich.table import Table

    a, b = read_results(a_json), read_results(b_json)
    a_settings = [s["name"] for s in a["spec"]["settings"]]
    b_settings = [s["name"] for s in b["spec"]["settings"]]
    pairs = [(s, s) for s in a_settings if s in b_settings]
    if not pairs and len(a_settings) == len(b_settings) == 1:
        pairs = [(a_settings[0], b_settings[0])]
    paired_a, paired_b = {p[0] for p in pairs}, {p[1] for p in pairs}
    a_judges = {j["name"]: j for j in a["judges"]}
    b_judges = {j["name"]: j for j in b["judges"]}
    judges = [n for n in a_judges if n in b_judges]
    warnings = []
    if a.get("clip") != b.get("clip"):
        warnings.append(
            f"the runs measured text alignment with different CLIP models ({a.get('clip')} vs {b.get('clip')})."
        )
    for n in judges:
        if a_judges[n]["id"] != b_judges[n]["id"]:
            warnings.append(f"the judge '{n}' used different networks ({a_judges[n]['id']} vs {b_judges[n]['id']}).")
        if a_judges[n].get("conditioning_encoder") or b_judges[n].get("conditioning_encoder"):
            warnings.append(
                f"the judge '{n}' is a conditioning encoder in at least one run; its face scores are inflated."
            )
    for part in ("identities", "prompts", "seeds"):
        if a["spec"][part] != b["spec"][part]:
            warnings.append(f"the runs used different {part}, so differences mix the models with the protocol.")
    if not judges:
        warnings.append("the runs share no judge, so no face scores are compared.")
    tags = [t for t in TAGS if any(p["tag"] == t for p in a["spec"]["prompts"] + b["spec"]["prompts"])]
    rows: list[dict[str, Any]] = []
    for sa, sb in pairs:
        label = sa if sa == sb else f"{sa} / {sb}"
        for judge in judges:
            for scope in ["all", *(f"tag:{t}" for t in tags)]:
                for metric in METRICS:
                    rows.append(_compare_row(label, judge, scope, metric, a["aggregates"], b["aggregates"], sa, sb))
            for metric in METRICS:
                row = _compare_row(label, judge, "all", metric, a["best_of_n"], b["best_of_n"], sa, sb)
                rows.append(row | {"scope": f"best of {len(a['spec']['seeds'])}/{len(b['spec']['seeds'])}"})
            row = _compare_row(label, judge, "all", "paste", a["aggregates"], b["aggregates"], sa, sb)
            if row["a"]["n"] or row["b"]["n"]:
                rows.append(row)
    table = Table(title=f"face0 eval compare: A = {a_json}  B = {b_json}", title_justify="left")
    for col in ("setting", "judge", "scope", "metric", "A", "B", "B − A"):
        table.add_column(col, justify="right" if col in ("A", "B", "B − A") else "left")
    for r in rows:
        diff = r["diff"]
        shown = DASH if diff is None else f"[{'green' if diff > 0 else 'red' if diff < 0 else 'white'}]{diff:+.3f}[/]"
        table.add_row(r["setting"], r["judge"], r["scope"], r["metric"], Stat.from_json(r["a"]).fmt(),
                      Stat.from_json(r["b"]).fmt(), shown)  # fmt: skip
    result = {
        "a": str(a_json),
        "b": str(b_json),
        "rows": rows,
        "only_in_a": [s for s in a_settings if s not in paired_a],
        "only_in_b": [s for s in b_settings if s not in paired_b],
        "warnings": warnings,
    }
    return table, result


def _compare_row(
    label: str, judge: str, scope: str, metric: str, a: Mapping[str, Any], b: Mapping[str, Any], sa: str, sb: str
) -> dict[str, Any]:
    x, y = _stat(a, sa, judge, scope, metric), _stat(b, sb, judge, scope, metric)
    diff = None if x.mean is None or y.mean is None else y.mean - x.mean
    return {"setting": label, "judge": judge, "scope": scope, "metric": metric, "a": x.to_json(),
            "b": y.to_json(), "diff": diff}  # fmt: skip
