"""Characters made from photos or from other characters (paper §3.3): the library side of `embed` and `mix`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from face0cli.errors import BadInput, ParameterError
from face0cli.library.face_space import check_compatible, direction_edit, lerp, parse_weighted, weighted_mean
from face0cli.library.store import Character, FaceStore


@dataclass
class Embedded:
    """A character embedded from photos, with each photo's detection and its 160x160 crop."""

    character: Character
    photos: list[Any] = field(default_factory=list)  # faces.embedders results, one per photo


def embed_character(
    photos: Sequence[str | Path], name: str, embedder: Any = None, *, note: str = "", embedder_weights: Any = None
) -> Embedded:
    """Embed the largest face of each photo and make a character of their mean (paper §3.3); not yet saved.

    Args:
        photos: one or more photos of the same person.
        embedder: an Embedder; default the VGGFace2 InceptionResnetV1 (FacenetEmbedder from embedder_weights).
    """
    from face0cli.faces.embedders import FacenetEmbedder, embed_photos, mean_embedding

    if not photos:
        raise BadInput("give at least one photo.")
    embedder = embedder if embedder is not None else FacenetEmbedder(weights=embedder_weights)
    results = embed_photos(embedder, [Path(p) for p in photos])
    vector = mean_embedding(results)
    provenance = {"sources": [r.to_json() for r in results], "embedder": embedder.id, "reduce": "mean"}
    return Embedded(Character.new(name, vector, embedder.id, "photo", provenance, note=note), list(results))


@dataclass
class Mix:
    """A new character's vector from others, how it was made, and the characters it was made from."""

    vector: np.ndarray  # (D,)
    provenance: dict[str, Any]
    parts: list[Character]

    @property
    def op(self) -> str:
        return str(self.provenance["op"])

    def strip_ends(self) -> tuple[np.ndarray, np.ndarray]:
        """Where an interpolation strip starts and ends: A to B for lerp, else the base (first parent) to the
        result."""
        start = self.parts[0].vector
        return start, (self.parts[1].vector if self.op == "lerp" else self.vector)

    def character(self, name: str, note: str = "") -> Character:
        return Character.new(name, self.vector, self.parts[0].embedder_id, "mix", self.provenance, note=note)


class _Lookup:
    """get() in the user's store, then in a model's example characters."""

    def __init__(self, store: FaceStore, examples: FaceStore) -> None:
        self.store, self.examples = store, examples

    def get(self, name: str) -> Character:
        fallback = not in_store(self.store, name) and in_store(self.examples, name)
        return (self.examples if fallback else self.store).get(name)


def in_store(store: Any, name: str) -> bool:
    """Whether NAME is in STORE; a name that breaks the naming rule (or no store) is simply not in it (get() then
    says why)."""
    try:
        return name in store
    except Exception:
        return False


def with_examples(store: FaceStore, examples: FaceStore | None) -> Any:
    """Something with get(NAME): the store's character, else the example of that name (EXAMPLES may be None)."""
    return store if examples is None else _Lookup(store, examples)


def unshadowed_examples(
    store: FaceStore,
    examples: FaceStore | None,
    tag: str | None = None,
    kind: str | None = None,
    grep: str | None = None,
) -> list[Character]:
    """The examples (FaceStore.find filters applied) whose names STORE lacks: what a name finds after the library
    (EXAMPLES may be None: none)."""
    if examples is None:
        return []
    mine = set(store.names())
    return [c for c in examples.find(tag=tag, kind=kind, grep=grep) if c.name not in mine]


def mix_characters(
    store: FaceStore,
    specs: Sequence[str] = (),
    *,
    t: float | None = None,
    base: str | None = None,
    towards: str | None = None,
    origin: str | None = None,
    amount: float = 0.5,
    extrapolate: bool = False,
    examples: FaceStore | None = None,
) -> Mix:
    """One of the three mixes of paper §3.3, chosen by the arguments given:

    - a direction edit (BASE and TOWARDS): BASE + AMOUNT * (TOWARDS - (ORIGIN or BASE));
    - an interpolation (T and two names in SPECS): (1-T)*A + T*B, T in [0, 1] unless EXTRAPOLATE;
    - else a weighted mean of SPECS ('alice=0.7', 'bob=0.3'; a bare name weighs 1).

    EXAMPLES (a model's example characters, or None) is where a name the store does not have is looked up.

    Raises:
        BadInput: a wrong combination of arguments. ParameterError: a non-finite amount or t, or t outside
        [0, 1] without EXTRAPOLATE. UnknownCharacter, EmbedderMismatch: from the store and the vectors.
    """
    specs = list(specs)
    store = with_examples(store, examples)
    if base is not None or towards is not None:
        if base is None or towards is None:
            raise BadInput("a direction edit needs both --base and --towards.")
        if specs:
            raise BadInput("a direction edit takes no positional characters; use --base/--towards/--origin.")
        if not np.isfinite(amount):
            raise ParameterError(f"--amount must be a finite number, got {amount}.")
        parts = [store.get(base), store.get(towards)] + ([store.get(origin)] if origin else [])
        check_compatible(parts)
        vector = direction_edit(parts[0].vector, parts[1].vector, amount, parts[2].vector if origin else None)
        provenance: dict[str, Any] = {
            "op": "direction",
            "base": base,
            "towards": towards,
            "origin": origin,
            "amount": amount,
        }
        return Mix(vector, provenance, parts)
    if t is not None:
        if not np.isfinite(t):
            raise ParameterError(f"--t must be a finite number, got {t}.")
        if not 0.0 <= t <= 1.0 and not extrapolate:
            raise ParameterError(
                f"--t must be between 0 and 1 to interpolate, got {t}; pass --extrapolate to go beyond the two faces."
            )
        pairs = parse_weighted(specs)
        if len(pairs) != 2 or any(w != 1.0 for _, w in pairs):
            raise BadInput("interpolation with --t takes exactly two plain character names.")
        parts = [store.get(n) for n, _ in pairs]
        check_compatible(parts)
        return Mix(
            lerp(parts[0].vector, parts[1].vector, t), {"op": "lerp", "parents": [n for n, _ in pairs], "t": t}, parts
        )
    pairs = parse_weighted(specs)
    if len(pairs) < 2:
        raise BadInput("mix needs at least two characters (e.g. alice=0.7 bob=0.3), --t, or --base/--towards.")
    parts = [store.get(n) for n, _ in pairs]
    check_compatible(parts)
    vector = weighted_mean(np.stack([p.vector for p in parts]), np.array([w for _, w in pairs]))
    provenance = {"op": "weighted_mean", "parents": [n for n, _ in pairs], "weights": [w for _, w in pairs]}
    return Mix(vector, provenance, parts)
