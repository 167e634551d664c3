"""face0 eval (paper §4.1-4.3): metric arithmetic, judges, spec errors, and tiny end-to-end runs with resume."""

from __future__ import annotations

import dataclasses
import json
import math
import re
import shutil
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from face0cli.errors import BadInput, EmbedderMismatch, MissingWeights, ParameterError
from face0cli.evaluation.compare import compare
from face0cli.evaluation.judges import (
    JUDGES,
    ClipFaceJudge,
    FaceFinder,
    JudgeContext,
    JudgeUnavailable,
    conditioning_warning,
    is_conditioning_encoder,
    load_clip,
    make_judge,
)
from face0cli.evaluation.metrics import (
    Stat,
    aggregate,
    best_of_n_table,
    cosine,
    face_alignment,
    identified,
    paste_indicator,
    pick_best,
    score_image,
    summarize,
)
from face0cli.evaluation.runner import run_eval
from face0cli.evaluation.spec import EvalSpec, SettingSpec, load_spec
from face0cli.faces.embedders import Detection, pad_resize
from face0cli.generation.generate import read_png_params
from face0cli.generation.grids import make_grid

DIM = 16
EMBEDDER_ID = "tiny/random"  # tiny_pipeline's embedder id


# ------------------------------------------------------------------------------------------ tiny stand-ins


def _pixels16(image: Image.Image) -> np.ndarray:
    """A 4x4 grey thumbnail, centred: a 16-d 'embedding' that changes with the picture."""
    x = np.asarray(image.convert("L").resize((4, 4), Image.Resampling.BILINEAR), np.float32).reshape(-1)
    return x - x.mean()


class TinyEmbedder:
    """Embedder protocol over whole images: the 'face' is the whole picture (conditions tiny_pipeline)."""

    id = EMBEDDER_ID
    dim = DIM

    def detect(self, image: Image.Image) -> list[Detection]:
        return [Detection((0.0, 0.0, float(image.width), float(image.height)), 1.0)]

    def crop(self, image: Image.Image, box: tuple[float, float, float, float]) -> Image.Image:
        return pad_resize(image.convert("RGB"), 160)

    def embed(self, crops: list[Image.Image]) -> np.ndarray:
        return np.stack([_pixels16(c) for c in crops]).astype(np.float32)


class TinyJudge:
    """A judge that sees a face in any image that is not flat; it shares the tiny embedder's network, so the
    report must warn that it is the conditioning encoder."""

    name = "tiny"
    id = "tiny-judge:pixels16"
    encoder_id = EMBEDDER_ID

    def embed_faces(self, images: Sequence[Image.Image]) -> list[np.ndarray | None]:
        out: list[np.ndarray | None] = []
        for im in images:
            v = _pixels16(im)
            out.append(None if float(np.abs(v).max()) < 1.0 else v / np.linalg.norm(v))
        return out


class OtherJudge(TinyJudge):
    name = "tiny2"
    id = "tiny2-judge:pixels16"
    encoder_id = ""


class CountingPipe:
    """Wraps a Face0Pipeline and counts generations; raises Interrupted after `limit` of them."""

    def __init__(self, pipe: Any, limit: int | None = None) -> None:
        self.pipe = pipe
        self.calls = 0
        self.limit = limit

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self.limit is not None and self.calls >= self.limit:
            raise Interrupted("stopped")
        self.calls += 1
        return self.pipe(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.pipe, name)


class Interrupted(Exception):
    pass


@pytest.fixture(scope="module", autouse=True)
def _one_thread() -> Iterator[None]:
    """Tiny models run fastest on one thread, and a shared 2-core machine makes more threads wait on each other."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tiny_pipe() -> Any:
    from face0cli.model.tiny import tiny_pipeline

    return tiny_pipeline(seed=0, embed_dim=DIM)


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny CLIPModel (text and vision towers of width 32, 32x32 images) saved like a hub checkpoint."""
    import torch
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    from face0cli.model.tiny import tiny_tokenizer

    tok = tiny_tokenizer()
    cfg = CLIPConfig(
        text_config={
            "vocab_size": len(tok),
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 1,
            "num_attention_heads": 4,
            "max_position_embeddings": 77,
            "bos_token_id": tok.bos_token_id,
            "eos_token_id": tok.eos_token_id,
            "pad_token_id": tok.pad_token_id,
        },
        vision_config={
            "image_size": 32,
            "patch_size": 8,
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 1,
            "num_attention_heads": 4,
        },
        projection_dim=16,
    )
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("clip") / "tiny-clip"
    CLIPModel(cfg).eval().save_pretrained(path)
    tok.save_pretrained(path)
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def registry() -> Any:
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(JUDGES, "tiny", lambda ctx, opts: TinyJudge())
        mp.setitem(JUDGES, "tiny2", lambda ctx, opts: OtherJudge())
        yield JUDGES


def write_spec(folder: Path, text: str, name: str = "spec.yaml") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


def tiny_run(spec: Path | EvalSpec, out: Path, pipe: Any, **kw: Any) -> Any:
    return run_eval(
        spec,
        out,
        model="tiny-model",
        pipe_loader=lambda m: pipe,
        embedder_loader=lambda eid: TinyEmbedder(),
        show_progress=False,
        **kw,
    )


# ------------------------------------------------------------------------------------------ metric arithmetic


def test_cosine_face_alignment_and_paste_on_hand_made_embeddings() -> None:
    a, b, c = np.array([1.0, 0.0]), np.array([1.0, 1.0]), np.array([0.0, 1.0])
    assert cosine(a, b) == pytest.approx(1 / math.sqrt(2))
    assert cosine(a, c) == pytest.approx(0.0)
    assert cosine(a, -a) == pytest.approx(-1.0)
    assert cosine(a, np.zeros(2)) == 0.0
    with pytest.raises(EmbedderMismatch):
        cosine(a, np.ones(3))
    # face alignment: cosine to the reference, 0 when the generation has no face, mean over several references
    assert face_alignment(b, [a]) == pytest.approx(1 / math.sqrt(2))
    assert face_alignment(None, [a]) == 0.0
    assert face_alignment(b, [a, c]) == pytest.approx(1 / math.sqrt(2))
    assert face_alignment(a, [a, c]) == pytest.approx(0.5)
    # paste: similarity to the conditioning photo minus the mean similarity to the others
    refs = [a, b, c]
    paste, other = paste_indicator(a, refs, used=0)  # type: ignore[misc]
    assert other == pytest.approx((1 / math.sqrt(2) + 0.0) / 2)
    assert paste == pytest.approx(1.0 - other)
    paste_b, _ = paste_indicator(b, refs, used=1)  # type: ignore[misc]
    assert paste_b == pytest.approx(1.0 - 1 / math.sqrt(2))
    assert paste_indicator(None, refs, 0) is None
    assert paste_indicator(a, [a], 0) is None


def test_identification_is_the_nearest_identity_leaving_out_the_conditioning_photo() -> None:
    a, b, c = np.array([1.0, 0.0]), np.array([0.8, 0.6]), np.array([0.0, 1.0])
    # own photos [a, c], conditioned on a: the generation a is nearer the other identity (b: 0.8) than own c (0)
    assert identified(a, [a, c], {"other": [b]}, used=0) is False
    assert identified(c, [a, c], {"other": [b]}, used=0) is True  # c: 1.0 to own c, 0.6 to b
    # a character (used None) or a single photo: every own photo counts
    assert identified(a, [a, c], {"other": [b]}, used=None) is False  # mean 0.5 < 0.8
    assert identified(a, [a], {"other": [b]}, used=0) is True
    # every rival must be beaten, a tie is not identification; no face or no rival: undefined
    assert identified(a, [a], {"x": [b], "y": [a]}, used=None) is False
    assert identified(None, [a], {"x": [b]}, used=None) is None
    assert identified(a, [a], {}, used=None) is None
    s = score_image(None, None, {"j": c}, {"j": [a, c]}, used=0, rivals={"j": {"other": [b]}})
    assert s["judges"]["j"]["identified"] is True
    assert score_image(None, None, {"j": c}, {"j": [a, c]}, used=0)["judges"]["j"]["identified"] is None


def test_mean_std_and_best_of_n() -> None:
    s = summarize([1.0, 2.0, None, 3.0])
    assert (s.mean, s.n) == (pytest.approx(2.0), 3)
    assert s.std == pytest.approx(math.sqrt(2 / 3))  # population std
    assert s.fmt() == "2.000 ± 0.816"
    assert summarize([None]) == Stat(None, None, 0) and Stat(None, None, 0).fmt() == "—"
    cands = [{"overall": 0.5, "face": 0.1}, {"overall": 0.9, "face": 0.0}, {"overall": 0.9, "face": 0.3}]
    assert pick_best(cands) == 1  # ties go to the first
    assert pick_best([{"overall": None, "face": 0.2}, {"overall": None, "face": 0.4}]) == 1  # text off: by face

    def rec(ident: str, pi: int, tag: str, seed: int, text: float, face: float) -> dict[str, Any]:
        j = {"face": face, "found": True, "overall": text + face, "paste": None, "face_other": None}
        return {"setting": "s", "identity": ident, "group": "", "prompt_index": pi, "tag": tag, "seed": seed,
                "scores": {"text": text, "judges": {"j": j}}}  # fmt: skip

    records = [
        rec("a", 0, "photo-real", 0, 0.2, 0.5),
        rec("a", 0, "photo-real", 1, 0.3, 0.1),  # best overall of group (a, 0) is seed 0: 0.7
        rec("a", 1, "artistic", 0, 0.1, 0.1),
        rec("a", 1, "artistic", 1, 0.4, 0.4),  # best of (a, 1): seed 1: 0.8
    ]

    fake = EvalSpec(identities=(), prompts=(), seeds=(0, 1), settings=(SettingSpec("s"),), judges=())
    agg = aggregate(records, fake, ["j"])["s"]["j"]
    assert agg["all"]["overall"]["mean"] == pytest.approx((0.7 + 0.4 + 0.2 + 0.8) / 4)
    assert agg["tag:artistic"]["face"]["mean"] == pytest.approx(0.25)
    assert agg["identity:a"]["text"]["n"] == 4
    best = best_of_n_table(records, fake, ["j"])["s"]["j"]
    assert best["all"]["overall"]["mean"] == pytest.approx((0.7 + 0.8) / 2)
    assert best["all"]["overall"]["n"] == 2
    assert best["all"]["text"]["mean"] == pytest.approx((0.2 + 0.4) / 2)  # the picked seeds' text scores
    assert best["tag:photo-real"]["face"]["mean"] == pytest.approx(0.5)


# --------------------------------------------------------------------------------------------------- judges


def test_no_face_scores_zero_and_a_real_face_is_embedded(clip_dir: Path, photo_dir: Path) -> None:
    from face0cli.faces.images import load_image

    clip = load_clip(clip_dir)
    judge = ClipFaceJudge(clip, FaceFinder())
    flat = Image.new("RGB", (256, 256), (128, 128, 128))
    astronaut = load_image(photo_dir / "astronaut.jpg")
    none, vec = judge.embed_faces([flat, astronaut])
    assert none is None
    assert vec is not None and vec.shape == (16,) and np.linalg.norm(vec) == pytest.approx(1.0, abs=1e-5)
    scores = score_image(None, None, {"clip-face": none}, {"clip-face": [vec, vec]}, used=0)
    assert scores["judges"]["clip-face"] == {
        "face": 0.0,
        "found": False,
        "overall": None,
        "paste": None,
        "face_other": None,
        "identified": None,  # no face: neither identified nor not
    }
    text = clip.embed_texts(["a photo of a person"])[0]
    image = clip.embed_images([astronaut])[0]
    scores = score_image(text, image, {"clip-face": vec}, {"clip-face": [vec]}, used=0)
    assert scores["text"] == pytest.approx(float(text @ image), abs=1e-5)
    assert scores["judges"]["clip-face"]["face"] == pytest.approx(1.0, abs=1e-5)
    assert scores["judges"]["clip-face"]["overall"] == pytest.approx(scores["text"] + 1.0, abs=1e-5)


@pytest.mark.slow
def test_facenet_judge_with_the_model_weights_is_the_conditioning_encoder(
    embedder_weights: Path, photo_dir: Path
) -> None:
    from face0cli.faces.embedders import FacenetEmbedder
    from face0cli.faces.images import load_image

    ctx = JudgeContext(embedder_weights=embedder_weights, clip_id=None)
    judge = make_judge("facenet", {}, ctx)
    conditioning = FacenetEmbedder(weights=embedder_weights)
    assert is_conditioning_encoder(judge, conditioning.id)
    assert "conditioning encoder" in conditioning_warning(judge, conditioning.id)
    assert not is_conditioning_encoder(judge, "inception-resnet-v1/vggface2")
    [vec] = judge.embed_faces([load_image(photo_dir / "grace_hopper.jpg")])
    assert vec is not None and vec.shape == (512,)  # the full network, not the 1792-d conditioning features
    assert np.linalg.norm(vec) == pytest.approx(1.0, abs=1e-5)
    with pytest.raises(BadInput, match="no option 'model'"):
        make_judge("facenet", {"model": "x"}, ctx)


def test_dlib_judge_names_the_install_command_when_missing() -> None:
    import importlib.util

    if importlib.util.find_spec("dlib") and importlib.util.find_spec("face_recognition_models"):
        pytest.skip("dlib is installed here")
    with pytest.raises(JudgeUnavailable, match="pip install dlib face-recognition-models"):
        make_judge("dlib", {}, JudgeContext(clip_id=None))


def test_load_clip_missing_says_which_model_and_how_to_turn_it_off(tmp_path: Path) -> None:
    with pytest.raises(MissingWeights) as e:
        load_clip(tmp_path / "no-such-clip")
    assert "clip: null" in str(e.value) and "no-such-clip" in str(e.value)
    with pytest.raises(MissingWeights) as e:
        load_clip("someone/not-cached-clip")  # HF_HUB_OFFLINE=1 in tests
    msg = str(e.value)
    assert "someone/not-cached-clip" in msg and "clip: null" in msg and len(msg.splitlines()) == 1


# -------------------------------------------------------------------------------------------------- spec


GOOD = """\
name: t
identities:
  ann: {photos: [PHOTOS/astronaut.jpg, PHOTOS/grace_hopper.jpg], group: g1}
prompts:
  - a photo of a person
  - {text: a painting of a person, tag: artistic}
seeds: [0, 1]
settings:
  base: {steps: 2}
"""


@pytest.mark.parametrize(
    ("old", "new", "needles"),
    [
        ("seeds: [0, 1]", "seed: [0, 1]", ["line 7", "did you mean 'seeds'"]),
        ("tag: artistic}", "tag: cartoon}", ["line 6", "prompts[1].tag", "photo-real, artistic", "cartoon"]),
        ("seeds: [0, 1]", "seeds: [0, -1]", ["line 7", "seeds[1]", ">= 0"]),
        ("grace_hopper.jpg]", "nobody.jpg]", ["line 3", "identities.ann.photos[1]", "nobody.jpg does not exist"]),
        ("{steps: 2}", "{steps: 2, guidance: 3}", ["line 9", "settings.base.guidance", "unknown field"]),
        ("{steps: 2}", "{steps: 0}", ["settings.base.steps", ">= 1"]),
        ("{steps: 2}", "{scheduler: lms}", ["settings.base.scheduler", "ddim"]),
        ("{steps: 2}", "{artistic: {c: x}}", ["settings.base.artistic.c", "finite number"]),
        ("group: g1}", "condition: 5}", ["identities.ann.condition", "between 0 and 1"]),
        ("settings:", "judges: [facenett]\nsettings:", ["judges[0]", "did you mean 'facenet'"]),
        ("  - a photo of a person", "  - a photo of a person\n  - [oops", ["not valid YAML", "line"]),
        ("name: t\n", "name: t\nidentities: 3\n", ["line 3", "(identities)", "given twice"]),
        ("{steps: 2}", "{size: 500}", ["settings.base.size", "multiples of 8"]),
    ],
)
def test_bad_specs_name_the_line_and_field(
    tmp_path: Path, photo_dir: Path, registry: Any, old: str, new: str, needles: list[str]
) -> None:
    good = GOOD.replace("PHOTOS", str(photo_dir))
    assert old in good
    path = write_spec(tmp_path, good.replace(old, new, 1))
    with pytest.raises(BadInput) as e:
        load_spec(path)
    msg = str(e.value)
    assert len(msg.splitlines()) == 1 and msg.startswith(str(path)), msg
    for n in needles:
        assert n in msg, msg


def test_spec_forms_yaml_and_json(tmp_path: Path, photo_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = load_spec(write_spec(tmp_path, GOOD.replace("PHOTOS", str(photo_dir))))
    assert [p.tag for p in spec.prompts] == ["photo-real", "artistic"]
    assert spec.identities[0].photos[1].name == "grace_hopper.jpg" and spec.identities[0].group == "g1"
    assert spec.settings[0].sample.steps == 2 and spec.settings[0].sample.c == 1.0  # the paper's defaults elsewhere
    assert [j.name for j in spec.judges] == ["clip-face"] and spec.clip == "openai/clip-vit-large-patch14"
    # relative photos are relative to the spec; JSON works too; seeds: N means 0..N-1; clip: null turns text off
    shutil.copy(photo_dir / "astronaut.jpg", tmp_path / "me.jpg")
    data = {"identities": {"me": "me.jpg"}, "prompts": ["a photo"], "seeds": 3, "clip": None,
            "settings": {"s": {"c": 0.5, "size": "64x32", "artistic": {"c": 0.4}}}}  # fmt: skip
    spec = load_spec(write_spec(tmp_path, json.dumps(data), "spec.json"))
    assert spec.identities[0].photos == ((tmp_path / "me.jpg").resolve(),)
    assert spec.seeds == (0, 1, 2) and spec.clip is None
    s = spec.settings[0]
    assert (s.sample.height, s.sample.width) == (32, 64)
    assert s.for_tag("artistic").sample.c == 0.4 and s.for_tag("photo-real").sample.c == 0.5
    with pytest.raises(BadInput, match="does not exist"):
        load_spec(tmp_path / "missing.yaml")
    # a judge's weights or model are relative to the spec's folder too; a text that is no path there stays as given
    (tmp_path / "judge").mkdir()
    data["judges"] = [{"name": "facenet", "weights": "judge"}, {"name": "clip-face", "model": "org/clip"}]
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    spec = load_spec(write_spec(tmp_path, json.dumps(data), "spec.json"))
    assert dict(spec.judges[0].options) == {"weights": str((tmp_path / "judge").resolve())}
    assert dict(spec.judges[1].options) == {"model": "org/clip"}
    data["identities"] = 3
    with pytest.raises(BadInput, match=r"spec.json \(identities\): identities must map names"):
        load_spec(write_spec(tmp_path, json.dumps(data), "spec.json"))


# ------------------------------------------------------------------------------------------------ end to end


@pytest.fixture(scope="module")
def e2e(tmp_path_factory: pytest.TempPathFactory, tiny_pipe: Any, clip_dir: Path, photo_dir: Path, registry: Any):
    """16 images: 2 settings x 2 identities x 2 prompts (one per tag) x 2 seeds, judged by tiny and clip-face."""
    root = tmp_path_factory.mktemp("e2e")
    spec = write_spec(
        root,
        f"""\
name: tiny-e2e
clip: {clip_dir}
identities:
  ann:
    photos: [{photo_dir}/astronaut.jpg, {photo_dir}/grace_hopper.jpg]
    group: g1
  bob: {photo_dir}/grace_hopper.jpg
prompts:
  - {{text: a photo of a person, tag: photo-real}}
  - {{text: a painting of a person, tag: artistic}}
seeds: [0, 1]
settings:
  base: {{steps: 2}}
  styl: {{steps: 2, w: 3.0, artistic: {{c: 0.5}}}}
judges: [tiny, clip-face]
""",
    )
    pipe = CountingPipe(tiny_pipe)
    heard: list[str] = []
    res = tiny_run(spec, root / "out", pipe, on_warning=heard.append)
    assert heard == res.warnings
    return res, pipe, root / "out"


def _md_rows(text: str, heading: str) -> list[list[str]]:
    """The body rows of the markdown table right after the line starting with HEADING."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(heading))
    rows = []
    for line in lines[start + 1 :]:
        if line.startswith("#"):
            break
        if line.startswith("| ") and not line.startswith("| setting"):
            rows.append([c.strip() for c in line.strip("|").split("|")])
    return rows


def test_end_to_end_writes_scores_tables_and_contact_sheet(e2e: Any) -> None:
    res, pipe, out = e2e
    assert pipe.calls == 16 and res.generated == 16
    data = json.loads((out / "results.json").read_text())
    assert data["format"] == "face0-eval" and len(data["images"]) == 16
    assert [j["name"] for j in data["judges"]] == ["tiny", "clip-face"] and data["primary_judge"] == "tiny"
    for r in data["images"]:
        png = out / r["path"]
        assert png.is_file()
        params = read_png_params(png)
        assert params["seed"] == r["seed"] and params["prompt"] == r["prompt"] and params["eval"]["key"] == r["key"]
        expected_c = 0.5 if (r["setting"], r["tag"]) == ("styl", "artistic") else 1.0
        assert r["params"]["c"] == params["c"] == expected_c
        text = r["scores"]["text"]
        assert -1.0 <= text <= 1.0
        for s in r["scores"]["judges"].values():
            assert s["overall"] == pytest.approx(text + s["face"])
            if not s["found"]:
                assert s["face"] == 0.0 and s["paste"] is None
        tiny = r["scores"]["judges"]["tiny"]
        assert tiny["found"]
        assert (tiny["paste"] is not None) == (r["identity"] == "ann")  # two photos -> paste indicator
    # aggregates: scopes and counts
    agg = data["aggregates"]["base"]["tiny"]
    assert agg["all"]["face"]["n"] == 8 and agg["tag:artistic"]["face"]["n"] == 4
    assert agg["group:g1"]["face"]["n"] == 4 and agg["identity:bob"]["paste"]["n"] == 0
    assert agg["group:bob"]["face"]["n"] == 4  # an identity without a group is its own group
    assert agg["all"]["found"]["mean"] == 1.0  # the tiny judge sees a face in every generation
    # identification between ann and bob: defined for every image (a face and a rival), a rate
    marks = [r["scores"]["judges"]["tiny"]["identified"] for r in data["images"] if r["setting"] == "base"]
    assert all(isinstance(m, bool) for m in marks) and agg["all"]["identified"]["n"] == 8
    assert agg["all"]["identified"]["mean"] == pytest.approx(float(np.mean(marks)))
    faces = [r["scores"]["judges"]["tiny"]["face"] for r in data["images"] if r["setting"] == "base"]
    assert agg["all"]["face"]["mean"] == pytest.approx(float(np.mean(faces)))
    assert agg["all"]["face"]["std"] == pytest.approx(float(np.std(faces)))
    best = data["best_of_n"]["base"]["tiny"]["all"]["overall"]
    assert best["n"] == 4 and best["mean"] >= agg["all"]["overall"]["mean"] - 1e-9
    # table.md equals the aggregates
    md = (out / "table.md").read_text()
    for judge in ("tiny", "clip-face"):
        rows = _md_rows(md, f"## Table 1 — judge `{judge}`")
        assert [r[0] for r in rows] == ["base", "styl"]
        for row in rows:
            cells = iter(row[1:])
            for scope in ("tag:photo-real", "tag:artistic", "all"):
                for metric in ("text", "face", "overall"):
                    st = data["aggregates"][row[0]][judge][scope][metric]
                    assert next(cells) == f"{st['mean']:.3f} ± {st['std']:.3f}"
        rows = _md_rows(md, f"### Table 2 — best of N = 2 seeds against the average (judge `{judge}`)")
        for row in rows:
            st = data["best_of_n"][row[0]][judge]["all"]["overall"]
            assert row[6] == f"{st['mean']:.3f} ± {st['std']:.3f}"
    assert "Faces found in the generations (no face scores 0): base 100% of 8, styl 100% of 8." in md
    rate = {s: data["aggregates"][s]["tiny"]["all"]["identified"]["mean"] for s in ("base", "styl")}
    assert f"chance 50%): base {rate['base']:.0%} of 8, styl {rate['styl']:.0%} of 8." in md
    group_rows = _md_rows(md, "### Face alignment by group (judge `tiny`)")
    st = data["aggregates"]["styl"]["tiny"]["group:bob"]["face"]
    assert group_rows[1] == ["styl", group_rows[1][1], f"{st['mean']:.3f} ± {st['std']:.3f}"]
    paste_rows = _md_rows(md, "### Copy-paste indicator (judge `tiny`")
    st = data["aggregates"]["base"]["tiny"]["all"]["paste"]
    assert paste_rows[0][:2] == ["base", f"{st['mean']:.3f} ± {st['std']:.3f}"] and paste_rows[0][3] == "4"
    # contact sheet: rows = settings x identities, columns = reference + prompts x seeds
    layout = data["contact_sheet"]
    assert (layout["rows"], layout["cols"]) == (4, 5)
    sheet = Image.open(out / "contact_sheet.png")
    blank = [Image.new("RGB", (128, 128))] * 20
    expected = make_grid(
        blank, 4, 5, row_labels=layout["row_labels"], col_labels=layout["col_labels"], title="t", tile=128
    )
    assert sheet.size == expected.size
    assert read_png_params(out / "contact_sheet.png")["rows"] == 4


def test_report_warns_when_a_judge_is_the_conditioning_encoder(e2e: Any) -> None:
    res, _, out = e2e
    data = json.loads((out / "results.json").read_text())
    flags = {j["name"]: j["conditioning_encoder"] for j in data["judges"]}
    assert flags == {"tiny": True, "clip-face": False}
    assert any("'tiny'" in w and "conditioning encoder" in w and "inflated" in w for w in data["warnings"])
    md = (out / "table.md").read_text()
    assert md.count("**WARNING:**") >= 2 and "tiny/random" in md


def test_compare_side_by_side_with_differences(e2e: Any, tmp_path: Path) -> None:
    from rich.console import Console

    _, _, out = e2e
    a = out / "results.json"
    data = json.loads(a.read_text())
    data["aggregates"]["base"]["tiny"]["all"]["face"]["mean"] += 0.125
    data["clip"] = "another/clip"
    b = tmp_path / "b.json"
    b.write_text(json.dumps(data))
    table, result = compare(a, b)
    rows = {(r["setting"], r["judge"], r["scope"], r["metric"]): r for r in result["rows"]}
    assert rows[("base", "tiny", "all", "face")]["diff"] == pytest.approx(0.125)
    assert rows[("base", "tiny", "all", "text")]["diff"] == pytest.approx(0.0)
    assert rows[("styl", "clip-face", "tag:artistic", "overall")]["diff"] == pytest.approx(0.0)
    assert ("base", "tiny", "best of 2/2", "overall") in rows and ("base", "tiny", "all", "paste") in rows
    assert rows[("base", "tiny", "all", "identified")]["diff"] == pytest.approx(0.0)
    assert any("different CLIP" in w for w in result["warnings"])
    assert result["only_in_a"] == result["only_in_b"] == []
    from rich.text import Text

    console = Console(record=True, width=200, markup=False)  # as face0's console: plain text, styled Text
    console.print(table)
    shown = console.export_text()
    assert "B − A" in shown and "+0.125" in shown
    diffs = [c for c in table.columns[-1].cells if isinstance(c, Text)]
    assert any(c.plain == "+0.125" and c.style == "green" for c in diffs)  # styled without markup
    assert any(c.plain == "+0.000" and c.style == "white" for c in diffs)
    (tmp_path / "other.json").write_text('{"format": "something-else"}')
    with pytest.raises(BadInput, match="not a results.json written by face0 eval"):
        compare(a, tmp_path / "other.json")
    with pytest.raises(BadInput, match="not valid JSON"):
        compare(out / "table.md", a)


def test_batched_runs_render_the_same_images_in_fewer_calls(
    tmp_path: Path, tiny_pipe: Any, photo_dir: Path, registry: Any
) -> None:
    """--batch N: up to N images of one setting per pipeline call, each with its own seed; the same images (to
    float rounding) and keys as one at a time, and a resumed batched run reuses them."""
    from face0cli.faces.images import load_image

    spec = write_spec(
        tmp_path,
        f"""\
clip: null
identities:
  ann: [{photo_dir}/astronaut.jpg, {photo_dir}/grace_hopper.jpg]
  bob: {photo_dir}/grace_hopper.jpg
prompts: [a photo of a person, {{text: a painting of a person, tag: artistic}}]
seeds: 2
settings: {{base: {{steps: 2}}, styl: {{steps: 2, artistic: {{c: 0.5}}}}}}
judges: [tiny]
""",
    )
    one_pipe, many_pipe = CountingPipe(tiny_pipe), CountingPipe(tiny_pipe)
    one = tiny_run(spec, tmp_path / "one", one_pipe)
    many = tiny_run(spec, tmp_path / "many", many_pipe, batch=3)
    assert one_pipe.calls == 16 and many.generated == 16
    # per setting: 8 images, the styl setting splits at the tag (c = 0.5 for the artistic prompt): 3 + 3 + 2 for
    # base; for styl, runs of 2 (one identity's photo prompt seeds) alternate with 2 (its artistic ones)
    assert many_pipe.calls == 3 + 4
    assert [r["key"] for r in many.images] == [r["key"] for r in one.images]
    for a, b in zip(one.images, many.images):
        x = np.asarray(load_image(tmp_path / "one" / a["path"]), np.int16)
        y = np.asarray(load_image(tmp_path / "many" / b["path"]), np.int16)
        assert np.abs(x - y).max() <= 2, a["path"]  # float rounding in the batched UNet, not another image
    again = CountingPipe(tiny_pipe)
    res = tiny_run(spec, tmp_path / "many", again, batch=3)
    assert again.calls == 0 and res.reused == 16
    with pytest.raises(ParameterError, match="--batch"):
        tiny_run(spec, tmp_path / "x", again, batch=0)


class StepsPipe(CountingPipe):
    """A CountingPipe whose model records its own sampling steps (face0.json `steps`); keeps the steps asked."""

    def __init__(self, pipe: Any, steps: int | None) -> None:
        super().__init__(pipe)
        self.face0_config = dataclasses.replace(pipe.face0_config, steps=steps)
        self.asked: list[int] = []

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.asked.append(kwargs["num_inference_steps"])
        return super().__call__(*args, **kwargs)


def test_settings_without_steps_sample_at_the_models_steps(
    tmp_path: Path, tiny_pipe: Any, photo_dir: Path, registry: Any
) -> None:
    """As `face0 generate`: a setting that names no steps (and no settings at all) samples at the model's
    face0.json steps, 50 for a model without them; steps given in a setting or a tag override are kept."""
    spec = write_spec(
        tmp_path,
        f"""\
clip: null
identities:
  ann: [{photo_dir}/astronaut.jpg, {photo_dir}/grace_hopper.jpg]
prompts: [a photo of a person, {{text: a painting of a person, tag: artistic}}]
seeds: 1
settings: {{own: {{c: 1.0}}, given: {{steps: 3}}, tagged: {{artistic: {{steps: 1}}}}}}
judges: [tiny]
""",
    )
    pipe = StepsPipe(tiny_pipe, steps=2)
    res = tiny_run(spec, tmp_path / "out", pipe)
    assert pipe.asked == [2, 2, 3, 3, 2, 1]  # own, own, given, given, tagged photo, tagged artistic
    assert [r["params"]["steps"] for r in res.images] == [2, 2, 3, 3, 2, 1]
    spec_json = json.loads(Path(res.results_json).read_text())["spec"]
    assert [s.get("steps_from_model", False) for s in spec_json["settings"]] == [True, False, True]
    # a run of the same spec on a model measured at other steps is other images (their keys say the steps)
    other = StepsPipe(tiny_pipe, steps=None)
    res2 = tiny_run(spec, tmp_path / "out", other)
    assert other.asked == [50, 50, 50] and res2.reused == 3  # `given`'s and the steps-1 artistic one reused
    # no settings at all: the default setting follows the model too
    bare = write_spec(tmp_path, spec.read_text().replace("settings: ", "# settings: "), name="bare.yaml")
    pipe = StepsPipe(tiny_pipe, steps=2)
    tiny_run(bare, tmp_path / "bare", pipe)
    assert pipe.asked == [2, 2]


def test_render_batch_is_render_per_request_up_to_rounding(tiny_pipe: Any) -> None:
    from face0cli.config import SampleConfig
    from face0cli.generation.generate import Face, Request, render, render_batch

    rng = np.random.default_rng(0)
    sample = SampleConfig(steps=3)
    reqs = [
        Request(prompt=p, face=Face(rng.standard_normal(DIM).astype(np.float32), f"f{k}"), seed=k, sample=sample)
        for k, p in enumerate(["a photo of a person", "a painting of a person", "a photo of a person"])
    ]
    steps: list[int] = []
    batched = render_batch(tiny_pipe, reqs, on_step=lambda: steps.append(1))
    assert len(steps) == 3 * 3  # once per image and step, as render's
    for req, (image, info) in zip(reqs, batched):
        ((_, alone, info_alone),) = list(render(tiny_pipe, req))
        diff = np.abs(np.asarray(image, np.int16) - np.asarray(alone, np.int16))
        assert diff.max() <= 2 and info == info_alone | {"batch": 3}
    assert np.abs(np.asarray(batched[0][0], np.int16) - np.asarray(batched[2][0], np.int16)).max() > 10  # seeds
    with pytest.raises(ParameterError, match="same sampler settings"):
        render_batch(tiny_pipe, [reqs[0], reqs[1].replace(c=0.5)])
    # no face for all: one batched call too; a face beside no face: one call each, counted the same
    bare = [r.replace(face=Face(None, "none")) for r in reqs]
    for group, batch in ((bare, 3), ([bare[0], reqs[1]], None)):
        steps.clear()
        done = render_batch(tiny_pipe, group, on_step=lambda: steps.append(1))
        assert len(steps) == 3 * len(group) and [info.get("batch") for _, info in done] == [batch] * len(group)
        for req, (image, _) in zip(group, done):
            ((_, alone, _),) = list(render(tiny_pipe, req))
            assert np.abs(np.asarray(image, np.int16) - np.asarray(alone, np.int16)).max() <= 2


@pytest.mark.slow
def test_resume_reuses_finished_images(tmp_path: Path, tiny_pipe: Any, photo_dir: Path, registry: Any) -> None:
    spec = write_spec(
        tmp_path,
        f"""\
clip: null
identities:
  ann: [{photo_dir}/astronaut.jpg, {photo_dir}/grace_hopper.jpg]
prompts: [a photo of a person, {{text: a painting of a person, tag: artistic}}]
seeds: 3
settings: {{base: {{steps: 2}}}}
judges: [tiny]
""",
    )
    out = tmp_path / "out"
    first = CountingPipe(tiny_pipe, limit=4)
    with pytest.raises(Interrupted):
        tiny_run(spec, out, first)
    assert first.calls == 4
    assert len((out / "results.jsonl").read_text().splitlines()) == 4
    with (out / "results.jsonl").open("a") as f:
        f.write('{"key": "torn')  # a crash mid-write leaves a partial line

    second = CountingPipe(tiny_pipe)
    res = tiny_run(spec, out, second)
    assert second.calls == 2 and (res.generated, res.reused, res.rescored) == (2, 4, 0)
    assert any("text alignment is off" in w for w in res.warnings)
    assert all(r["scores"]["text"] is None and r["scores"]["judges"]["tiny"]["overall"] is None for r in res.images)
    first_scores = {r["key"]: r["scores"] for r in res.images}

    third = CountingPipe(tiny_pipe)
    res = tiny_run(spec, out, third)
    assert third.calls == 0 and (res.generated, res.reused) == (0, 6)
    assert {r["key"]: r["scores"] for r in res.images} == first_scores

    # another judge: the images are kept and rescored from their PNGs
    spec.write_text(spec.read_text().replace("judges: [tiny]", "judges: [tiny, tiny2]"))
    fourth = CountingPipe(tiny_pipe)
    res = tiny_run(spec, out, fourth)
    assert fourth.calls == 0 and res.rescored == 6
    assert all(set(r["scores"]["judges"]) == {"tiny", "tiny2"} for r in res.images)
    assert {r["key"]: r["scores"]["judges"]["tiny"] for r in res.images} == {
        k: s["judges"]["tiny"] for k, s in first_scores.items()
    }

    # a changed setting is a new image; resume=False starts over
    spec.write_text(spec.read_text().replace("{steps: 2}", "{steps: 3}"))
    fifth = CountingPipe(tiny_pipe)
    assert tiny_run(spec, out, fifth).generated == 6 and fifth.calls == 6
    sixth = CountingPipe(tiny_pipe)
    assert tiny_run(spec, out, sixth, resume=False).generated == 6
    assert len(list((out / "images" / "base").glob("*.png"))) == 12  # two parameter sets, six images each


def test_character_identity_uses_the_library_vector(
    tmp_path: Path, tiny_pipe: Any, photo_dir: Path, registry: Any
) -> None:
    from face0cli.library.store import Character, FaceStore

    store = FaceStore(tmp_path / "lib.h5")
    vec = np.random.default_rng(0).standard_normal(DIM).astype(np.float32)
    source = {"sources": [{"source": str(photo_dir / "astronaut.jpg")}]}
    store.add(Character.new("alice", vec, EMBEDDER_ID, "photo", source))
    store.add(Character.new("eve", vec, "other/embedder", "photo", source))
    text = """\
clip: null
identities: {al: {character: alice}}
prompts: [a photo of a person]
seeds: [7]
settings: {s: {steps: 1}}
judges: [tiny]
"""
    res = tiny_run(write_spec(tmp_path, text), tmp_path / "out", tiny_pipe, store=store)
    [r] = res.images
    assert r["conditioning"]["kind"] == "character" and r["conditioning"]["name"] == "alice"
    assert r["scores"]["judges"]["tiny"]["paste"] is None  # a character is not one photo
    params = read_png_params(tmp_path / "out" / r["path"])
    assert params["face"]["source"]["kind"] == "character"
    assert re.fullmatch(r"images/s/al-p00-s7-[0-9a-f]{10}\.png", r["path"])
    with pytest.raises(EmbedderMismatch, match="other/embedder"):
        tiny_run(write_spec(tmp_path, text.replace("alice", "eve")), tmp_path / "out2", tiny_pipe, store=store)
    store.add(Character.new("nobody", vec, EMBEDDER_ID, "random", {"seed": 1}))
    with pytest.raises(BadInput, match="no reference photo"):
        tiny_run(write_spec(tmp_path, text.replace("alice", "nobody")), tmp_path / "out3", tiny_pipe, store=store)


def test_the_example_spec_parses(tmp_path: Path, photo_dir: Path) -> None:
    example = Path(__file__).resolve().parents[1] / "examples" / "eval-spec.yaml"
    text = example.read_text()
    photos = tmp_path / "photos"
    photos.mkdir()
    for name in re.findall(r"photos/([\w.-]+\.jpg)", text):
        shutil.copy(photo_dir / "astronaut.jpg", photos / name)
    spec = load_spec(write_spec(tmp_path, text, "eval-spec.yaml"))
    assert [i.name for i in spec.identities] == ["grace", "ann", "alice"]
    assert spec.identities[2].character == "alice" and spec.identities[1].group == "women"
    assert {p.tag for p in spec.prompts} == {"photo-real", "artistic"} and spec.seeds == (0, 1, 2, 3)
    paper = spec.settings[0]
    assert paper.for_tag("artistic").sample.c == 0.55 and paper.for_tag("photo-real").sample.c == 1.0
    assert [j.name for j in spec.judges] == ["clip-face", "facenet"]


# ------------------------------------------------------------------------------------------------ the CLI


@pytest.mark.slow
def test_eval_command_and_compare(
    tmp_path: Path, clip_dir: Path, photo_dir: Path, embedder_weights: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """face0 eval SPEC --out DIR on a saved model directory with real judges, then face0 eval compare."""
    import dataclasses
    import json

    from typer.testing import CliRunner

    from face0cli.cli.app import app
    from face0cli.faces.embedders import FacenetEmbedder
    from face0cli.model.tiny import tiny_pipeline

    pipe = tiny_pipeline(seed=0, embed_dim=1792)
    pipe.face0_config = dataclasses.replace(pipe.face0_config, embedder_id=FacenetEmbedder(weights=embedder_weights).id)
    pipe.save_pretrained(tmp_path / "model")
    monkeypatch.setenv("FACE0_EMBEDDER_WEIGHTS", str(embedder_weights))
    runner = CliRunner()
    outs = []
    for steps in (1, 2):
        spec = write_spec(
            tmp_path,
            f"""\
clip: {clip_dir}
identities:
  bob: {photo_dir}/grace_hopper.jpg
prompts:
  - {{text: a photo of a person, tag: photo-real}}
seeds: [0, 1]
settings:
  base: {{steps: {steps}}}
judges: [facenet, clip-face]
""",
            name=f"spec{steps}.yaml",
        )
        out = tmp_path / f"out{steps}"
        r = runner.invoke(app, ["eval", str(spec), "--out", str(out), "--model", str(tmp_path / "model"), "--json"])
        assert r.exit_code == 0, r.output
        res = json.loads(r.stdout)
        assert len(res["images"]) == 2
        assert (out / "results.json").exists() and (out / "table.md").exists() and (out / "contact_sheet.png").exists()
        assert any("conditioning" in w for w in res["warnings"])  # facenet with the model's own weights
        outs.append(out / "results.json")
    r = runner.invoke(app, ["eval", "compare", str(outs[0]), str(outs[1]), "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["rows"]
    r = runner.invoke(app, ["eval", "compare", str(outs[0])])
    assert r.exit_code != 0 and r.stderr.startswith("error:")


def test_judges_given_to_the_run_replace_the_specs(
    tmp_path: Path, tiny_pipe: Any, photo_dir: Path, registry: Any
) -> None:
    spec = write_spec(
        tmp_path,
        f"""\
clip: null
identities: {{ann: {photo_dir}/astronaut.jpg}}
prompts: [a photo of a person]
seeds: 1
settings: {{base: {{steps: 2}}}}
judges: [tiny]
""",
    )
    res = tiny_run(spec, tmp_path / "out", CountingPipe(tiny_pipe), judges=["tiny2", "tiny2"])
    assert [j["name"] for j in res.judges] == ["tiny2"]
    assert set(res.images[0]["scores"]["judges"]) == {"tiny2"}
    with pytest.raises(BadInput, match="no judge named 'nope'"):
        tiny_run(spec, tmp_path / "out2", CountingPipe(tiny_pipe), judges=["nope"])


def test_eval_help_shows_run_compare_and_the_judges() -> None:
    from typer.testing import CliRunner

    from face0cli.cli.app import app
    from face0cli.cli.evaluating import BUILTIN_JUDGES

    runner = CliRunner()
    assert tuple(sorted(k for k in JUDGES if not k.startswith("tiny"))) == BUILTIN_JUDGES
    r = runner.invoke(app, ["eval", "--help"])
    assert r.exit_code == 0 and "run" in r.stdout and "compare" in r.stdout
    r = runner.invoke(app, ["eval", "run", "--help"], env={"COLUMNS": "200"})
    assert r.exit_code == 0 and "--judge" in r.stdout and "--batch" in r.stdout
    assert all(name in r.stdout for name in BUILTIN_JUDGES)


def test_eval_batch_below_one_is_one_line_before_anything_loads(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from face0cli.cli.app import app
    from tests.test_cli import assert_clean_error

    spec = Path(__file__).resolve().parents[1] / "examples" / "eval-synthetic.yaml"
    r = CliRunner().invoke(app, ["eval", "run", str(spec), "--out", str(tmp_path / "out"), "--batch", "0"])
    assert_clean_error(r, "--batch must be a whole number >= 1")
    assert not (tmp_path / "out").exists()
