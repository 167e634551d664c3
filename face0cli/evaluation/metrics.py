"""Scores of the paper's evaluation (Face0 §4.1, Table 2): text, face and overall alignment, the paste
indicator, statistics, and the aggregates per setting, judge and scope."""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from face0cli.errors import BadInput, EmbedderMismatch
from face0cli.evaluation.spec import DASH, EXTRA_METRICS, METRICS, EvalSpec


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


def identified(
    generated: np.ndarray | None,
    own: Sequence[np.ndarray],
    rivals: Mapping[str, Sequence[np.ndarray]],
    used: int | None,
) -> bool | None:
    """Identification: whether the generation's face is nearer its own identity than every other identity of the
    run. An identity's nearness is the mean cosine to its reference photos; the own identity's leaves out the
    conditioning photo when it has others, so a copy of that photo is not what counts.

    Args:
        generated: (D,) judge embedding of the generation's face, or None (no face: undefined).
        own: the (D,) judge embeddings of the identity's reference photos.
        rivals: [other identity] -> the judge embeddings of its reference photos.
        used: index of the conditioning photo in OWN; None when a character conditions.

    Returns:
        True / False, or None when there is no face or no other identity to tell it from.
    """
    if generated is None or not rivals:
        return None
    mine = [r for i, r in enumerate(own) if i != used] if used is not None and len(own) > 1 else list(own)
    near = face_alignment(generated, mine)
    return bool(all(near > face_alignment(generated, refs) for refs in rivals.values()))


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


def score_image(
    prompt_vec: np.ndarray | None,
    image_vec: np.ndarray | None,
    judge_faces: Mapping[str, np.ndarray | None],
    references: Mapping[str, Sequence[np.ndarray]],
    used: int | None,
    rivals: Mapping[str, Mapping[str, Sequence[np.ndarray]]] | None = None,
) -> dict[str, Any]:
    """An image's scores (paper §4.1) from its embeddings.

    Args:
        prompt_vec, image_vec: CLIP text and image embeddings, or None when text alignment is off.
        judge_faces: [judge] -> embedding of the generation's largest face, or None (no face).
        references: [judge] -> embeddings of the identity's reference photos.
        used: the conditioning photo's index in references; None when a character conditions.
        rivals: [judge][other identity] -> embeddings of its reference photos, for `identified` (None: no others).

    Returns:
        {"text": float | None,
         "judges": {judge: {"face", "found", "overall", "paste", "face_other", "identified"}}}.
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
            "identified": identified(vec, refs, (rivals or {}).get(name, {}), used),
        }
    return {"text": text, "judges": per_judge}


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
    return float(value) if isinstance(value, bool) else value  # found, identified: 1.0 / 0.0, their means are rates


def aggregate(records: Sequence[Mapping[str, Any]], spec: EvalSpec, judges: Sequence[str]) -> dict[str, Any]:
    """Mean ± std per setting, judge, scope and metric (paper Table 1).

    Returns:
        [setting][judge][scope][metric] -> {mean, std, n}; scopes: "all", "tag:T", "identity:I", "group:G";
        metrics: text, face, overall, paste, face_other, found (1 when the judge found a face: its mean is the
        detection rate), identified (1 when the judge's nearest identity of the run is the right one: its mean is
        the identification rate; chance is one over the number of identities).
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
