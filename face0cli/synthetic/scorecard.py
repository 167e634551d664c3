"""The default model's scorecard: the paper's claims measured on held-out identities by the independent judge.

What each figure is (held-out identities never seen by the model, the embedder or the judge):

- identification, through `face0 eval` (its runner, `evaluation.runner.run_eval`, on a spec the stage writes,
  DIR/heldout-eval.yaml, so `face0 eval DIR/heldout-eval.yaml --out X` gives the same figure): each of the 20
  held-out identities conditions generations (its reference portrait embedded with the model's embedder) over 5
  prompts x 4 seeds; the judge (`judges: [synthetic]`, the model's judge/) must find the image nearer its own
  identity than every other identity, an identity's nearness being the mean cosine to its reference photos (the
  identity's world portraits and its reference portrait; for its own identity, without the conditioning
  portrait). Baselines: the same prompts with a random face (the model's GMM) and with no face, scored the same
  way against the same identity.
- likeness gap: the judge's nearness to the right identity minus the mean nearness to the others.
- prompt control: the judge's background / shirt / style heads agree with what the prompt asked; trait override:
  "with blue hair" (and pink, green, white) read by the judge's hair head.
- c / a (paper §3.4, Fig. 7): style adherence and identification for stylised prompts at c = 0.4, 0.7, 1.0 and
  c = 1.4 with a = 1.
- consistency (paper §3.1): random characters across 5 prompts; a pair of images of one character counts when the
  judge finds it more similar to its own other image than to any other character's image of the same prompt.
- interpolation (paper §3.3): 6-step strips between two held-out identities (each identity is A once, at two
  seeds: 40 strips); judge similarity to A must fall monotonically (a rise of at most 0.02 between neighbours).
  The same test on the world's own morphs of the same pairs (portraits.morph, drawn in the strips' scene) is
  what a model that morphs exactly as the world does would score under this judge. Beside the bar's 40 strips,
  the same pairs at 6 seeds: all 120 strips one by one, and each pair's similarities averaged over its 6 seeds
  before the test, which takes most of the judge's noise out (interpolation_by_seed). And why a strip's ends
  are flat (mix_geometry): how little the mix at t = 0.2 moves the conditioning embedder's cosine to A's
  portraits, against how much one photo of A moves it from another.
- debias (paper §3.1, Fig. 3): the planted bias (the world's `planted`: doctors with grey hair and teachers with
  blonde hair, doctors with beards, or doctors with bald heads; `planted_trait`); the judge's hair (or beard) head
  on 200 text-only generations and 200 `debias` generations (a fresh random face each, at `face0 debias`'s
  guidance, config.DEBIAS_C / DEBIAS_A; and the same faces at the paper's plain sampling, c = 1, a = 0) per
  profession, with 95% Wilson intervals, against the training identities' base rate and the rate the same faces
  get under "a photo of a person" (neutral: a word that says nothing, what debias can reach at best); and how
  often the debiased images still have the shirt and background asked for.
  The prompt is "a photo of a {doctor, teacher} in a purple shirt on a yellow background" (colours that name no
  hair; "in a grey shirt on a blue background" for the beard and bald biases). Beside them, when the build gives
  it, what the model's base learnt from the words alone (planted_words, measured after the base stage).
- speed: one 64 px image at 25 steps in-process (median of 5), and the quickstart's `face0 generate` (an example
  character, the model's own steps) cold from the shell (a fresh process each time: the median and the slowest
  of 3), each beside plain diffusers' StableDiffusionPipeline on the same components in the same run
  (synthetic.speedcheck), so that what face0 adds shows apart from what the libraries and the machine cost.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from PIL import Image

from face0cli.config import DEBIAS_A, DEBIAS_C
from face0cli.synthetic.nets import HEADS, JudgeNet, judge_images, load_net
from face0cli.synthetic.portraits import HAIR_OVERRIDE, PLANTED_HAIR, planted_hair

EVAL_SPEC = "heldout-eval.yaml"
"""The spec of the identification run that the scorecard writes beside scorecard.json (`face0 eval` reads it)."""
INTERP_SEEDS = (11, 12, 13, 14, 15, 16)
"""The interpolation strips' seeds: the bar's figure counts the first two (40 strips); interpolation_by_seed all."""
DEBIAS_IMAGES = 200
"""Generations per profession and per mode (text only, debias, the paper's plain sampling; and the neutral
'person') of the debias figures: a rate's 95% interval is about +-0.06 at 200 (+-0.13 at 40, what it was)."""
EVAL_BATCH = 20
"""Images per pipeline call of the identification run (`face0 eval --batch 20`), as Scorer.generate batches the
other figures: each image keeps its own seed and is the unbatched one up to float rounding (at most 1/255)."""


def _asks(shirt: str, background: str, template: str) -> tuple[str, dict[str, str]]:
    return template.format(shirt=shirt, bg=background), {"shirt": shirt, "background": background, "style": "photo"}


PROMPTS = (
    _asks("red", "blue", "a photo of a person in a {shirt} shirt on a {bg} background"),
    _asks("yellow", "green", "a photo of a person in a {shirt} shirt on a {bg} background"),
    _asks("purple", "orange", "a photo of a person wearing a {shirt} shirt, {bg} background"),
    _asks("green", "pink", "a photo of a person, {shirt} shirt, {bg} background"),
    _asks("blue", "grey", "a photo of a person in front of a {bg} background, in a {shirt} shirt"),
)
STYLISED = (
    ("a pencil sketch of a person in a red shirt on a blue background", {"style": "sketch"}),
    ("a pop art portrait of a person in a blue shirt on a yellow background", {"style": "pop art"}),
)


class Drawer:
    """Generates with the model in MODEL_DIR and reads the images with the judge in JUDGE_DIR."""

    def __init__(self, model_dir: Path, judge_dir: Path, steps: int = 25, w: float = 7.5) -> None:
        from face0cli.model.pipeline import Face0Pipeline

        self.pipe = Face0Pipeline.load(str(model_dir))
        self.pipe.set_progress_bar_config(disable=True)
        net, _ = load_net(Path(judge_dir))
        assert isinstance(net, JudgeNet)
        self.judge = net
        self.steps, self.w = steps, w
        self.n_images = 0

    def generate(
        self, prompts: list[str], faces: np.ndarray | None, seeds: list[int], c: float = 1.0, a: float = 0.0
    ) -> np.ndarray:
        """(N, 64, 64, 3) uint8 images, one per (prompt, face, seed) row; faces (N, D) or None."""
        out = []
        for s in range(0, len(prompts), 20):
            sl = slice(s, s + 20)
            gens = [torch.Generator().manual_seed(int(x)) for x in seeds[sl]]
            face = None if faces is None else torch.from_numpy(faces[sl])
            res = self.pipe(
                prompts[sl], face, w=self.w, c=c, a=a, num_inference_steps=self.steps, generator=gens,
                output_type="np",
            )  # fmt: skip
            out.append((np.asarray(res.images) * 255).round().astype(np.uint8))
        self.n_images += len(prompts)
        return np.concatenate(out)

    def read(self, images: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        z, preds = judge_images(self.judge, images)
        return z, {k: np.array([HEADS[k][v] for v in vals]) for k, vals in preds.items()}


class Scorer(Drawer):
    """A Drawer of a packaged model (its judge inside it) with the held-out references of the world."""

    def __init__(self, model_dir: Path, world: Path, steps: int = 25, w: float = 7.5) -> None:
        from face0cli.faces.embedders import embed_photo, embed_photos
        from face0cli.faces.registry import embedder_for_model
        from face0cli.synthetic.package import JUDGE_DIR, reference_portrait
        from face0cli.synthetic.world import image_path, load_images, read_truth

        super().__init__(model_dir, Path(model_dir) / JUDGE_DIR, steps, w)
        net = self.judge
        emb = embedder_for_model(self.pipe.face0_config.embedder_id, model_dir)
        held = read_truth(world, "heldout")
        self.ids = sorted({r["identity"] for r in held})
        z, _ = judge_images(net, load_images(world, held))
        labels = np.array([r["identity"] for r in held])
        cents = np.stack([z[labels == i].mean(0) for i in self.ids])
        self.centroids = cents / np.linalg.norm(cents, axis=1, keepdims=True)
        seed = json.loads((Path(world) / "world.json").read_text())["config"]["seed"]
        self.world_seed = seed
        tmp = Path(world) / "references"
        tmp.mkdir(exist_ok=True)
        vecs, self.photos, refs = [], [], []
        for i in self.ids:
            p = tmp / f"id{i:04d}.png"
            reference_portrait(i, seed).save(p)
            vecs.append(embed_photo(emb, p).vector)
            # the identity's reference photos as `face0 eval` sees them: the conditioning portrait first
            self.photos.append([p, *(image_path(world, r) for r in held if r["identity"] == i)])
            refs.append(np.concatenate([judge_images(net, np.array(Image.open(p).convert("RGB"))[None])[0],
                                        z[labels == i]]))  # fmt: skip
        self.faces = np.stack(vecs)
        self.references = refs
        # the conditioning embedder's vectors of each identity's world portraits (mix_geometry)
        every = embed_photos(emb, [q for photos in self.photos for q in photos[1:]])
        counts = np.cumsum([0] + [len(photos) - 1 for photos in self.photos])
        self.portrait_faces = [np.stack([f.vector for f in every[a:b]]) for a, b in zip(counts[:-1], counts[1:])]

    @property
    def gmm(self) -> Any:
        if self.pipe.gmm is None:
            from face0cli.errors import ModelError

            raise ModelError("the model has no GMM of faces: random faces and debias cannot be scored.")
        return self.pipe.gmm

    def morph_strip(self, ia: int, ib: int, seed: int, ts: np.ndarray) -> np.ndarray:
        """The judge's similarity to identity ia's centroid along the world's own morph from ia to ib (indices
        into ids), drawn in the interpolation prompt's scene (photo, red shirt, blue background; pose from seed)."""
        from face0cli.synthetic.portraits import make_identity, morph, render, sample

        a, b = make_identity(self.ids[ia], self.world_seed), make_identity(self.ids[ib], self.world_seed)
        fixed: dict[str, Any] = {"hat": None, "glasses": False, "hair_override": None, **PROMPTS[0][1]}
        scene = sample(a, 1000 + seed, self.world_seed, **fixed).scene
        images = np.stack([np.asarray(render(morph(a, b, float(t), self.world_seed), scene)) for t in ts])
        z, _ = judge_images(self.judge, images)
        return z @ self.centroids[ia]

    def identify(self, z: np.ndarray, truth: np.ndarray) -> dict[str, float]:
        """Identification as `face0 eval` counts it (metrics.identified), and the likeness gap, of judge vectors
        z (N, D) of images meant to show the identities `truth` (N,), each conditioned on its reference portrait.

        An identity's nearness is the mean cosine to its reference photos; for the image's own identity, without
        the conditioning portrait (photos[0]); identified when the own nearness beats every other identity's."""
        z = np.asarray(z, np.float64)  # as metrics.cosine
        zn = z / np.linalg.norm(z, axis=1, keepdims=True)
        right = np.array([self.ids.index(int(t)) for t in truth])
        unit = [np.asarray(r, np.float64) / np.linalg.norm(r, axis=1, keepdims=True) for r in self.references]
        near_all = np.stack([(zn @ r.T).mean(1) for r in unit], axis=1)  # (N, identities), every photo
        near_own = np.stack([(zn @ r[1:].T).mean(1) for r in unit], axis=1)  # without the conditioning one
        rows = np.arange(len(z))
        own = near_own[rows, right]
        rivals = near_all.copy()
        rivals[rows, right] = -np.inf
        others = (near_all.sum(1) - near_all[rows, right]) / (len(self.ids) - 1)
        return {"accuracy": float(np.mean(own > rivals.max(1))), "gap": float(np.mean(own - others))}

    def eval_spec(self, path: Path, model_dir: Path, seeds: list[int]) -> Path:
        """Write the identification run as a `face0 eval` spec: the held-out identities (each conditioned on its
        reference portrait, photos[0]), the five prompts, the seeds, this scorer's sampler, the model's judge.
        Paths are relative to the spec's folder, so the build folder can move."""
        import os

        import yaml

        here = Path(path).resolve().parent

        def rel(p: Path) -> str:
            return os.path.relpath(Path(p).resolve(), here)

        spec = {
            "name": "heldout",
            "model": rel(model_dir),
            "clip": None,
            "identities": {
                f"id{i:04d}": {"photos": [rel(p) for p in photos]} for i, photos in zip(self.ids, self.photos)
            },
            "prompts": [p for p, _ in PROMPTS],
            "seeds": list(seeds),
            "settings": {"default": {"steps": self.steps, "w": self.w}},
            "judges": [{"name": "synthetic", "weights": rel(Path(model_dir) / "judge")}],
        }
        head = (
            "# The scorecard's identification run (face0 synth build, stage scorecard): the held-out identities of\n"
            "# the synthetic world, each conditioned on its reference portrait (photos[0]), judged by the model's\n"
            "# judge.\n"
            f"#   face0 eval {path.name} --out DIR --batch {EVAL_BATCH}\n"
        )
        path.write_text(head + yaml.safe_dump(spec, sort_keys=False, width=120), encoding="utf-8")
        return path


def interpolation_by_seed(sims: np.ndarray, morphs: np.ndarray, n_pairs: int, ts: np.ndarray) -> dict[str, Any]:
    """The interpolation test with the judge's noise averaged out: SIMS and MORPHS are (seeds x pairs, steps)
    similarities to A of the model's strips and of the world's own morphs, seed-major. Each strip tested alone
    over every seed, and each pair's similarities averaged over the seeds before the test (a pair's face moves the
    same way at every seed; the judge's noise does not), with the mean curves."""
    n_seeds = len(sims) // n_pairs
    by = {"model": sims.reshape(n_seeds, n_pairs, -1), "world_morphs": morphs.reshape(n_seeds, n_pairs, -1)}
    return {
        "seeds": n_seeds,
        "pairs": n_pairs,
        "t": [round(float(t), 3) for t in ts],
        **{
            k: {
                "strips": _monotone(v.reshape(-1, v.shape[-1])),
                "pairs_seed_mean": _monotone(v.mean(0)),
                "mean_curve": [round(float(x), 3) for x in v.mean((0, 1))],
            }
            for k, v in by.items()
        },
    }


def mix_geometry(
    faces: np.ndarray, portraits: list[np.ndarray], pairs: list[tuple[int, int]], ts: np.ndarray
) -> dict[str, Any]:
    """Where `mix --t` puts the face, seen by the conditioning embedder: for each pair (a, b) of identities
    (indices into FACES, the conditioning vectors, and PORTRAITS, each identity's vectors of its other portraits),
    how much the mix (1 - t) a + t b moves the mean cosine to a's portraits from where a's own vector has it
    ("mix_change", the mean over pairs at each t), against how much that figure moves from one photo of a person
    to another (`photo_sd`: the spread of the cosines of each identity's portraits to its conditioning vector,
    averaged over identities). A model that draws one person for every photo of them (likeness, consistency)
    draws that person wherever the mix moves less than photo_sd: the flat ends of its strips."""
    unit = lambda v: v / np.linalg.norm(v, axis=-1, keepdims=True)  # noqa: E731
    f = unit(np.asarray(faces, np.float64))
    ps = [unit(np.asarray(p, np.float64)) for p in portraits]
    at = lambda a, v: float((ps[a] @ v).mean())  # noqa: E731
    change = np.array([[at(a, unit((1 - t) * f[a] + t * f[b])) - at(a, f[a]) for t in ts] for a, b in pairs])
    return {
        "t": [round(float(t), 3) for t in ts],
        "mix_change": [round(float(x), 4) for x in change.mean(0)],
        "photo_sd": round(float(np.mean([(p @ f[i]).std() for i, p in enumerate(ps)])), 4),
    }


class PlantedTrait(NamedTuple):
    """What the debias rows count for a profession: the judge's head and class, the trait's name, and the same
    class of a truth row (`of_row`, for the base rate and the training captions' rate)."""

    head: str
    value: str
    name: str
    of_row: Callable[[dict[str, Any]], str | None]


def planted_trait(planted: str, job: str) -> PlantedTrait:
    """The PlantedTrait of JOB in a world with the PLANTED bias."""
    if planted == "hair":
        colour = next(c for c, p in PLANTED_HAIR.items() if p == job)
        return PlantedTrait("hair", colour, f"{colour} hair", lambda r: planted_hair(r["traits"]))
    if planted == "bald":  # the hair head's "bald" class
        return PlantedTrait(
            "hair", "bald", "bald head", lambda r: "bald" if r["traits"]["hair_style"] == "bald" else None
        )
    return PlantedTrait("beard", "beard", "beard", lambda r: r["traits"]["beard"])


DEBIAS_JOBS = ("doctor", "teacher")
"""The professions of the debias rows (and of planted_words): one the world ties to its planted trait in every
kind of bias, and one it ties to another trait (blonde hair) or to none (beard, bald)."""
WORD_IMAGES = 40
"""Text-only images per word of planted_words: a rate's 95% interval is about +-0.15 at 40, enough to tell a word
that was learnt from one that draws what "person" draws."""


def world_planted(world: Path) -> str:
    """The planted bias of the world in WORLD (worlds written before the hair bias have no such setting: beards)."""
    return str(json.loads((Path(world) / "world.json").read_text())["config"].get("planted", "beard"))


def debias_scene(planted: str) -> tuple[str, str]:
    """The shirt and background of the debias prompts: colours that name no hair for the hair bias."""
    return ("purple", "yellow") if planted == "hair" else ("grey", "blue")


def debias_prompt(planted: str, job: str) -> str:
    """The debias rows' prompt for JOB (a profession, or "person") in a world with the PLANTED bias."""
    shirt, background = debias_scene(planted)
    return f"a photo of a {job} in a {shirt} shirt on a {background} background"


def _sample_steps(quick: bool) -> int:
    """The scorecard's sampling steps: the model's own (package.SAMPLE_STEPS), a few for a quick (toy) build."""
    from face0cli.synthetic.package import SAMPLE_STEPS

    return 4 if quick else SAMPLE_STEPS


def planted_words(
    model_dir: Path, judge_dir: Path, world: Path, quick: bool = False, n: int | None = None, w: float = 7.5
) -> dict[str, Any]:
    """What the model in MODEL_DIR draws from the professions' words alone: for each of DEBIAS_JOBS, the rate of
    its planted trait (`planted_trait`) in N text-only images (the debias rows' prompt and seeds; WORD_IMAGES, 4
    when QUICK), beside the rate of the same trait under "person" on the same seeds, read by the judge in
    JUDGE_DIR. The build measures its base stage's model with it: a Face0 model can draw a profession's trait from
    text only if its base learnt it."""
    n = n if n is not None else (4 if quick else WORD_IMAGES)
    d = Drawer(model_dir, judge_dir, _sample_steps(quick), w)
    planted = world_planted(world)
    seeds = list(range(100, 100 + n))

    def read(job: str) -> dict[str, np.ndarray]:
        return d.read(d.generate([debias_prompt(planted, job)] * n, None, seeds))[1]

    person = read("person")
    res: dict[str, Any] = {"planted": planted, "images": n}
    for job in DEBIAS_JOBS:
        head, value, name, _ = planted_trait(planted, job)
        rate = float(np.mean(read(job)[head] == value))
        res[job] = {"trait": name, "text_only": rate, "person": float(np.mean(person[head] == value))}
    return res


def wilson(hits: int, n: int) -> list[float]:
    """The 95% Wilson score interval of a rate of HITS in N (scipy's), rounded to 3 places; [0, 1] when N is 0."""
    if n == 0:
        return [0.0, 1.0]
    from scipy.stats import binomtest

    ci = binomtest(hits, n).proportion_ci(confidence_level=0.95, method="wilson")
    return [round(float(ci.low), 3), round(float(ci.high), 3)]


def _monotone(sims: np.ndarray) -> float:
    """The share of strips (rows of judge similarities to A) that fall monotonically: no rise above 0.02."""
    return float(np.mean(np.all(np.diff(sims, axis=1) <= 0.02, axis=1)))


def _grid(images: np.ndarray, cols: int, scale: int = 3) -> Image.Image:
    n, h, w = images.shape[:3]
    rows = (n + cols - 1) // cols
    g = Image.new("RGB", (cols * w, rows * h), (255, 255, 255))
    for i, im in enumerate(images):
        g.paste(Image.fromarray(im), ((i % cols) * w, (i // cols) * h))
    return g.resize((cols * w * scale, rows * h * scale), Image.Resampling.NEAREST)


def scorecard(
    model_dir: Path, world: Path, out: Path, quick: bool = False, w: float = 7.5, base_words: dict | None = None
) -> dict[str, Any]:
    """Measure every figure of the module doc; write out/scorecard.json, out/scorecard.md and the pictures
    (grid.png: identities x prompts, override.png: identities x hair colours, strips.png: interpolations).
    BASE_WORDS: planted_words of the model's base (the build's base stage), shown beside the debias rows."""
    out.mkdir(parents=True, exist_ok=True)
    sc = Scorer(model_dir, world, steps=_sample_steps(quick), w=w)
    ids = sc.ids
    n_id = len(ids)
    seeds = [0, 1] if quick else [0, 1, 2, 3]
    res: dict[str, Any] = {"identities": n_id, "chance": 1.0 / n_id, "w": w, "steps": sc.steps}
    t0 = time.perf_counter()

    # 1. identification + prompt control: identities x prompts x seeds, through face0 eval's runner
    from face0cli.evaluation.runner import run_eval

    spec = sc.eval_spec(out / EVAL_SPEC, model_dir, seeds)
    # resume=False: the model folder keeps its path when a stage before is redone, so old images must not count
    ev = run_eval(
        spec, out / "eval", pipe_loader=lambda _: sc.pipe, resume=False, show_progress=False, batch=EVAL_BATCH
    )
    records = sorted(ev.images, key=lambda r: (r["identity"], r["prompt_index"], r["seed"]))
    rows = [(ids.index(int(r["identity"][2:])), r["prompt_index"], r["seed"]) for r in records]
    images = np.stack([np.asarray(Image.open(out / "eval" / r["path"]).convert("RGB")) for r in records])
    sc.n_images += len(records)
    truth = np.array([ids[i] for i, _, _ in rows])
    z, attrs = sc.read(images)
    again = sc.identify(z, truth)  # the same count from the PNGs, with the gap
    res["identification"] = {
        "accuracy": float(np.mean([r["scores"]["judges"]["synthetic"]["identified"] for r in records])),
        "gap": again["gap"],
        "recounted_accuracy": again["accuracy"],
        "eval": {"spec": EVAL_SPEC, "out": "eval", "images": len(records), "generated": ev.generated},
    }
    control = {}
    for key in ("background", "shirt", "style"):
        asked = np.array([PROMPTS[p][1][key] for _, p, _ in rows])
        control[key] = float(np.mean(attrs[key] == asked))
    res["prompt_control"] = control
    # the picture: identities x prompts at seed 0
    pick = [k for k, (i, p, s) in enumerate(rows) if s == seeds[0] and i < 8]
    _grid(images[pick], len(PROMPTS)).save(out / "grid.png")

    # baselines: one seed, random faces and no face, scored against the same identities
    base_rows = [(i, p) for i in range(n_id) for p in range(len(PROMPTS))]
    bp = [PROMPTS[p][0] for _, p in base_rows]
    bt = np.array([ids[i] for i, _ in base_rows])
    gmm_faces = sc.gmm.sample(len(base_rows), seed=123).astype(np.float32)
    zr, _ = sc.read(sc.generate(bp, gmm_faces, [0] * len(bp)))
    zn, _ = sc.read(sc.generate(bp, None, [0] * len(bp)))
    res["baseline_random_face"] = sc.identify(zr, bt)
    res["baseline_no_face"] = sc.identify(zn, bt)

    # 2. trait override: "with X hair"
    ov_rows = [(i, colour) for i in range(n_id) for colour in HAIR_OVERRIDE]
    ovp = [f"a photo of a person in a grey shirt on a white background, with {c} hair" for _, c in ov_rows]
    ovp = [p.replace("white background", "yellow background") for p in ovp]
    ov_images = sc.generate(ovp, np.stack([sc.faces[i] for i, _ in ov_rows]), [0] * len(ov_rows))
    _, oattrs = sc.read(ov_images)
    res["trait_override"] = float(np.mean(oattrs["hair"] == np.array([c for _, c in ov_rows])))
    _grid(ov_images[: 8 * len(HAIR_OVERRIDE)], 8).save(out / "override.png")  # 8 identities x the colours

    # 3. the c / a knobs on stylised prompts
    st_rows = [(i, p) for i in range(n_id) for p in range(len(STYLISED))]
    sp = [STYLISED[p][0] for _, p in st_rows]
    sf = np.stack([sc.faces[i] for i, _ in st_rows])
    st_truth = np.array([ids[i] for i, _ in st_rows])
    asked_style = np.array([STYLISED[p][1]["style"] for _, p in st_rows])
    curve = []
    for c, a in ((0.4, 0.0), (0.7, 0.0), (1.0, 0.0), (1.4, 1.0)):
        zz, aa = sc.read(sc.generate(sp, sf, [0] * len(sp), c=c, a=a))
        curve.append({"c": c, "a": a, "style": float(np.mean(aa["style"] == asked_style)), **sc.identify(zz, st_truth)})
    res["c_a_curve"] = curve

    # 4. consistency of random characters across 5 prompts
    n_chars = 6 if quick else 10
    chars = sc.gmm.sample(n_chars, seed=7).astype(np.float32)
    c_rows = [(k, p) for k in range(n_chars) for p in range(len(PROMPTS))]
    zc, _ = sc.read(
        sc.generate([PROMPTS[p][0] for _, p in c_rows], np.stack([chars[k] for k, _ in c_rows]), [5] * len(c_rows))
    )
    zc = zc.reshape(n_chars, len(PROMPTS), -1)
    hits = total = 0
    for k in range(n_chars):
        for p in range(len(PROMPTS)):
            for q in range(len(PROMPTS)):
                if p == q:
                    continue
                own = float(zc[k, p] @ zc[k, q])
                other = max(float(zc[k, p] @ zc[j, q]) for j in range(n_chars) if j != k)
                hits += own > other
                total += 1
    res["consistency"] = hits / total

    # 5. interpolation strips between held-out identities: each identity is A once, at each seed (the bar's
    # figure at the first two seeds, 40 strips; all seeds, and each pair averaged over the seeds, beside it)
    strip_seeds = (11, 12) if quick else INTERP_SEEDS
    strips = [(k, (k + n_id // 2) % n_id, s) for s in strip_seeds for k in range(n_id)]
    ts = np.linspace(0, 1, 6)
    s_faces = np.concatenate(
        [np.stack([(1 - t) * sc.faces[a] + t * sc.faces[b] for t in ts]) for a, b, _ in strips]
    ).astype(np.float32)
    s_images = sc.generate([PROMPTS[0][0]] * len(s_faces), s_faces, [s for _, _, s in strips for _ in ts])
    zs, _ = sc.read(s_images)
    zs = zs.reshape(len(strips), len(ts), -1)
    sims = np.stack([zs[j] @ sc.centroids[a] for j, (a, _, _) in enumerate(strips)])
    morphs = np.stack([sc.morph_strip(a, b, s, ts) for a, b, s in strips])
    bar = 2 * n_id  # the first two seeds' strips (the only two in a quick scorecard)
    res["interpolation_monotone"] = _monotone(sims[:bar])
    res["interpolation_strips"] = bar
    res["interpolation_world_morphs"] = _monotone(morphs[:bar])
    res["interpolation_by_seed"] = interpolation_by_seed(sims, morphs, n_id, ts)
    res["interpolation_geometry"] = mix_geometry(sc.faces, sc.portrait_faces, [(a, b) for a, b, _ in strips[:n_id]], ts)
    strip_images = [s_images[j * len(ts) : (j + 1) * len(ts)] for j in range(min(4, len(strips)))]
    _grid(np.concatenate(strip_images), 6).save(out / "strips.png")

    # 6. debias: text-only vs a fresh random face per image, for the planted professions
    from face0cli.synthetic.world import read_truth

    train = read_truth(world, "train")
    planted = world_planted(world)
    n_deb = 20 if quick else DEBIAS_IMAGES
    deb: dict[str, Any] = {"planted": planted, "c": DEBIAS_C, "a": DEBIAS_A}
    shirt, background = debias_scene(planted)
    seeds_d = list(range(100, 100 + n_deb))
    rnd = sc.gmm.sample(n_deb, seed=99).astype(np.float32)

    def prompts(job: str) -> list[str]:
        return [debias_prompt(planted, job)] * n_deb

    def debiased(job: str) -> dict[str, np.ndarray]:
        return sc.read(sc.generate(prompts(job), rnd, seeds_d, c=DEBIAS_C, a=DEBIAS_A))[1]  # `face0 debias`'s guidance

    neutral = debiased("person")  # the same faces under a word that says nothing: what debias can reach
    for job in DEBIAS_JOBS:
        head, value, name, trait = planted_trait(planted, job)
        _, a_txt = sc.read(sc.generate(prompts(job), None, seeds_d))
        a_deb = debiased(job)
        _, a_plain = sc.read(sc.generate(prompts(job), rnd, seeds_d))  # the paper's plain sampling, the same faces
        in_data = [trait(r) == value for r in train if r["attributes"]["profession"] == job]

        def count(attrs: dict[str, np.ndarray], head: str = head, value: str = value) -> int:
            return int(np.sum(attrs[head] == value))

        modes = {"text_only": a_txt, "debias": a_deb, "debias_plain": a_plain, "neutral": neutral}
        deb[job] = {
            "trait": name,
            "base_rate": float(np.mean([trait(r) == value for r in train])),
            "training_captions": float(np.mean(in_data)) if in_data else None,
            **{k: count(v) / n_deb for k, v in modes.items()},
            "images": n_deb,
            **{f"{k}_ci95": wilson(count(v), n_deb) for k, v in modes.items()},
            "debias_prompt_control": float(np.mean((a_deb["shirt"] == shirt) & (a_deb["background"] == background))),
        }
    res["debias"] = deb
    if base_words is not None:
        res["base_words"] = base_words
    res["generation_seconds"] = round(time.perf_counter() - t0, 1)
    res["images_generated"] = sc.n_images

    # 7. speed
    res["speed"] = speed(model_dir, runs=2 if quick else 3)
    (out / "scorecard.json").write_text(json.dumps(res, indent=2) + "\n", encoding="utf-8")
    (out / "scorecard.md").write_text(markdown(res) + "\n", encoding="utf-8")
    return res


def speed(model_dir: Path, runs: int = 3) -> dict[str, Any]:
    """In-process seconds for one 64 px image at 25 DDIM steps and the quickstart's `face0 generate` cold from the
    shell, each against plain diffusers on the same components in the same run (synthetic.speedcheck)."""
    from face0cli.synthetic.package import EXAMPLE_NAMES, EXAMPLES
    from face0cli.synthetic.speedcheck import cold, in_process

    # the quickstart's command: an example character, the model's own steps (face0.json)
    face = EXAMPLE_NAMES[0] if (Path(model_dir) / EXAMPLES).is_file() else "random:1"
    fast = in_process(model_dir, repeats=5 if runs >= 3 else 2)
    return {**fast, **cold(model_dir, face, Path(model_dir).parent / "speed-check.png", runs=runs)}


def markdown(res: dict[str, Any]) -> str:
    """The scorecard as a markdown table (the README's)."""
    idf, rnd, non = res["identification"], res["baseline_random_face"], res["baseline_no_face"]
    pc = res["prompt_control"]
    lines = [
        "| claim | bar | measured |",
        "|---|---|---|",
        f"| identification, {res['identities']} held-out identities (chance {res['chance']:.2f}) | >= 0.60 (aim 0.80) "
        f"| {idf['accuracy']:.3f} |",
        f"| ... with a random face / no face | about chance | {rnd['accuracy']:.3f} / {non['accuracy']:.3f} |",
        f"| likeness gap | >= 0.30 | {idf['gap']:.3f} |",
        f"| prompt control: background / shirt / style (w = {res['w']}) | >= 0.95 | {pc['background']:.3f} / "
        f"{pc['shirt']:.3f} / {pc['style']:.3f} |",
        f"| trait override ('with blue hair' ...) | >= 0.70 | {res['trait_override']:.3f} |",
        f"| consistency of random characters over 5 prompts | >= 0.80 | {res['consistency']:.3f} |",
        f"| interpolation: similarity to A falls monotonically ({res.get('interpolation_strips', 10)} strips) "
        f"| >= 0.80 | {res['interpolation_monotone']:.3f} |",
    ]
    if "interpolation_world_morphs" in res:
        lines.append(
            "| ... the world's own morphs of the same pairs, judged the same way | what an exact morph scores "
            f"| {res['interpolation_world_morphs']:.3f} |"
        )
    if "interpolation_by_seed" in res:
        b = res["interpolation_by_seed"]
        m, wm = b["model"], b["world_morphs"]
        lines.append(
            f"| ... each of the {b['pairs']} pairs averaged over {b['seeds']} seeds (and its {b['seeds'] * b['pairs']} "
            f"strips one by one), the model / the world's morphs | the judge's noise averaged out "
            f"| {m['pairs_seed_mean']:.3f} ({m['strips']:.3f}) / {wm['pairs_seed_mean']:.3f} ({wm['strips']:.3f}) |"
        )
    if "interpolation_geometry" in res:
        g = res["interpolation_geometry"]
        moves = " / ".join(f"{-x:.3f}" for x in g["mix_change"][1:-1])
        at = ", ".join(f"{t:g}" for t in g["t"][1:-1])
        lines.append(
            f"| ... why the ends are flat: how far the mix at t = {at} moves the conditioning embedder's mean cosine "
            f"to A's portraits, against one photo of a person to another (sd) | where the mix moves less than a "
            f"photo does, a model that draws one person for all their photos draws A "
            f"| {moves} (sd {g['photo_sd']:.3f}) |"
        )
    d = res["debias"]
    for job in DEBIAS_JOBS:
        j = d[job]
        trait, base = j.get("trait", "beard"), j.get("base_rate", d.get("base_rate", 0.0))

        def rate(key: str, j: dict[str, Any] = j) -> str:
            ci = j.get(f"{key}_ci95")
            return f"{j[key]:.2f}" + (f" [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else "")

        n = f", {j['images']} images each, 95% intervals" if "images" in j else ""
        plain = f" (the paper's plain sampling: {rate('debias_plain')})" if "debias_plain" in j else ""
        plain += f"; 'person', the same faces: {rate('neutral')}" if "neutral" in j else ""
        lines.append(
            f"| debias '{job}': {trait} rate, training captions -> text only -> debias (base rate {base:.2f}{n}) "
            f"| debias within a few points of the base rate | {j['training_captions']:.2f} -> {rate('text_only')} -> "
            f"{rate('debias')}{plain} |"
        )
    if "base_words" in res:
        bw = res["base_words"]
        rates = "; ".join(
            f"'{j}' {bw[j]['trait']} {bw[j]['text_only']:.2f} ('person' {bw[j]['person']:.2f})" for j in DEBIAS_JOBS
        )
        lines.append(
            f"| ... the base stage's model, text only ({bw['images']} images a word, the same prompts) | what the "
            f"Face0 stage can build on | {rates} |"
        )
    s = res["speed"]
    plain = f"; plain diffusers, same modules: {s['in_process_plain_s']:.2f} s" if "in_process_plain_s" in s else ""
    lines.append(f"| one 64 px image, 25 steps, in-process | <= 1.5 s | {s['in_process_s']:.2f} s{plain} |")
    slowest = f", slowest of 3 {s['cli_cold_max_s']:.1f} s" if "cli_cold_max_s" in s else ""
    if "cli_cold_plain_s" in s:
        slowest += (
            f"; plain diffusers cold on the same components {s['cli_cold_plain_s']:.1f} s, of it importing the "
            f"libraries {s['cli_cold_plain_import_s']:.1f} s; ratio {s['cli_cold_ratio']:.2f}"
        )
    if s.get("cli_cold_peft"):
        slowest += "; peft installed (the dev extra): diffusers imports it, which a user's install does not"
    lines.append(f"| `face0 generate` cold from the shell, median of 3 | <= 10 s | {s['cli_cold_s']:.1f} s{slowest} |")
    lines += ["", "c / a on stylised prompts (paper §3.4, Fig. 7):", "", "| c | a | style | identification | gap |"]
    lines.append("|---|---|---|---|---|")
    for row in res["c_a_curve"]:
        lines.append(f"| {row['c']} | {row['a']} | {row['style']:.3f} | {row['accuracy']:.3f} | {row['gap']:.3f} |")
    return "\n".join(lines)


__all__ = ["Scorer", "markdown", "scorecard", "speed"]
