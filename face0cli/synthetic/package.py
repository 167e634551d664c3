"""Package the trained default model and its example characters (the build's last stages before the scorecard).

The shipped model directory is a face0 model directory like any other (docs/model-format.md) with fp16 weights
(loaded in the dtype asked for), plus:

    embedder/        the synthetic FaceNet its face0.json names (model.safetensors + config.json)
    judge/           the independent judge of `face0 eval` (never the conditioning encoder)
    characters.h5    example characters (held-out identities), a FaceStore file; `--face NAME` finds them
                     when the user's library has no such name
    scorecard.json   the quality figures of the build that made it (when the scorecard stage ran)
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from PIL import Image

EXAMPLES = "characters.h5"
JUDGE_DIR = "judge"
SAMPLE_STEPS = 25
"""The DDIM steps the scorecard measures the default model at; its face0.json records them, so the CLI samples
with them when no --steps is given (every figure of the scorecard is at these steps, not the paper's 50)."""
# example characters: held-out identity offsets (0 = the first held-out identity) and their names
EXAMPLE_NAMES = ("ada", "bruno", "chen", "dara", "emil", "fay")
# what a reference portrait leaves out: a photo, no accessories, no override, no profession
PLAIN_SCENE: dict[str, Any] = {
    "style": "photo", "hat": None, "glasses": False, "hair_override": None, "profession": None,
}  # fmt: skip


def package_model(model_dir: Path, embedder: Path, judge: Path, dest: Path) -> dict[str, Any]:
    """Write dest: the model with fp16 weights, its embedder and the judge, its face0.json recording the steps it
    is measured at (SAMPLE_STEPS). Returns sizes and parameters."""
    import dataclasses

    from face0cli.model.pipeline import Face0Pipeline
    from face0cli.synthetic.model import param_counts

    # cast while loading, as diffusers asks (a `.to(dtype)` afterwards warns once per component)
    pipe = Face0Pipeline.load(model_dir, dtype="fp16")
    pipe.face0_config = dataclasses.replace(pipe.face0_config, steps=SAMPLE_STEPS)
    tmp = dest.with_name(dest.name + ".partial")
    if tmp.exists():
        shutil.rmtree(tmp)
    pipe.save_pretrained(tmp)
    shutil.copytree(embedder, tmp / "embedder")
    shutil.copytree(judge, tmp / JUDGE_DIR)
    for f in ("train_config.json", "training.json"):
        if (Path(model_dir) / f).is_file():
            shutil.copy2(Path(model_dir) / f, tmp / f)
    if dest.exists():
        shutil.rmtree(dest)
    os.replace(tmp, dest)
    total = sum(f.stat().st_size for f in dest.rglob("*") if f.is_file())
    return {"bytes": total, "parameters": param_counts(dest)}


def reference_portrait(identity_index: int, seed: int = 0) -> Image.Image:
    """A plain reference portrait of an identity: photo style, grey background and shirt, no accessories."""
    from face0cli.synthetic.portraits import make_identity, render, sample

    ident = make_identity(identity_index, seed)
    s = sample(
        ident,
        999,
        seed,
        background="grey",
        shirt="grey",
        **PLAIN_SCENE,
        dx=0.0,
        dy=0.0,
        angle=0.0,
        scale=0.0,
        smile=0.5,
        brightness=0.0,
    )
    return render(s.identity, s.scene)


def other_portraits(identity_index: int, seed: int = 0, n: int = 2) -> list[Image.Image]:
    """N more photo-style portraits of an identity (other pose, light, expression, background, shirt): the
    references `face0 eval` judges a generation against (examples/eval-synthetic.yaml)."""
    from face0cli.synthetic.portraits import make_identity, render, sample

    ident = make_identity(identity_index, seed)
    return [render(s.identity, s.scene) for s in (sample(ident, 1000 + k, seed, **PLAIN_SCENE) for k in range(n))]


def make_characters(model_dir: Path, world: Path, out: Path, n: int = 4) -> dict[str, Any]:
    """Example characters: reference portraits of the first N held-out identities -> out/NAME.png (and two other
    portraits, out/NAME-ref1.png and NAME-ref2.png, to judge against), embedded with the model's embedder into
    model_dir/characters.h5 (and a copy in out/library.h5)."""
    import json

    from face0cli.faces.embedders import embed_photo
    from face0cli.faces.registry import embedder_for_model
    from face0cli.library.store import Character, FaceStore
    from face0cli.model.pipeline import FACE0_JSON, Face0Config

    meta = json.loads((Path(world) / "world.json").read_text(encoding="utf-8"))
    cfg = Face0Config.load(Path(model_dir) / FACE0_JSON)
    emb = embedder_for_model(cfg.embedder_id, model_dir)
    out.mkdir(parents=True, exist_ok=True)
    lib_path = Path(model_dir) / EXAMPLES
    if lib_path.exists():
        lib_path.unlink()
    store = FaceStore(lib_path)
    made = []
    for name, identity in zip(EXAMPLE_NAMES[:n], meta["heldout_ids"]):
        png = out / f"{name}.png"
        reference_portrait(identity, meta["config"]["seed"]).save(png)
        for k, im in enumerate(other_portraits(identity, meta["config"]["seed"]), start=1):
            im.save(out / f"{name}-ref{k}.png")
        r = embed_photo(emb, png)
        prov = {"sources": [r.to_json()], "embedder": emb.id, "synthetic_identity": identity, "split": "held-out"}
        note = "example character of the default model: a held-out identity of the synthetic world"
        thumb = Image.open(png).convert("RGB")  # the portrait itself: a synthetic face is the whole frame
        store.add(Character.new(name, r.vector, emb.id, "photo", prov, note=note), force=True, thumbnail=thumb)
        made.append({"name": name, "identity": identity, "portrait": str(png)})
    Path(str(lib_path) + ".lock").unlink(missing_ok=True)  # the writers' lock file: not part of the model
    shutil.copy2(lib_path, out / "library.h5")
    return {"characters": made}
