"""The build of the embedded default model, from nothing: `face0 synth build --out DIR`.

Stages, each resumable (a finished stage leaves DIR/stages/NAME.json with its figures and wall time and is
skipped next time; the two training stages resume from their last checkpoint):

1. world     procedural portraits of training and held-out identities, captions, truth (synthetic.world):
             base captions partly without the face traits (base_plain) or the beard (base_beard_drop), or with a
             planted profession (base_profession); the planted bias (planted: professions with a hair colour, whose
             base captions then leave the colour out, or with beards); hair-override images and morphs between
             training identities for the tune stage only (override_extra, morph_pairs)
2. detect    how often the real MTCNN finds the portraits' faces (decides the embedder's framing)
3. embedder  the conditioning embedder (synthetic.nets.FaceNet, CosFace) on training identities
4. judge     the independent judge (synthetic.nets.JudgeNet: other architecture and seed, attribute heads)
5. vae       the VAE on the portraits; then an untrained SD-shaped base (synthetic.model.init_base)
6. prep      `face0 prep` of the three sets (captions with face traits; without; without + the override
             images), with VAE latents
7. base      `face0 train` of the base model: UNet + text encoder from scratch on captions that spell out the
             face traits, face tokens always zero (what SD is to Face0); then which planted professions'
             words it learnt: the planted trait's rate in its text-only images (scorecard.planted_words)
8. face0     `face0 train` from that base as from SD: captions without traits, UNet + projector, text
             encoder and VAE frozen, face dropout 20%, each image conditioned on another image of the same
             person (--identity-pattern), a full-covariance GMM of faces
9. tune      `face0 train` from that Face0 model with the text encoder trained too, on the Face0 images plus
             the hair-override ones; a dyed-hair image never conditions another (--reference-exclude). Our
             small base never learnt to bind a colour word to the hair ("with pink hair" drew blue hair, its
             text encoder's "hair" token barely tells blue from green), which SD can do: this stage teaches it
             (trait override, paper Fig. 4) and sharpens the random characters. Each morph image is
             conditioned on its two parents' embeddings mixed at its t (--mix-pattern), so that `mix --t`
             draws a face between two people rather than switching from one to the other (paper §3.3)
10. package  the model directory (fp16 weights, the embedder and judge beside it) -> DIR/default-model
11. characters  named example characters from held-out identities (portraits + a library file)
12. scorecard   the quality figures (synthetic.scorecard) -> DIR/scorecard.json, scorecard.md and a grid

Everything is seeded; the training stages run the real CLI in a subprocess.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from face0cli.console import console
from face0cli.locks import child_env
from face0cli.synthetic import STAGES

# captions of the images that the tune stage never conditions on (their hair is not the person's)
DYED_HAIR = r"with \w+ hair"


@dataclass(frozen=True)
class BuildConfig:
    """The build's sizes and training budgets (CPU minutes on 2 cores in the README)."""

    seed: int = 0
    train_seed: int | None = None  # the base, Face0 and tune stages' seed (None: seed); the world and nets keep seed
    ids_train: int = 400
    per_train: int = 20
    ids_heldout: int = 20
    per_heldout: int = 12
    base_plain: float = 0.0
    base_beard_drop: float = 0.0
    base_profession: float = 0.0
    planted: str = "beard"
    base_hair_drop: float = 1.0
    override_extra: int = 5
    morph_pairs: int = 300
    embedder_steps: int = 400
    judge_steps: int = 500
    vae_steps: int = 3000
    base_steps: int = 2400
    base_lr: float = 1e-3
    face0_steps: int = 2400
    face0_lr: float = 1e-4
    face0_face_drop: float = 0.2
    projector_lr: float = 1e-3
    tune_steps: int = 1500
    tune_lr: float = 1e-4
    batch_size: int = 32
    checkpoint_every: int = 100
    validate_every: int = 250

    @property
    def toy(self) -> bool:
        """A world this small (quick(), the tests) is scored with a few images and sampling steps."""
        return self.ids_train < 50

    @classmethod
    def quick(cls) -> BuildConfig:
        """A few steps of everything (tests and a smoke run): the same code, a tiny world."""
        return cls(
            ids_train=12, per_train=4, ids_heldout=4, per_heldout=4, embedder_steps=4, judge_steps=4, vae_steps=4,
            base_steps=2, face0_steps=2, tune_steps=2, batch_size=4, checkpoint_every=1, validate_every=0,
            morph_pairs=3,
        )  # fmt: skip


def _stage_file(out: Path, name: str) -> Path:
    return out / "stages" / f"{name}.json"


def stage_done(out: Path, name: str) -> dict[str, Any] | None:
    f = _stage_file(out, name)
    return json.loads(f.read_text(encoding="utf-8")) if f.is_file() else None


def _finish(out: Path, name: str, figures: dict[str, Any], t0: float) -> dict[str, Any]:
    f = _stage_file(out, name)
    f.parent.mkdir(parents=True, exist_ok=True)
    record = {**figures, "seconds": round(time.perf_counter() - t0, 1)}
    tmp = f.with_suffix(".tmp")
    tmp.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, f)
    return record


def _world_cfg(cfg: BuildConfig) -> Any:
    from face0cli.synthetic.world import WorldConfig

    return WorldConfig(
        cfg.seed, cfg.ids_train, cfg.per_train, cfg.ids_heldout, cfg.per_heldout, base_plain=cfg.base_plain,
        base_beard_drop=cfg.base_beard_drop, base_profession=cfg.base_profession, override_extra=cfg.override_extra,
        morph_pairs=cfg.morph_pairs, planted=cfg.planted, base_hair_drop=cfg.base_hair_drop,
    )  # fmt: skip


def _log(msg: str) -> None:
    console.print(msg, highlight=False)


def _face0(args: list[str], log: Path) -> None:
    """Run a face0 command in a subprocess (the real CLI), its output appended to LOG."""
    cmd = [sys.executable, "-m", "face0cli", *args]
    _log("$ face0 " + " ".join(args))
    with open(log, "a", encoding="utf-8") as f:
        f.write("$ face0 " + " ".join(args) + "\n")
        f.flush()
        rc = subprocess.call(cmd, stdout=f, stderr=subprocess.STDOUT, env=child_env())
    if rc != 0:
        from face0cli.errors import Face0Error

        raise Face0Error(f"face0 {args[0]} failed (exit {rc}); see {log}.")


def _heldout_split(rows: list[dict[str, Any]]) -> tuple[np.ndarray, np.ndarray]:
    """Reference and query masks over held-out rows: the first third of each identity's images are references."""
    k = np.array([int(r["key"][-3:]) for r in rows])
    per = max(k) + 1
    refs = k < max(1, per // 3)
    return refs, ~refs


# ------------------------------------------------------------------------------------------------ stages


def st_world(out: Path, cfg: BuildConfig) -> dict[str, Any]:
    from face0cli.synthetic.portraits import planted_hair
    from face0cli.synthetic.world import EXTRA, MORPH, read_truth, write_world

    world = write_world(out / "world", _world_cfg(cfg))
    rows = read_truth(world)
    base = [r for r in rows if r["split"] == "train"]
    return {
        "train_images": len(base),
        "face0_extra_images": sum(r["split"] == EXTRA for r in rows),
        "morph_images": sum(r["split"] == MORPH for r in rows),
        "heldout_images": sum(r["split"] == "heldout" for r in rows),
        "base_captions_without_traits": float(np.mean([r["base_caption"] == r["caption"] for r in base])),
        "base_captions_naming_a_profession": float(np.mean([" of a person" not in r["base_caption"] for r in base])),
        "bearded_base_captions_without_beard": float(
            np.mean([", a beard" not in r["base_caption"] for r in base if r["traits"]["beard"] == "beard"] or 0.0)
        ),
        "planted": cfg.planted,
        "base_captions_without_hair_colour": float(
            np.mean(
                [f" {hair} hair" not in r["base_caption"] for r in base if (hair := planted_hair(r["traits"]))] or 0.0
            )
        ),
    }


def st_detect(out: Path, cfg: BuildConfig) -> dict[str, Any]:
    from PIL import Image

    from face0cli.faces.embedders import MtcnnDetector
    from face0cli.synthetic.world import image_path, read_truth

    rows = read_truth(out / "world", "train")
    pick = rows[:: max(1, len(rows) // 300)][:300]
    det = MtcnnDetector()
    found: dict[str, list[bool]] = {}
    for r in pick:
        ok = len(det.detect(Image.open(image_path(out / "world", r)).convert("RGB"))) > 0
        found.setdefault(r["attributes"]["style"], []).append(ok)
    every = [v for vs in found.values() for v in vs]
    rate = float(np.mean(every))
    return {
        "images": len(every),
        "mtcnn_found": rate,
        "by_style": {k: float(np.mean(v)) for k, v in found.items()},
        "framing": "mtcnn" if rate >= 0.95 else "whole frame (64 px portraits); MTCNN for other images",
    }


def _train_identity_net(out: Path, cfg: BuildConfig, which: str) -> dict[str, Any]:
    import torch

    from face0cli.synthetic import nets
    from face0cli.synthetic.world import load_images, read_truth

    torch.manual_seed(cfg.seed)
    world = out / "world"
    rows = read_truth(world, "train")
    x = load_images(world, rows)
    y = np.array([r["identity"] for r in rows])
    if which == "embedder":
        net: Any = nets.FaceNet()
        attrs, steps, seed = None, cfg.embedder_steps, cfg.seed
    else:
        net = nets.JudgeNet()
        attrs = {k: np.array([nets.attribute_labels(r)[k] for r in rows]) for k in nets.HEADS}
        steps, seed = cfg.judge_steps, cfg.seed + 1
    batch = 128 if which == "embedder" else 64
    curve = nets.train_net(net, x, y, attrs, steps=steps, batch=batch, seed=seed, log=_log)
    nets.save_net(net, out / which, {"trained_on": "synthetic world training identities", "steps": steps})
    held = read_truth(world, "heldout")
    xh, yh = load_images(world, held), np.array([r["identity"] for r in held])
    refs, queries = _heldout_split(held)
    figures: dict[str, Any] = {"steps": steps, "loss_curve": curve}
    if which == "embedder":
        z = nets.embed_images(net, xh)
    else:
        z, preds = nets.judge_images(net, xh)
        figures["attribute_accuracy_heldout"] = {
            k: float(np.mean(preds[k] == np.array([nets.attribute_labels(r)[k] for r in held]))) for k in nets.HEADS
        }
    figures["heldout_identification"] = nets.identification(z[queries], yh[queries], z[refs], yh[refs])
    return figures


def st_embedder(out: Path, cfg: BuildConfig) -> dict[str, Any]:
    return _train_identity_net(out, cfg, "embedder")


def st_judge(out: Path, cfg: BuildConfig) -> dict[str, Any]:
    return _train_identity_net(out, cfg, "judge")


def st_vae(out: Path, cfg: BuildConfig) -> dict[str, Any]:
    import torch

    from face0cli.synthetic.model import init_base, make_vae, train_vae
    from face0cli.synthetic.world import load_images, read_truth

    torch.manual_seed(cfg.seed)
    rows = read_truth(out / "world", "train")
    x = load_images(out / "world", rows)
    vae = make_vae(cfg.seed)
    figures = train_vae(vae, x, steps=cfg.vae_steps, batch=16, seed=cfg.seed, log=_log)
    if (out / "base-sd").exists():
        shutil.rmtree(out / "base-sd")
    init_base(out / "base-sd", vae, cfg.seed)
    return figures


def st_prep(out: Path, cfg: BuildConfig) -> dict[str, Any]:
    from face0cli.data.prep import TripletFile
    from face0cli.errors import BadInput

    figures = {}
    for name in ("base", "face0", "tune"):
        dest = out / f"triplets-{name}.h5"
        if dest.is_file():  # a finished file is from an earlier build (the stage is being redone): start over;
            try:  # an unfinished one is this stage's, stopped: prep resumes it
                TripletFile(dest)
                dest.unlink()
            except BadInput:
                pass
        _face0(
            [
                "prep", str(out / "world" / name), "--out", str(dest), "--embedder", str(out / "embedder"),
                "--latents", str(out / "base-sd"), "--resolution", "64",
            ],
            out / "build.log",
        )  # fmt: skip
        from face0cli.data.prep import read_summary

        figures[name] = read_summary(dest).to_dict()
    return figures


def _train(out: Path, cfg: BuildConfig, data: str, base: Path, run: str, steps: int, *args: str) -> dict[str, Any]:
    """`face0 train` on DIR/triplets-DATA.h5 from BASE into DIR/RUN: what every training stage shares, plus
    ARGS (the stage's own options); resumes from RUN's last checkpoint."""
    seed = cfg.seed if cfg.train_seed is None else cfg.train_seed
    shared = [
        "train", "-t", str(out / f"triplets-{data}.h5"), "--base", str(base), "--out", str(out / run), "--max-steps",
        str(steps), "--text-drop", "0.1", "--ema-decay", "0.995", "--resolution", "64", "--batch-size",
        str(cfg.batch_size), "--workers", "0", "--checkpoint-every", str(cfg.checkpoint_every), "--validate-every",
        str(cfg.validate_every), "--seed", str(seed), "--snr-gamma", "5", "--resume", "latest", "--log-every",
        "10",
    ]  # fmt: skip
    _face0(shared + list(args), out / "build.log")
    return {"steps": steps, "log": str(out / run / "logs" / "train.csv")}


# each image of the Face0 and tune stages is conditioned on another image of the same person
SAME_PERSON = ("--identity-pattern", r"^(id\d+)-", "--gmm-covariance", "full")


def st_base(out: Path, cfg: BuildConfig) -> dict[str, Any]:
    """The base model from the traits' words (faces dropped); then which planted professions' words it learnt
    (scorecard.planted_words), the thing a text-only Face0 model can reproduce a bias from."""
    from face0cli.synthetic.scorecard import DEBIAS_JOBS, planted_words

    figures = _train(
        out, cfg, "base", out / "base-sd", "run-base", cfg.base_steps, "--lr", str(cfg.base_lr), "--warmup", "100",
        "--face-drop", "1.0", "--train-text-encoder", "--projector-normalize", "--projector-hidden-dim", "256",
    )  # fmt: skip
    words = planted_words(out / "run-base" / "model", out / "judge", out / "world", quick=cfg.toy)
    rates = (f"{j} {words[j]['trait']} {words[j]['text_only']:.2f} (person {words[j]['person']:.2f})"
             for j in DEBIAS_JOBS)  # fmt: skip
    _log("[build] base, text only: " + "; ".join(rates))
    return {**figures, "words": words}


def st_face0(out: Path, cfg: BuildConfig) -> dict[str, Any]:
    return _train(
        out, cfg, "face0", out / "run-base" / "model", "run-face0", cfg.face0_steps, "--lr", str(cfg.face0_lr),
        "--projector-lr", str(cfg.projector_lr), "--warmup", "50", "--face-drop", str(cfg.face0_face_drop),
        *SAME_PERSON,
    )  # fmt: skip


def st_tune(out: Path, cfg: BuildConfig) -> dict[str, Any]:
    from face0cli.synthetic.world import MORPH_PATTERN

    return _train(
        out, cfg, "tune", out / "run-face0" / "model", "run-tune", cfg.tune_steps, "--lr", str(cfg.tune_lr),
        "--projector-lr", str(cfg.tune_lr), "--warmup", "20", "--face-drop", str(cfg.face0_face_drop),
        *SAME_PERSON, "--reference-exclude", DYED_HAIR, "--mix-pattern", MORPH_PATTERN, "--train-text-encoder",
    )  # fmt: skip


def st_package(out: Path, cfg: BuildConfig) -> dict[str, Any]:
    from face0cli.synthetic.package import package_model

    return package_model(out / "run-tune" / "model", out / "embedder", out / "judge", out / "default-model")


def st_characters(out: Path, cfg: BuildConfig) -> dict[str, Any]:
    from face0cli.synthetic.package import make_characters

    return make_characters(out / "default-model", out / "world", out / "characters")


def st_scorecard(out: Path, cfg: BuildConfig) -> dict[str, Any]:
    from face0cli.synthetic.scorecard import scorecard

    base = stage_done(out, "base") or {}
    return scorecard(
        out / "default-model", out / "world", out / "scorecard", quick=cfg.toy, base_words=base.get("words")
    )


RUNNERS: dict[str, Callable[[Path, BuildConfig], dict[str, Any]]] = {
    "world": st_world,
    "detect": st_detect,
    "embedder": st_embedder,
    "judge": st_judge,
    "vae": st_vae,
    "prep": st_prep,
    "base": st_base,
    "face0": st_face0,
    "tune": st_tune,
    "package": st_package,
    "characters": st_characters,
    "scorecard": st_scorecard,
}


@contextlib.contextmanager
def _sole_builder(out: Path) -> Iterator[None]:
    """Hold OUT/.build.lock for the build, so a second build into the same folder stops at once with one line
    rather than training into it beside the first; and turn a SIGTERM (`kill PID`) into SystemExit, so the stage's
    face0 subprocess is killed with the build (subprocess.call kills its child on any exception) instead of
    going on alone, and a resumed build never trains beside an orphan."""
    from face0cli.locks import sole_job

    main = threading.current_thread() is threading.main_thread()  # signal handlers live in the main thread only

    def stop(signum: int, frame: Any) -> None:
        raise SystemExit(128 + signum)

    busy = f"{out} is being built by another face0 synth build; let it finish or stop it first."
    with sole_job(out / ".build.lock", busy):
        old = signal.signal(signal.SIGTERM, stop) if main else None
        try:
            yield
        finally:
            if main:
                signal.signal(signal.SIGTERM, old)


def build(out: Path, cfg: BuildConfig = BuildConfig(), until: str | None = None, redo: tuple[str, ...] = ()) -> dict:
    """Run the stages in order (skipping finished ones, except those in REDO), up to and including UNTIL. One
    build at a time per folder; a SIGTERM stops the running stage's subprocess too."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    with _sole_builder(out):
        (out / "build.json").write_text(json.dumps(asdict(cfg), indent=2) + "\n", encoding="utf-8")
        results: dict[str, Any] = {}
        for name in STAGES:
            done = stage_done(out, name)
            if done is not None and name not in redo:
                results[name] = done
                _log(f"[build] {name}: done ({done.get('seconds', 0):.0f} s)")
            else:
                _log(f"[build] {name} ...")
                t0 = time.perf_counter()
                results[name] = _finish(out, name, RUNNERS[name](out, cfg), t0)
                _log(f"[build] {name}: {results[name]['seconds']:.0f} s")
            if name == until:
                break
    return results
