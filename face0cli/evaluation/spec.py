"""The evaluation spec (Face0 §4.1-4.3): identities, tagged prompts, seeds, sampler settings and judges,
parsed from YAML or JSON with every error pointing at its line."""

from __future__ import annotations

import dataclasses
import difflib
import json
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from face0cli.config import SAMPLE_DEFAULTS, SampleConfig
from face0cli.errors import BadInput, ParameterError
from face0cli.evaluation.judges import (
    DEFAULT_CLIP,
    check_judge_name,
)
from face0cli.generation.generate import read_text_file
from face0cli.library.names import NAME_SHAPE, is_valid_name

FORMAT = "face0-eval"
FORMAT_VERSION = 1
KEY_VERSION = 1
SAMPLE_KEYS = frozenset(f.name for f in dataclasses.fields(SampleConfig))
TAGS: tuple[str, ...] = ("photo-real", "artistic")
"""Prompt tags (paper §4.1 reports photo-realistic and artistic prompts separately)."""
METRICS: tuple[str, ...] = ("text", "face", "overall")
EXTRA_METRICS: tuple[str, ...] = ("paste", "face_other", "found", "identified")
SETTING_KEYS: tuple[str, ...] = ("w", "c", "a", "variety", "steps", "scheduler", "negative", "size", "model")
TOP_KEYS: tuple[str, ...] = ("name", "model", "identities", "prompts", "seeds", "settings", "judges", "clip")
IDENTITY_KEYS: tuple[str, ...] = ("photos", "character", "condition", "group")
TILE = 128
DASH = "—"


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
        sample: the sampler's settings, checked by SampleConfig (the paper's defaults where the spec says none).
        overrides: per prompt tag, parameters that replace these for that tag's prompts (e.g. a smaller c for
            artistic prompts, paper §3.4), as (tag, ((key, value), ...)) pairs.
        model: a model directory or hub id for this setting; None: the run's model.
        steps_from_model: the spec gave no steps, so the run samples at the steps the model was measured at
            (its face0.json `steps`, as `face0 generate` does) and at sample.steps (50) for a model without them.
    """

    name: str
    sample: SampleConfig = SAMPLE_DEFAULTS
    negative: str = ""
    model: str | None = None
    overrides: tuple[tuple[str, tuple[tuple[str, Any], ...]], ...] = ()
    steps_from_model: bool = False

    def for_tag(self, tag: str) -> SettingSpec:
        """These settings with the overrides of prompts tagged TAG applied (and no overrides left)."""
        changes = dict(dict(self.overrides).get(tag, ()))
        sample = {k: changes.pop(k) for k in list(changes) if k in SAMPLE_KEYS}
        changes["steps_from_model"] = self.steps_from_model and "steps" not in sample
        return dataclasses.replace(self, overrides=(), sample=dataclasses.replace(self.sample, **sample), **changes)

    def with_model_steps(self, steps: int | None) -> SettingSpec:
        """These settings at a model's own sampling steps (face0.json `steps`) when they follow the model's."""
        if not self.steps_from_model or not steps:
            return self
        return dataclasses.replace(self, sample=dataclasses.replace(self.sample, steps=int(steps)))

    def params(self) -> dict[str, Any]:
        """The sampler parameters, flat (w, c, a, variety, steps, scheduler, negative, height, width)."""
        s = self.sample
        return {
            "w": s.w,
            "c": s.c,
            "a": s.a,
            "variety": s.variety,
            "steps": s.steps,
            "scheduler": s.scheduler,
            "negative": self.negative,
            "height": s.height,
            "width": s.width,
        }

    def to_json(self) -> dict[str, Any]:
        out = {"name": self.name, **self.params(), "model": self.model}
        if self.steps_from_model:
            out["steps_from_model"] = True
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
    settings: tuple[SettingSpec, ...] = (SettingSpec("default", steps_from_model=True),)
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
        judges=_parse_judges(src, base, data.get("judges")),
        clip=local_or_id(base, clip) if clip else None,
        model=local_or_id(base, model) if model else None,
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


def local_or_id(base: Path, name: str) -> str:
    """A path relative to the spec's folder if it exists there, else the text as given (a hub id or a path)."""
    candidate = (base / name).expanduser()
    if not Path(name).is_absolute() and candidate.exists():
        return str(candidate.resolve())
    path = Path(name).expanduser()
    return str(path.resolve()) if path.exists() else name


def _check_name(src: _Source, path: _Path, name: Any, what: str) -> str:
    if not is_valid_name(name):
        raise src.error(path, f"the {what} name {name!r} breaks the rule: {NAME_SHAPE}")
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
        return (SettingSpec("default", steps_from_model=True),)
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
        sample = {k: fields.pop(k) for k in list(fields) if k in SAMPLE_KEYS}
        try:
            sample_config = SampleConfig(**sample)
        except ParameterError as e:  # each field was checked alone; this is a combination SampleConfig refuses
            raise src.error(here, str(e).rstrip(".")) from None
        from_model = "steps" not in sample
        out.append(
            SettingSpec(
                name=name, sample=sample_config, overrides=tuple(overrides), steps_from_model=from_model, **fields
            )
        )
    return tuple(out)


def _setting_fields(src: _Source, base: Path, path: _Path, data: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        here = (*path, key)
        if key in ("w", "c", "a", "variety", "steps", "scheduler"):
            try:
                SampleConfig(**{key: value})  # the sampler's own checks, pointed at the spec's line
            except ParameterError as e:
                raise src.error(here, str(e).rstrip(".")) from None
            out[key] = float(value) if key in ("w", "c", "a", "variety") else int(value) if key == "steps" else value
        elif key == "negative":
            if not isinstance(value, str):
                raise src.error(here, f"negative must be a text, got {value!r}")
            out[key] = value
        elif key == "size":
            out["height"], out["width"] = _parse_size(src, here, value)
        elif key == "model":
            model = _optional_str(src, here, value)
            out[key] = local_or_id(base, model) if model else None
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


JUDGE_PATH_OPTIONS = ("weights", "model")
"""Judge options that name a file, folder or hub id: relative paths are relative to the spec's folder, as photos."""


def _parse_judges(src: _Source, base: Path, data: Any) -> tuple[JudgeSpec, ...]:
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
        for key in JUDGE_PATH_OPTIONS:
            if isinstance(options.get(key), str) and options[key].strip():
                options[key] = local_or_id(base, options[key].strip())
        out.append(JudgeSpec(name, tuple(sorted(options.items()))))
    return tuple(out)
