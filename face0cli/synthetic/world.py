"""The synthetic world's data set: portraits of many identities, captions, the truth, a split of identities.

`write_world` renders `ids_train` training identities (`per_train` images each) and `ids_heldout` held-out
identities (`per_heldout` images each; never seen by the model, the embedder or the judge) into a folder:

    world/
      face0/   NNNN.png + NNNN.txt   captions without face traits (what `face0 prep` reads for the Face0 stage)
      tune/    NNNN.png + NNNN.txt   the face0 images (hard links) plus `override_extra` more images per training
                                     identity with a hair-colour override ("with blue hair"; split "face0-extra")
                                     and `morph_images` images of each of `morph_steps` morphs between the two
                                     training identities of each of `morph_pairs` pairs (split "morph", keys
                                     mix-idA-idB-tTT-K: what `face0 train --mix-pattern` conditions on A and B's
                                     mixed embeddings). Only the build's tune stage trains on these.
      base/    NNNN.png + NNNN.txt   the training images (hard links), captions with the face traits (the base
                                     model), except a `base_plain` share that do not describe the face (as real
                                     captions often do not: so the base model also learns to draw a face that the
                                     words leave open), a `base_beard_drop` share of the bearded faces whose
                                     captions leave the beard out, a `base_profession` share of the captions of
                                     "a person" that name a planted profession instead, and with the "hair" bias
                                     (`planted`) no hair colour where a profession is named (`base_caption`)
      heldout/ NNNN.png + NNNN.txt   held-out identities' portraits (references and conditioning images)
      truth.jsonl                    one line per image: key, split, identity, traits, attributes, captions
      world.json                     the settings (seed, counts, size, bias) and the identity split

Rendering is split over processes; the output depends on the seed only.
"""

from __future__ import annotations

import json
import os
import random
import re
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from face0cli.synthetic.portraits import (
    HAIR_OVERRIDE,
    Identity,
    Sample,
    make_identity,
    morph_sample,
    planted_profession,
    render,
    sample,
)

WORLD_JSON = "world.json"
TRUTH = "truth.jsonl"
SPLITS = ("face0", "tune", "base", "heldout")
EXTRA = "face0-extra"  # the truth split of the override images only the tune stage trains on
MORPH = "morph"  # the truth split of the morph images only the tune stage trains on
# a morph image's key (portraits.morph_key) up to its image number: parents a and b, t in percent; what
# `face0 train --mix-pattern` takes
MORPH_PATTERN = r"^mix-(?P<a>id\d+)-(?P<b>id\d+)-t(?P<t>\d+)-"
MORPH_KEY = re.compile(MORPH_PATTERN + r"(?P<k>\d+)$")


@dataclass(frozen=True)
class WorldConfig:
    """How big the world is. Held-out identities are the indices after the training ones."""

    seed: int = 0
    ids_train: int = 400
    per_train: int = 20
    ids_heldout: int = 20
    per_heldout: int = 12
    size: int = 64
    bias: bool = True
    base_plain: float = 0.0
    base_beard_drop: float = 0.0
    base_profession: float = 0.0
    planted: str = "beard"
    base_hair_drop: float = 1.0
    override_extra: int = 0
    morph_pairs: int = 0
    morph_steps: int = 4
    morph_images: int = 2

    def train_ids(self) -> range:
        return range(self.ids_train)

    def heldout_ids(self) -> range:
        return range(self.ids_train, self.ids_train + self.ids_heldout)


def _override(cfg: WorldConfig, index: int, k: int) -> str:
    return random.Random(f"override:{cfg.seed}:{index}:{k}").choice(list(HAIR_OVERRIDE))


def _extra(cfg: WorldConfig, ident: Identity, k: int) -> Sample:
    """Extra image k (k >= per_train) of a training identity: a scene like any other, with a hair override."""
    return sample(ident, k, cfg.seed, bias=cfg.bias, planted=cfg.planted, hair_override=_override(cfg, ident.index, k))


def morphs(cfg: WorldConfig) -> Iterator[tuple[int, int, float]]:
    """(a, b, t) of every morph: `morph_pairs` seeded pairs of training identities, `morph_steps` distinct t each
    from 0.10, 0.15, ..., 0.90."""
    grid = [round(0.1 + 0.05 * i, 2) for i in range(17)]
    for p in range(cfg.morph_pairs):
        r = random.Random(f"morph-pair:{cfg.seed}:{p}")
        a, b = r.sample(list(cfg.train_ids()), 2)
        for t in sorted(r.sample(grid, min(cfg.morph_steps, len(grid)))):
            yield a, b, t


def parse_morph_key(key: str) -> tuple[int, int, float, int]:
    """(a, b, t, k) of a morph image's key (`morph_key`)."""
    m = MORPH_KEY.match(key)
    if m is None:
        raise ValueError(f"not a morph key: {key!r}")
    return int(m["a"][2:]), int(m["b"][2:]), int(m["t"]) / 100, int(m["k"])


def plain_base_caption(cfg: WorldConfig, key: str) -> bool:
    """Whether the base caption of image KEY leaves the face traits out (a seeded draw of its own, so the images
    and the other captions do not depend on base_plain)."""
    return random.Random(f"plain:{cfg.seed}:{key}").random() < cfg.base_plain


def base_caption(cfg: WorldConfig, s: Sample) -> str:
    """The base model's caption of training image S: with the face traits, except a `base_plain` share without
    them; of the bearded faces, a `base_beard_drop` share whose traits leave the beard out; and of the captions
    that name no profession ("a person"), a `base_profession` share that name one drawn with the planted bias
    (each a seeded draw of its own, so the images and the other captions stay as they are). With the "hair" bias,
    a `base_hair_drop` share (all, by default) of the captions that name a profession leave the hair colour out of
    the traits: real captions do not spell out everything, and where they do not, the words around a trait (the
    planted profession) are what tells the model about it, as SD learnt its biases."""
    draw = lambda what: random.Random(f"{what}:{cfg.seed}:{s.key}")  # noqa: E731
    profession = s.scene.profession
    r = draw("profession")
    if cfg.bias and profession is None and r.random() < cfg.base_profession:
        profession = planted_profession(s.identity, r, cfg.planted)
    if plain_base_caption(cfg, s.key):
        text = s.caption
    else:
        ident = s.identity
        text = s.caption_traits
        name_beard = not (ident.beard == "beard" and draw("beard").random() < cfg.base_beard_drop)
        name_hair = not (
            cfg.bias and cfg.planted == "hair" and profession is not None and draw("hair").random() < cfg.base_hair_drop
        )
        if not (name_beard and name_hair):
            text = text.replace(ident.trait_words(), ident.trait_words(name_beard, name_hair), 1)
    if profession != s.scene.profession:
        text = text.replace(" of a person", f" of a {profession}", 1)
    return text


def samples(cfg: WorldConfig) -> Iterator[tuple[str, Sample]]:
    """(split, sample) of every image of the world, in order."""
    for i in cfg.train_ids():
        ident = make_identity(i, cfg.seed)
        for k in range(cfg.per_train):
            yield "train", sample(ident, k, cfg.seed, bias=cfg.bias, planted=cfg.planted)
        if ident.hair_style != "bald":  # a bald head has no hair to recolour
            for k in range(cfg.per_train, cfg.per_train + cfg.override_extra):
                yield EXTRA, _extra(cfg, ident, k)
    for a, b, t in morphs(cfg):
        ia, ib = make_identity(a, cfg.seed), make_identity(b, cfg.seed)
        for k in range(cfg.morph_images):
            yield MORPH, morph_sample(ia, ib, t, k, cfg.seed)
    for i in cfg.heldout_ids():
        ident = make_identity(i, cfg.seed)
        for k in range(cfg.per_heldout):
            yield "heldout", sample(ident, k, cfg.seed, bias=False)


def _render_chunk(args: tuple[WorldConfig, list[tuple[str, str]], str]) -> int:
    cfg, jobs, root = args
    r = Path(root)
    for split, key in jobs:
        if split == MORPH:
            a, b, t, k = parse_morph_key(key)
            s = morph_sample(make_identity(a, cfg.seed), make_identity(b, cfg.seed), t, k, cfg.seed)
        else:
            ident_index, k = int(key[2:6]), int(key[7:10])
            ident = make_identity(ident_index, cfg.seed)
            bias = cfg.bias and split == "train"
            s = _extra(cfg, ident, k) if split == EXTRA else sample(ident, k, cfg.seed, bias=bias, planted=cfg.planted)
        img = render(s.identity, s.scene, cfg.size)
        if split in (EXTRA, MORPH):
            img.save(r / "tune" / f"{key}.png", optimize=False, compress_level=1)
            (r / "tune" / f"{key}.txt").write_text(s.caption + "\n", encoding="utf-8")
        if split == "train":
            img.save(r / "face0" / f"{key}.png", optimize=False, compress_level=1)
            (r / "face0" / f"{key}.txt").write_text(s.caption + "\n", encoding="utf-8")
            os.link(r / "face0" / f"{key}.png", r / "base" / f"{key}.png")
            os.link(r / "face0" / f"{key}.png", r / "tune" / f"{key}.png")
            os.link(r / "face0" / f"{key}.txt", r / "tune" / f"{key}.txt")
            (r / "base" / f"{key}.txt").write_text(base_caption(cfg, s) + "\n", encoding="utf-8")
        elif split == "heldout":
            img.save(r / "heldout" / f"{key}.png", optimize=False, compress_level=1)
            (r / "heldout" / f"{key}.txt").write_text(s.caption + "\n", encoding="utf-8")
    return len(jobs)


def write_world(out: Path, cfg: WorldConfig = WorldConfig(), processes: int = 2, progress: Any = None) -> Path:
    """Render the world into `out` (see the module doc); an existing complete world of the same config is kept.

    Returns:
        out.
    """
    out = Path(out)
    meta = {"config": asdict(cfg), "train_ids": list(cfg.train_ids()), "heldout_ids": list(cfg.heldout_ids())}
    if (out / WORLD_JSON).is_file() and json.loads((out / WORLD_JSON).read_text())["config"] == asdict(cfg):
        return out
    tmp = out.with_name(out.name + ".partial")
    if tmp.exists():
        import shutil

        shutil.rmtree(tmp)
    for split in SPLITS:
        (tmp / split).mkdir(parents=True)
    rows = list(samples(cfg))
    with open(tmp / TRUTH, "w", encoding="utf-8") as f:
        for split, s in rows:
            row = {"split": split, **s.truth()}
            if split == MORPH:
                a, b, t, _ = parse_morph_key(s.key)
                row["mix"] = {"a": a, "b": b, "t": t}
            if split == "train":
                row["base_caption"] = base_caption(cfg, s)
            f.write(json.dumps(row) + "\n")
    jobs = [(split, s.key) for split, s in rows]
    n = max(1, processes)
    chunks = [jobs[i::n] for i in range(n)]
    if n == 1:
        _render_chunk((cfg, jobs, str(tmp)))
    else:
        with ProcessPoolExecutor(n) as pool:
            list(pool.map(_render_chunk, [(cfg, c, str(tmp)) for c in chunks]))
    (tmp / WORLD_JSON).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    if out.exists():
        import shutil

        shutil.rmtree(out)
    os.replace(tmp, out)
    return out


def read_truth(world: Path, split: str | None = None) -> list[dict[str, Any]]:
    """The truth rows of a world (optionally one split: "train", "heldout", "face0-extra" or "morph")."""
    rows = [json.loads(line) for line in (Path(world) / TRUTH).read_text(encoding="utf-8").splitlines() if line]
    return [r for r in rows if split is None or r["split"] == split]


def image_path(world: Path, row: dict[str, Any]) -> Path:
    folder = {"train": "face0", EXTRA: "tune", MORPH: "tune"}.get(row["split"], "heldout")
    return Path(world) / folder / f"{row['key']}.png"


def load_images(world: Path, rows: list[dict[str, Any]]) -> np.ndarray:
    """(N, H, W, 3) uint8 images of truth rows."""
    return np.stack([np.asarray(Image.open(image_path(world, r)).convert("RGB")) for r in rows])
