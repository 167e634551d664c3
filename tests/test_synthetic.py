"""The synthetic world: portraits, captions, the data set and its split, the embedder and judge networks, the
default model's tokenizer and architecture, and the training options of the base-model stage."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from face0cli.synthetic import nets, scorecard
from face0cli.synthetic.portraits import (
    COLOURS,
    HAIR_OVERRIDE,
    STYLES,
    caption_words,
    make_identity,
    render,
    sample,
)
from face0cli.synthetic.world import WorldConfig, read_truth, write_world


def test_identity_and_images_are_seeded_and_differ_by_nuisance() -> None:
    a, b = make_identity(3, seed=0), make_identity(3, seed=0)
    assert a == b and make_identity(4, seed=0) != a
    s0, s1 = sample(a, 0), sample(a, 1)
    assert np.array_equal(np.asarray(render(s0.identity, s0.scene)), np.asarray(render(a, sample(b, 0).scene)))
    img0, img1 = np.asarray(render(a, s0.scene)), np.asarray(render(a, s1.scene))
    assert img0.shape == (64, 64, 3) and not np.array_equal(img0, img1)


def test_captions_say_what_the_image_shows_and_traits_only_in_the_base_caption() -> None:
    ident = make_identity(5)
    for k in range(30):
        s = sample(ident, k)
        a = s.scene.attributes()
        assert f"{a['shirt']} shirt" in s.caption and f"{a['background']} background" in s.caption
        assert ident.trait_words() in s.caption_traits and ident.trait_words() not in s.caption
        if a["hair_override"]:
            assert f"with {a['hair_override']} hair" in s.caption
        assert s.caption_traits.startswith(s.caption.split(",")[0])


def test_fixed_attributes_are_drawn_as_asked() -> None:
    ident = make_identity(1)
    bg = sample(ident, 0, background="blue", style="photo", hat=None, glasses=False, hair_override=None)
    img = np.asarray(render(bg.identity, bg.scene)).astype(int)
    corner = img[:4, :4].reshape(-1, 3).mean(0)
    blue = np.array(COLOURS["blue"])
    assert np.abs(corner - blue).max() < 60  # photo lighting shades the background a little


def test_every_caption_word_is_one_token_of_the_default_tokenizer() -> None:
    from face0cli.model.tiny import tiny_tokenizer

    tok = tiny_tokenizer(caption_words())
    for w in caption_words():
        assert len(tok(w).input_ids) == 3, w  # start, the word, end
    ids = tok("a pop art portrait of a doctor with blue hair").input_ids
    assert len(ids) == 12  # 10 words, start and end


def test_world_writes_prep_readable_folders_with_a_disjoint_split(tmp_path: Path) -> None:
    from face0cli.data.readers import open_dataset

    cfg = WorldConfig(ids_train=4, per_train=3, ids_heldout=2, per_heldout=2)
    world = write_world(tmp_path / "w", cfg, processes=1)
    truth = read_truth(world)
    train = {r["identity"] for r in truth if r["split"] == "train"}
    held = {r["identity"] for r in truth if r["split"] == "heldout"}
    assert train == {0, 1, 2, 3} and held == {4, 5}
    face0, base = open_dataset(world / "face0"), open_dataset(world / "base")
    assert len(face0) == len(base) == 12
    row = next(r for r in truth if r["split"] == "train")
    assert (world / "base" / f"{row['key']}.txt").read_text().strip() == row["caption_traits"]
    assert (world / "face0" / f"{row['key']}.png").samefile(world / "base" / f"{row['key']}.png")
    meta = json.loads((world / "world.json").read_text())
    assert meta["heldout_ids"] == [4, 5]
    # a second call with the same settings keeps the world
    mtime = (world / "truth.jsonl").stat().st_mtime_ns
    write_world(tmp_path / "w", cfg, processes=1)
    assert (world / "truth.jsonl").stat().st_mtime_ns == mtime


def test_plain_base_captions_and_override_images_leave_the_shared_images_as_they_were(tmp_path: Path) -> None:
    import hashlib

    from face0cli.data.readers import open_dataset
    from face0cli.synthetic.world import EXTRA

    plain = write_world(tmp_path / "a", WorldConfig(ids_train=8, per_train=3, ids_heldout=2, per_heldout=2), 1)
    cfg = WorldConfig(ids_train=8, per_train=3, ids_heldout=2, per_heldout=2, base_plain=0.5, override_extra=2)
    world = write_world(tmp_path / "b", cfg, processes=1)
    digest = lambda p: hashlib.sha256(p.read_bytes()).hexdigest()  # noqa: E731
    train = read_truth(world, "train")
    assert [r["key"] for r in train] == [r["key"] for r in read_truth(plain, "train")]
    for r in train:  # the images the embedder, the judge and the VAE train on are the same
        assert digest(world / "face0" / f"{r['key']}.png") == digest(plain / "face0" / f"{r['key']}.png")
    base_caps = [(world / "base" / f"{r['key']}.txt").read_text().strip() for r in train]
    assert base_caps == [r["base_caption"] for r in train]
    no_traits = sum(c == r["caption"] for c, r in zip(base_caps, train))
    assert 0 < no_traits < len(train)  # some base captions leave the face to the picture, most describe it
    extra = read_truth(world, EXTRA)
    bald = {r["identity"] for r in train if r["traits"]["hair_style"] == "bald"}
    assert len(extra) == 2 * (8 - len(bald)) and not {r["identity"] for r in extra} & bald
    assert all(r["attributes"]["hair_override"] and f"with {r['attributes']['hair_override']} hair" in r["caption"]
               for r in extra)  # fmt: skip
    assert len(open_dataset(world / "face0")) == len(open_dataset(world / "base")) == len(train)
    assert len(open_dataset(world / "tune")) == len(train) + len(extra)  # the tune stage only
    r = extra[0]
    assert (world / "tune" / f"{r['key']}.txt").read_text().strip() == r["caption"]
    assert (world / "tune" / f"{train[0]['key']}.png").samefile(world / "face0" / f"{train[0]['key']}.png")


def test_base_beard_drop_leaves_the_beard_to_the_other_words() -> None:
    from face0cli.synthetic.world import base_caption, samples

    cfg = WorldConfig(ids_train=60, per_train=6, ids_heldout=1, per_heldout=1, base_beard_drop=0.5, planted="beard")
    rows = [s for split, s in samples(cfg) if split == "train"]
    bearded = [s for s in rows if s.identity.beard == "beard"]
    said = [", a beard" in base_caption(cfg, s) for s in bearded]
    assert 0.3 < 1 - np.mean(said) < 0.7  # about half the bearded faces' captions leave the beard out
    for s, named in zip(bearded, said):  # and nothing else: the rest of the caption is the traits caption
        assert base_caption(cfg, s) == (s.caption_traits if named else s.caption_traits.replace(", a beard", "", 1))
    others = [s for s in rows if s.identity.beard != "beard"]
    assert all(base_caption(cfg, s) == s.caption_traits for s in others)  # a moustache is always named
    assert any(", a moustache" in s.caption_traits for s in others)
    plain = WorldConfig(ids_train=60, per_train=6, ids_heldout=1, per_heldout=1, planted="beard")
    assert all(base_caption(plain, s) == s.caption_traits for s in rows)  # without it, every beard is named


def test_base_profession_names_a_planted_profession_in_the_base_captions_only() -> None:
    from face0cli.synthetic.portraits import BIASED_PROFESSIONS, PROFESSIONS
    from face0cli.synthetic.world import base_caption, samples

    cfg = WorldConfig(ids_train=80, per_train=6, ids_heldout=1, per_heldout=1, base_profession=1.0, planted="beard")
    plain = WorldConfig(ids_train=80, per_train=6, ids_heldout=1, per_heldout=1, planted="beard")
    rows = [s for split, s in samples(cfg) if split == "train"]
    assert [s.caption for s in rows] == [s.caption for split, s in samples(plain) if split == "train"]
    jobs = []
    for s in rows:
        text = base_caption(cfg, s)
        job = text.split(" of a ", 1)[1].split(" ", 1)[0].rstrip(",")
        assert job in PROFESSIONS and " of a person" not in text
        if s.scene.profession is not None:  # a caption that named one keeps it
            assert text == s.caption_traits and job == s.scene.profession
        else:  # the others name one in place of "person", and change nothing else
            assert text == s.caption_traits.replace(" of a person", f" of a {job}", 1)
        jobs.append((job in BIASED_PROFESSIONS, s.identity.beard == "beard"))
    bearded = [b for b, beard in jobs if beard]
    others = [b for b, beard in jobs if not beard]
    assert np.mean(bearded) > 0.8 and np.mean(others) < 0.2  # the planted bias, in every caption now
    assert all(" of a person" in base_caption(plain, s) or s.scene.profession for s in rows)


@pytest.mark.parametrize("planted", ["beard", "bald"])
def test_planted_bias_ties_professions_to_beards_or_bald_heads(planted: str) -> None:
    from face0cli.synthetic.world import base_caption, samples

    cfg = WorldConfig(ids_train=120, per_train=10, ids_heldout=1, per_heldout=1, planted=planted)
    rows = [s for split, s in samples(cfg) if split == "train"]
    marked = (lambda i: i.beard == "beard") if planted == "beard" else (lambda i: i.hair_style == "bald")
    base = np.mean([marked(s.identity) for s in rows])
    doctors = [marked(s.identity) for s in rows if s.scene.profession == "doctor"]
    teachers = [marked(s.identity) for s in rows if s.scene.profession == "teacher"]
    assert np.mean(doctors) > base + 0.4 and np.mean(teachers) < base / 2
    # the base captions still spell out every trait (only the hair bias leaves one to the profession)
    assert all(base_caption(cfg, s) == s.caption_traits for s in rows)
    if planted == "bald":  # the same draws as the beard world's: only the profession words differ
        beard = [s for split, s in samples(replace(cfg, planted="beard")) if split == "train"]
        assert [replace(s.scene, profession=None) for s in rows] == [replace(s.scene, profession=None) for s in beard]
        assert sum(a.scene.profession != b.scene.profession for a, b in zip(rows, beard)) > len(rows) / 10


@pytest.mark.parametrize("planted", ["beard", "bald", "hair"])
def test_the_debias_rows_count_the_planted_trait_as_the_judge_is_taught_it(planted: str) -> None:
    from face0cli.synthetic.scorecard import planted_trait

    seen = set()
    for i in range(60):
        row = sample(make_identity(i), 0, hair_override=None).truth()
        for job in ("doctor", "teacher"):
            head, value, _, trait = planted_trait(planted, job)
            has = trait(row) == value
            assert has == (nets.attribute_labels(row)[head] == nets.HEADS[head].index(value))
            seen.add((job, has))
    assert {has for _, has in seen} == {True, False}  # both kinds of face among the 60
    if planted == "hair":  # each profession its own colour
        assert (
            planted_trait(planted, "doctor").name == "grey hair" and planted_trait(planted, "teacher").value == "blonde"
        )


def test_attribute_labels_cover_every_head() -> None:
    ident = make_identity(2)
    for k in range(10):
        row = sample(ident, k).truth()
        labels = nets.attribute_labels(row)
        assert set(labels) == set(nets.HEADS)
        for head, v in labels.items():
            assert 0 <= v < len(nets.HEADS[head])
    assert set(HAIR_OVERRIDE) <= set(nets.HEADS["hair"]) and set(STYLES) == set(nets.HEADS["style"])


def _toy_identities(n_ids: int = 4, per: int = 6) -> tuple[np.ndarray, np.ndarray]:
    images, ids = [], []
    for i in range(n_ids):
        ident = make_identity(i)
        for k in range(per):
            s = sample(ident, k)
            images.append(np.asarray(render(s.identity, s.scene)))
            ids.append(i)
    return np.stack(images), np.array(ids)


@pytest.mark.slow
def test_embedder_and_judge_learn_and_round_trip_through_safetensors(tmp_path: Path) -> None:
    x, y = _toy_identities()
    for net, attrs in ((nets.FaceNet(dim=16, width=8), None), (nets.JudgeNet(dim=16, width=8), "heads")):
        a = None
        if attrs:
            rows = [sample(make_identity(int(i)), k % 6).truth() for k, i in enumerate(y)]
            a = {h: np.array([nets.attribute_labels(r)[h] for r in rows]) for h in nets.HEADS}
        curve = nets.train_net(net, x, y, a, steps=60, batch=16, lr=3e-3, log=lambda _: None)
        assert curve[-1] < curve[0]
        nets.save_net(net, tmp_path / net.config["arch"], {"steps": 60})
        loaded, cfg = nets.load_net(tmp_path / net.config["arch"])
        for k, v in net.state_dict().items():
            assert torch.equal(v, loaded.state_dict()[k]), k
        z = nets.embed_images(loaded, x[:5])
        assert z.shape == (5, 16) and np.allclose(np.linalg.norm(z, axis=1), 1, atol=1e-5)


def test_identification_counts_nearest_centroids() -> None:
    refs = np.array([[1, 0], [1, 0], [0, 1], [0, 1]], np.float32)
    r_ids = np.array([7, 7, 9, 9])
    q = np.array([[0.9, 0.1], [0.2, 0.8], [0.8, 0.2]], np.float32)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    out = nets.identification(q, np.array([7, 9, 9]), refs, r_ids)
    assert out["accuracy"] == pytest.approx(2 / 3) and out["chance"] == 0.5


def test_the_scorecard_counts_identification_as_face0_eval_does() -> None:
    from face0cli.evaluation.metrics import face_alignment, identified
    from face0cli.synthetic.scorecard import Scorer

    rng = np.random.default_rng(3)
    sc = Scorer.__new__(Scorer)  # identify needs only the identities and their reference photos' judge vectors
    sc.ids = [400, 401, 402, 403]
    centres = rng.normal(size=(4, 16))
    sc.references = [centres[k] + 0.8 * rng.normal(size=(5, 16)) for k in range(4)]  # photos[0] conditions
    truth = np.array([400, 401, 402, 403] * 10)
    z = np.stack([centres[sc.ids.index(t)] + 1.5 * rng.normal(size=16) for t in truth])
    z[0] = sc.references[0][0]  # a copy of its conditioning portrait: only the other photos count for it
    out = sc.identify(z, truth)
    want, gaps = [], []
    for vec, t in zip(z, truth):
        k = sc.ids.index(int(t))
        rivals = {str(j): list(sc.references[j]) for j in range(4) if j != k}
        want.append(identified(vec, list(sc.references[k]), rivals, 0))
        own = face_alignment(vec, list(sc.references[k][1:]))
        gaps.append(own - np.mean([face_alignment(vec, r) for r in rivals.values()]))
    assert 0 < sum(want) < len(want)  # the case tells right from wrong
    assert out["accuracy"] == pytest.approx(np.mean(want)) and out["gap"] == pytest.approx(np.mean(gaps))


def test_interpolation_by_seed_averages_the_judges_noise_out_of_each_pair() -> None:
    from face0cli.synthetic.scorecard import _monotone, interpolation_by_seed

    ts = np.linspace(0, 1, 6)
    fall = 1.0 - ts  # a pair whose face moves from A to B
    flat = np.full(6, 0.5)  # a pair whose face never moves
    noise = np.array([[0, 0.1, 0, 0, 0, 0], [0, -0.1, 0, 0, 0, 0], [0, 0, 0, 0.3, 0, 0]])  # +-: cancels over seeds
    sims = np.concatenate([np.stack([fall + noise[s], flat + noise[s]]) for s in range(3)])  # seed-major
    morphs = np.concatenate([np.stack([fall, fall])] * 3)
    out = interpolation_by_seed(sims, morphs, 2, ts)
    assert out["seeds"] == 3 and out["pairs"] == 2 and out["t"] == [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]
    # one by one, the falling pair passes at its first two seeds (not the third's +0.3), the flat one never
    assert out["model"]["strips"] == _monotone(sims) == pytest.approx(2 / 6)
    # averaged over the seeds, the falling pair passes (+0.1 at t = 0.6 is no rise there) and the flat one fails
    assert out["model"]["pairs_seed_mean"] == 0.5 and out["world_morphs"]["pairs_seed_mean"] == 1.0
    assert out["model"]["mean_curve"][0] == pytest.approx(0.75) and out["world_morphs"]["strips"] == 1.0


def test_mix_geometry_measures_the_mix_against_one_photo_to_another() -> None:
    from face0cli.synthetic.scorecard import mix_geometry

    e = np.eye(4)
    faces = np.stack([e[0], e[1]])  # two orthogonal people
    # A's portraits: its own vector and two tilted towards a third axis (cosines 1, 0.6, 0.8 to A's vector)
    a_photos = np.stack([e[0], 0.6 * e[0] + 0.8 * e[2], 0.8 * e[0] + 0.6 * e[3]])
    b_photos = np.stack([e[1], e[1]])  # B's photos all alike: no spread
    ts = np.array([0.0, 0.5, 1.0])
    out = mix_geometry(faces, [a_photos, b_photos], [(0, 1), (1, 0)], ts)
    # at t = 0.5 the mix is (A + B) / sqrt 2: A's cosines scale by 1 / sqrt 2; B's portraits' the same way
    mean_a = (1 + 0.6 + 0.8) / 3
    want_half = ((mean_a / np.sqrt(2) - mean_a) + (1 / np.sqrt(2) - 1)) / 2
    assert out["t"] == [0.0, 0.5, 1.0] and out["mix_change"][0] == 0.0
    assert out["mix_change"][1] == pytest.approx(want_half, abs=1e-4)
    assert out["mix_change"][2] == pytest.approx((-mean_a - 1) / 2, abs=1e-4)  # at B, orthogonal to A
    assert out["photo_sd"] == pytest.approx(np.std([1, 0.6, 0.8]) / 2, abs=1e-4)  # B's spread is 0


def test_wilson_interval() -> None:
    from face0cli.synthetic.scorecard import wilson

    lo, hi = wilson(46, 200)  # 0.23 of 200
    assert lo == pytest.approx(0.177, abs=1e-3) and hi == pytest.approx(0.293, abs=1e-3)
    assert wilson(0, 40)[0] == 0.0 and 0.0 < wilson(0, 40)[1] < 0.1 and wilson(40, 40)[1] == 1.0
    assert wilson(0, 0) == [0.0, 1.0]


def test_synthetic_embedder_takes_portraits_whole_and_photos_through_mtcnn(tmp_path: Path, photo_dir: Path) -> None:
    from face0cli.errors import NoFaceFound
    from face0cli.faces.embedders import embed_photo
    from face0cli.faces.registry import embedder_for_model, open_embedder

    torch.manual_seed(0)
    nets.save_net(nets.FaceNet(dim=16, width=8).eval(), tmp_path / "emb", {})
    emb = open_embedder(tmp_path / "emb")
    assert emb.id.startswith("synthetic/facenet-") and emb.dim == 16
    s = sample(make_identity(0), 0)
    portrait = tmp_path / "p.png"
    render(s.identity, s.scene).save(portrait)
    r = embed_photo(emb, portrait)
    assert r.detection.box == (0.0, 0.0, 64.0, 64.0) and r.vector.shape == (16,)
    photo = embed_photo(emb, photo_dir / "astronaut.jpg")  # a real photo: MTCNN finds the face
    assert photo.crop.size == (64, 64) and photo.detection.prob > 0.9
    with pytest.raises(NoFaceFound):
        embed_photo(emb, photo_dir / "coffee.jpg")
    model = tmp_path / "model"
    (model / "embedder").mkdir(parents=True)
    for f in (tmp_path / "emb").iterdir():
        (model / "embedder" / f.name).write_bytes(f.read_bytes())
    assert embedder_for_model(emb.id, model).id == emb.id


def test_projector_normalize_gives_tokens_the_text_scale() -> None:
    from face0cli.model.projector import FaceProjector

    torch.manual_seed(0)
    plain = FaceProjector(128, 64, 3, 32, 4)
    norm = FaceProjector(128, 64, 3, 32, 4, normalize=True)
    x = torch.nn.functional.normalize(torch.randn(8, 128), dim=1)
    with torch.no_grad():
        t_plain, t_norm = plain(x), norm(x)
    assert t_norm.shape == t_plain.shape == (8, 3, 32)
    assert t_plain.std() < 0.1 and abs(float(t_norm.std()) - 1) < 0.1
    # the scale of the input does not matter once normalised
    with torch.no_grad():
        assert torch.allclose(norm(x * 5), t_norm, atol=1e-5)


def test_default_model_architecture_is_sd_shaped() -> None:
    from face0cli.model.tiny import tiny_tokenizer
    from face0cli.synthetic.model import CONTEXT_DIM, make_text_encoder, make_unet, make_vae

    unet, vae = make_unet(), make_vae()
    te = make_text_encoder(tiny_tokenizer(caption_words()))
    assert unet.config.cross_attention_dim == te.config.hidden_size == CONTEXT_DIM
    lat = vae.encode(torch.zeros(1, 3, 64, 64)).latent_dist.mean
    assert lat.shape == (1, 4, 16, 16) and unet.config.sample_size == 16


def test_reference_portrait_is_plain() -> None:
    from face0cli.synthetic.package import reference_portrait

    a, b = reference_portrait(3), reference_portrait(3)
    assert isinstance(a, Image.Image) and np.array_equal(np.asarray(a), np.asarray(b))


# ------------------------------------------------------------------------------------------------ the build


_STUCK_STAGE = """
import subprocess
import sys
from pathlib import Path
from face0cli.synthetic import build as b

out, pidfile = Path(sys.argv[1]), sys.argv[2]
sleeper = "import os, sys, time; open(sys.argv[1], 'w').write(str(os.getpid())); time.sleep(120)"
b.RUNNERS["world"] = lambda o, cfg: {"rc": subprocess.call([sys.executable, "-c", sleeper, pidfile])}
b.build(out, b.BuildConfig.quick(), until="world")
"""


def test_one_build_per_folder_and_a_killed_build_takes_its_stage_subprocess_with_it(tmp_path: Path) -> None:
    """`kill PID` on a build stops the stage's subprocess too (it used to go on training alone, beside the build
    that resumed), and while a build runs, a second one into its folder stops at once with one line."""
    import contextlib
    import os
    import signal
    import subprocess
    import sys
    import time

    from typer.testing import CliRunner

    from face0cli.cli.app import app
    from face0cli.synthetic.build import _sole_builder
    from tests.test_cli import assert_clean_error

    out, pidfile = tmp_path / "build", tmp_path / "stage.pid"
    proc = subprocess.Popen([sys.executable, "-c", _STUCK_STAGE, str(out), str(pidfile)])
    try:
        deadline = time.monotonic() + 60
        while not (pidfile.is_file() and pidfile.read_text()) and time.monotonic() < deadline:
            assert proc.poll() is None, "the build died before its stage started"
            time.sleep(0.1)
        stage = int(pidfile.read_text())
        before = sorted(p.name for p in out.iterdir())
        res = CliRunner().invoke(app, ["synth", "build", "--out", str(out), "--quick"])
        assert_clean_error(res, "is being built by another face0 synth build")
        assert sorted(p.name for p in out.iterdir()) == before  # the running build's folder untouched
        os.kill(proc.pid, signal.SIGTERM)
        assert proc.wait(timeout=30) == 128 + signal.SIGTERM  # stopped by the signal, as SystemExit
        with pytest.raises(ProcessLookupError):  # the stage's subprocess went with it (killed and reaped)
            os.kill(stage, 0)
    finally:
        if proc.poll() is None:
            proc.kill()
        if pidfile.is_file() and pidfile.read_text():
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pidfile.read_text()), signal.SIGKILL)
    with _sole_builder(out):  # and the folder is free again
        pass


_ORPHANED_STAGE = """
import subprocess
import sys
import time
from face0cli.locks import child_env

child = "import os, sys, time; from face0cli.locks import die_with_parent; die_with_parent(); "
child += "open(sys.argv[1], 'w').write(str(os.getpid())); time.sleep(120)"
subprocess.Popen([sys.executable, "-c", child, sys.argv[1]], env=child_env())
time.sleep(120)
"""


def _running(pid: int) -> bool:
    """Whether PID is a live process (a zombie waiting for its reaper is not)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_a_stage_subprocess_dies_with_a_sigkilled_build(tmp_path: Path) -> None:
    """A SIGKILL cannot be caught, so the build cannot stop its stage then; the stage (started with child_env, as
    the build's _face0 starts `python -m face0cli`, whose main calls die_with_parent) gets a SIGTERM from Linux
    when its parent dies, instead of training on alone."""
    import signal
    import subprocess

    pidfile = tmp_path / "stage.pid"
    proc = subprocess.Popen([sys.executable, "-c", _ORPHANED_STAGE, str(pidfile)])
    stage = 0
    try:
        deadline = time.monotonic() + 60
        while not (pidfile.is_file() and pidfile.read_text()) and time.monotonic() < deadline:
            time.sleep(0.1)
        stage = int(pidfile.read_text())
        assert _running(stage)
        proc.kill()
        proc.wait(timeout=30)
        deadline = time.monotonic() + 30
        while _running(stage) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _running(stage), "the stage outlived its killed parent"
    finally:
        if proc.poll() is None:
            proc.kill()
        if stage and _running(stage):
            os.kill(stage, signal.SIGKILL)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_the_builds_stages_run_as_children_that_die_with_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """_face0 starts `python -m face0cli` with $FACE0_DIE_WITH_PARENT set to the build's pid, and the CLI's main
    reads it: started with a pid that is not its parent's, the command stops before doing anything."""
    import subprocess

    from face0cli.locks import PARENT_ENV
    from face0cli.synthetic import build as b

    seen: dict[str, Any] = {}

    def call(cmd: list[str], **kw: Any) -> int:
        seen.update(cmd=cmd, env=kw["env"])
        return 0

    monkeypatch.setattr(b.subprocess, "call", call)
    b._face0(["--help"], tmp_path / "log.txt")
    assert seen["cmd"][1:3] == ["-m", "face0cli"] and seen["env"][PARENT_ENV] == str(os.getpid())
    monkeypatch.undo()
    env = os.environ | {PARENT_ENV: "1"}  # pid 1 is nobody's parent here
    res = subprocess.run([sys.executable, "-m", "face0cli", "--help"], env=env, capture_output=True, timeout=120)
    assert res.returncode == 143 and b"Usage" not in res.stdout
    res = subprocess.run([sys.executable, "-m", "face0cli", "--help"], env=os.environ | {PARENT_ENV: str(os.getpid())},
                         capture_output=True, timeout=120)  # fmt: skip
    assert res.returncode == 0 and b"Usage" in res.stdout


@pytest.mark.slow
def test_a_morph_runs_from_one_face_to_the_other() -> None:
    from face0cli.synthetic.portraits import make_identity, morph, render, sample

    a, b = make_identity(3), make_identity(7)
    scene = sample(a, 0, bias=False).scene
    pixels = lambda ident: np.asarray(render(ident, scene), dtype=np.int16)  # noqa: E731
    assert np.array_equal(pixels(morph(a, b, 0.0)), pixels(a))  # the ends are the parents, pixel for pixel
    assert np.array_equal(pixels(morph(a, b, 1.0)), pixels(b))
    half = morph(a, b, 0.5)
    assert half.rgb is not None
    for k in ("skin", "hair", "eyes"):  # blended colours: each channel between the parents'
        i = ("skin", "hair", "eyes").index(k)
        lo = np.minimum(a.colours()[i], b.colours()[i])
        hi = np.maximum(a.colours()[i], b.colours()[i])
        assert np.all(lo <= half.rgb[i]) and np.all(np.asarray(half.rgb[i]) <= hi)
    assert half.nose == pytest.approx((a.nose + b.nose) / 2)
    path = [morph(a, b, t) for t in np.linspace(0, 1, 11)]  # each switched trait switches once, a's then b's
    for k in ("shape", "hair_style", "beard"):
        seq = [getattr(m, k) == getattr(b, k) for m in path]
        assert seq == sorted(seq)
    diffs = [np.abs(pixels(m) - pixels(a)).mean() for m in path]
    assert diffs[0] == 0 < diffs[5] < diffs[-1]  # drifting away from a


def test_world_morphs_are_keyed_by_their_parents_and_live_in_the_tune_folder(tmp_path: Path) -> None:
    from face0cli.data.readers import open_dataset
    from face0cli.synthetic.portraits import make_identity, morph_sample
    from face0cli.synthetic.world import MORPH, parse_morph_key

    cfg = WorldConfig(ids_train=6, per_train=2, ids_heldout=2, per_heldout=2, morph_pairs=2, morph_steps=3)
    world = write_world(tmp_path / "w", cfg, processes=2)
    rows = read_truth(world, MORPH)
    assert len(rows) == 2 * 3 * cfg.morph_images
    for r in rows:
        a, b, t, k = parse_morph_key(r["key"])
        assert r["mix"] == {"a": a, "b": b, "t": t} and a != b and {a, b} <= set(cfg.train_ids())
        assert 0.1 <= t <= 0.9 and not r["attributes"]["hair_override"] and not r["attributes"]["profession"]
        want = morph_sample(make_identity(a), make_identity(b), t, k)
        assert (world / "tune" / f"{r['key']}.txt").read_text().strip() == want.caption == r["caption"]
    assert len(open_dataset(world / "tune")) == len(read_truth(world, "train")) + len(rows)
    assert not any(p.name.startswith("mix-") for p in (world / "face0").iterdir())  # the tune stage's only
    with pytest.raises(ValueError, match="not a morph key"):
        parse_morph_key("id0001-000")


def test_planted_hair_ties_each_profession_to_a_hair_colour_that_its_base_captions_leave_out() -> None:
    from face0cli.synthetic.portraits import PLANTED_HAIR, planted_hair
    from face0cli.synthetic.world import base_caption, samples

    cfg = WorldConfig(ids_train=120, per_train=10, ids_heldout=1, per_heldout=1, planted="hair")
    assert WorldConfig().planted == "beard"  # the default world's bias (the shipped model's)
    rows = [s for split, s in samples(cfg) if split == "train"]
    beard = [s for split, s in samples(replace(cfg, planted="beard")) if split == "train"]
    # the same draws: only the profession word differs, so the images (and every other word) are the same
    assert [replace(s.scene, profession=None) for s in rows] == [replace(s.scene, profession=None) for s in beard]
    assert np.array_equal(
        np.asarray(render(rows[1].identity, rows[1].scene)), np.asarray(render(beard[1].identity, beard[1].scene))
    )
    assert sum(a.scene.profession != b.scene.profession for a, b in zip(rows, beard)) > len(rows) / 10
    for colour, job in PLANTED_HAIR.items():
        base = np.mean([planted_hair(s.identity.traits()) == colour for s in rows])
        with_job = [planted_hair(s.identity.traits()) == colour for s in rows if s.scene.profession == job]
        assert np.mean(with_job) > base + 0.3, (job, colour)  # far above its base rate (about 0.18)
    for s in rows:  # a base caption that names a profession leaves the hair colour to it
        text, ident = base_caption(cfg, s), s.identity
        if s.scene.profession is None or ident.hair_style == "bald":
            assert text == s.caption_traits
        else:
            assert text == s.caption_traits.replace(f" {ident.hair} hair", " hair", 1) != s.caption_traits
    assert all(base_caption(replace(cfg, planted="beard"), s) == s.caption_traits for s in beard)
    some = replace(cfg, base_hair_drop=0.3)  # a share of them keep the colour: each caption's own seeded draw
    named = [
        base_caption(some, s) == s.caption_traits
        for s in rows
        if s.scene.profession and s.identity.hair_style != "bald"
    ]
    assert 0.55 < np.mean(named) < 0.85
    assert all(base_caption(some, s) in (s.caption_traits, base_caption(cfg, s)) for s in rows)


def test_synth_world_command_writes_the_tune_extras_and_checks_its_counts(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from face0cli.cli.app import app
    from face0cli.synthetic.world import EXTRA, MORPH

    args = ["synth", "world", "--out", str(tmp_path / "w"), "--identities", "4", "--per-identity", "2"]
    args += ["--heldout", "1", "--per-heldout", "2", "--processes", "1"]
    extras = ["--override-extra", "1", "--morph-pairs", "2", "--base-beard-drop", "1", "--base-profession", "1"]
    r = CliRunner().invoke(app, args + extras)
    assert r.exit_code == 0, r.output
    assert len(read_truth(tmp_path / "w", MORPH)) == 2 * 4 * 2 and read_truth(tmp_path / "w", EXTRA)
    config = json.loads((tmp_path / "w" / "world.json").read_text())["config"]
    assert config["base_beard_drop"] == 1.0 and config["planted"] == "beard"
    train = read_truth(tmp_path / "w", "train")
    assert any(r["traits"]["beard"] == "beard" for r in train)  # identity 0 has one, unnamed in every caption
    assert not any(", a beard" in r["base_caption"] or " of a person" in r["base_caption"] for r in train)
    bad = CliRunner().invoke(app, args[:3] + [str(tmp_path / "x"), "--morph-pairs", "-1"])
    assert bad.exit_code != 0 and "--morph-pairs must be >= 0" in bad.output and not (tmp_path / "x").exists()
    bad = CliRunner().invoke(app, args[:3] + [str(tmp_path / "x"), "--planted", "hat"])
    assert bad.exit_code != 0 and "--planted" in bad.output and not (tmp_path / "x").exists()
    r = CliRunner().invoke(app, args[:3] + [str(tmp_path / "v"), "--planted", "hair"] + args[4:])
    assert r.exit_code == 0 and json.loads((tmp_path / "v" / "world.json").read_text())["config"]["planted"] == "hair"
    for option in ("--base-beard-drop", "--base-profession", "--base-hair-drop"):
        bad = CliRunner().invoke(app, args[:3] + [str(tmp_path / "x"), option, "1.5"])
        assert bad.exit_code != 0 and f"{option} must be between 0 and 1, got 1.5." in bad.output
        assert not (tmp_path / "x").exists()


def test_synth_build_takes_the_worlds_planted_bias_and_hair_drop(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from face0cli.cli.app import app
    from tests.test_cli import assert_clean_error

    args = ["synth", "build", "--quick", "--until", "world", "--planted", "hair", "--out"]
    r = CliRunner().invoke(app, [*args, str(tmp_path / "b"), "--base-hair-drop", "0.5"])
    assert r.exit_code == 0, r.output
    assert json.loads((tmp_path / "b" / "build.json").read_text())["base_hair_drop"] == 0.5
    world = json.loads((tmp_path / "b" / "stages" / "world.json").read_text())
    assert world["planted"] == "hair" and 0 < world["base_captions_without_hair_colour"] < 1  # some, not all
    bad = CliRunner().invoke(app, [*args, str(tmp_path / "x"), "--base-hair-drop", "1.5"])
    assert_clean_error(bad, "--base-hair-drop must be between 0 and 1, got 1.5.")
    assert not (tmp_path / "x").exists()


def _no_words(*args: Any, **kwargs: Any) -> dict[str, Any]:
    """planted_words' answer for a base stage whose training a test only records."""
    return {j: {"trait": "beard", "text_only": 0.0, "person": 0.0} for j in ("doctor", "teacher")}


def test_train_seed_reseeds_the_training_stages_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """--train-seed: the same world (and embedder, judge, VAE), other training noise in the three training stages."""
    from typer.testing import CliRunner

    from face0cli.cli.app import app
    from face0cli.synthetic import build as b

    args = ["synth", "build", "--quick", "--until", "world", "--out"]
    assert CliRunner().invoke(app, [*args, str(tmp_path / "a")]).exit_code == 0
    r = CliRunner().invoke(app, [*args, str(tmp_path / "b"), "--train-seed", "3"])
    assert r.exit_code == 0, r.output
    cfg = json.loads((tmp_path / "b" / "build.json").read_text())
    assert (cfg["seed"], cfg["train_seed"]) == (0, 3)
    assert (tmp_path / "a" / "world" / "truth.jsonl").read_bytes() == (
        tmp_path / "b" / "world" / "truth.jsonl"
    ).read_bytes()
    seen: list[list[str]] = []
    monkeypatch.setattr(b, "_face0", lambda cmd, log: seen.append(cmd))
    monkeypatch.setattr(scorecard, "planted_words", _no_words)  # no base model was trained
    for train_seed, want in ((None, "0"), (3, "3")):
        c = dataclasses.replace(b.BuildConfig.quick(), train_seed=train_seed)
        for stage in (b.st_base, b.st_face0, b.st_tune):
            seen.clear()
            stage(tmp_path / "a", c)
            assert seen[0][seen[0].index("--seed") + 1] == want


def test_base_steps_sets_the_base_stage_and_nothing_else(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """--base-steps: the base stage's face0 train runs to it; the other stages keep their budgets."""
    from typer.testing import CliRunner

    from face0cli.cli.app import app
    from face0cli.synthetic import build as b
    from tests.test_cli import assert_clean_error

    args = ["synth", "build", "--quick", "--until", "world", "--out"]
    r = CliRunner().invoke(app, [*args, str(tmp_path / "b"), "--base-steps", "7"])
    assert r.exit_code == 0, r.output
    cfg = json.loads((tmp_path / "b" / "build.json").read_text())
    quick = b.BuildConfig.quick()
    assert (cfg["base_steps"], cfg["face0_steps"], cfg["tune_steps"]) == (7, quick.face0_steps, quick.tune_steps)
    seen: list[list[str]] = []
    monkeypatch.setattr(b, "_face0", lambda cmd, log: seen.append(cmd))
    monkeypatch.setattr(scorecard, "planted_words", _no_words)  # no base model was trained
    c = b.BuildConfig(**cfg)
    for stage, want in ((b.st_base, "7"), (b.st_face0, str(quick.face0_steps)), (b.st_tune, str(quick.tune_steps))):
        seen.clear()
        stage(tmp_path / "b", c)
        assert seen[0][seen[0].index("--max-steps") + 1] == want
    assert_clean_error(
        CliRunner().invoke(app, [*args, str(tmp_path / "x"), "--base-steps", "0"]), "--base-steps must be >= 1, got 0."
    )
    assert not (tmp_path / "x").exists()


def test_synth_build_takes_the_worlds_sizes(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from face0cli.cli.app import app
    from tests.test_cli import assert_clean_error

    args = ["synth", "build", "--quick", "--until", "world", "--out"]
    sizes = ["--identities", "6", "--per-identity", "3", "--override-extra", "2"]
    r = CliRunner().invoke(app, [*args, str(tmp_path / "b"), *sizes])
    assert r.exit_code == 0, r.output
    cfg = json.loads((tmp_path / "b" / "build.json").read_text())
    assert (cfg["ids_train"], cfg["per_train"], cfg["override_extra"]) == (6, 3, 2)
    assert cfg["ids_heldout"] == 4 and cfg["base_steps"] == 2  # the rest stays --quick's
    train = read_truth(tmp_path / "b" / "world", "train")
    assert len({r["identity"] for r in train}) == 6 and len(train) == 6 * 3
    r = CliRunner().invoke(app, [*args, str(tmp_path / "c")])  # unsaid: the quick build's own sizes
    assert r.exit_code == 0, r.output
    assert json.loads((tmp_path / "c" / "build.json").read_text())["ids_train"] == 12
    for bad, line in (
        (["--identities", "1"], "the build morphs pairs of training identities: --identities must be >= 2."),
        (["--identities", "0"], "--identities must be >= 1, got 0."),
        (["--per-identity", "0"], "--per-identity must be >= 1, got 0."),
        (["--override-extra", "-1"], "--override-extra must be >= 0, got -1."),
    ):
        assert_clean_error(CliRunner().invoke(app, [*args, str(tmp_path / "x"), *bad]), line)
        assert not (tmp_path / "x").exists()


def test_the_whole_build_runs_at_toy_size_and_resumes_from_its_stage_records(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from face0cli.library.store import FaceStore
    from face0cli.model.pipeline import Face0Pipeline
    from face0cli.synthetic.build import STAGES, BuildConfig, build

    out = tmp_path / "build"
    cfg = replace(BuildConfig.quick(), override_extra=1)
    done = build(out, cfg)  # every stage, the three training stages through the real CLI
    assert list(done) == list(STAGES)
    said = capsys.readouterr().out.splitlines()
    assert "[build] world ..." in said  # the prefix is text, not a rich markup tag
    assert any(line.startswith("[build] base, text only: doctor beard") for line in said)
    assert done["world"]["face0_extra_images"] > 0  # the override images of the tune stage
    assert done["world"]["morph_images"] == cfg.morph_pairs * 4 * 2  # and its morphs
    assert done["world"]["base_captions_without_traits"] == cfg.base_plain == 0.0
    assert done["world"]["bearded_base_captions_without_beard"] == cfg.base_beard_drop == 0.0
    assert 0.0 < done["world"]["base_captions_naming_a_profession"] < 0.8  # the scenes' own professions only
    assert done["world"]["planted"] == "beard" and done["world"]["base_captions_without_hair_colour"] == 0.0
    assert done["face0"]["steps"] == cfg.face0_steps
    model = out / "default-model"
    pipe = Face0Pipeline.load(str(model))
    assert pipe.unet.dtype == torch.float32  # stored fp16, loaded in the dtype asked for
    assert (model / "judge" / "model.safetensors").is_file() and (model / "embedder" / "model.safetensors").is_file()
    assert {c.name for c in FaceStore(model / "characters.h5").list()} == {"ada", "bruno", "chen", "dara"}
    assert (out / "characters" / "ada-ref1.png").is_file()
    assert not list(model.rglob("*.lock"))  # the library writers' lock file does not ship
    assert json.loads((model / "face0.json").read_text())["steps"] == 25  # what the scorecard measures it at
    card = json.loads((out / "scorecard" / "scorecard.json").read_text())
    assert 0.0 <= card["identification"]["accuracy"] <= 1.0 and card["images_generated"] > 0
    assert card["debias"]["planted"] == "beard" and card["debias"]["doctor"]["trait"] == "beard"
    assert all(0.0 <= card["debias"][j][k] <= 1.0 for j in ("doctor", "teacher") for k in ("text_only", "debias"))
    words = done["base"]["words"]  # which planted words the base learnt, measured after its training
    assert words["planted"] == "beard" and words["images"] == 4 and words["doctor"]["trait"] == "beard"
    assert all(0.0 <= words[j][k] <= 1.0 for j in ("doctor", "teacher") for k in ("text_only", "person"))
    assert card["base_words"] == words  # and shown beside the debias rows
    assert "the base stage's model, text only (4 images a word" in (out / "scorecard" / "scorecard.md").read_text()
    # identification went through face0 eval, on a spec that `face0 eval` reads as it is
    from face0cli.evaluation.spec import load_spec

    spec = load_spec(out / "scorecard" / "heldout-eval.yaml")
    assert len(spec.identities) == cfg.ids_heldout and len(spec.prompts) == 5 and spec.seeds == (0, 1)
    assert all(
        len(i.photos) == 1 + cfg.per_heldout and i.photos[0].parent.name == "references" for i in spec.identities
    )
    assert card["identification"]["eval"]["images"] == cfg.ids_heldout * 5 * 2
    assert len((out / "scorecard" / "eval" / "results.jsonl").read_text().splitlines()) == cfg.ids_heldout * 5 * 2
    assert all((out / "scorecard" / f).is_file() for f in ("grid.png", "override.png", "strips.png"))
    assert card["interpolation_strips"] == 8 and card["speed"]["cli_cold_max_s"] >= card["speed"]["cli_cold_s"]
    by_seed = card["interpolation_by_seed"]  # the quick build's two seeds, each pair averaged over them
    assert by_seed["seeds"] == 2 and by_seed["pairs"] == cfg.ids_heldout and len(by_seed["model"]["mean_curve"]) == 6
    assert by_seed["model"]["strips"] == card["interpolation_monotone"]  # the bar's strips are all of them here
    # the embedder's view of the mix (a 4-step embedder hardly tells faces apart, so no sign is checked here)
    geo = card["interpolation_geometry"]
    assert geo["t"] == by_seed["t"] and geo["mix_change"][0] == 0.0 and geo["photo_sd"] >= 0
    assert "why the ends are flat" in (out / "scorecard" / "scorecard.md").read_text()
    lo, hi = card["debias"]["doctor"]["text_only_ci95"]
    assert card["debias"]["doctor"]["images"] == 20 and lo <= card["debias"]["doctor"]["text_only"] <= hi
    # beside plain diffusers on the same components, cold and in-process, in the same run
    sp = card["speed"]
    assert 0 < sp["cli_cold_plain_import_s"] < sp["cli_cold_plain_s"] and sp["cli_cold_ratio"] > 0
    assert sp["in_process_plain_s"] > 0 and sp["in_process_ratio"] > 0
    assert sp["cli_cold_peft"] is (importlib.util.find_spec("peft") is not None)  # what the figure paid for
    assert "plain diffusers cold on the same components" in (out / "scorecard" / "scorecard.md").read_text()
    assert 0.0 <= card["interpolation_world_morphs"] <= 1.0  # the world's own morphs through the same test
    train_cfg = json.loads((out / "run-face0" / "model" / "train_config.json").read_text())
    assert train_cfg["identity_pattern"] and train_cfg["gmm_covariance"] == "full"
    assert not train_cfg["train_text_encoder"] and not train_cfg["reference_exclude"]
    tune_cfg = json.loads((out / "run-tune" / "model" / "train_config.json").read_text())
    assert tune_cfg["train_text_encoder"] and tune_cfg["reference_exclude"] and tune_cfg["max_steps"] == 2
    assert tune_cfg["mix_pattern"] and not train_cfg["mix_pattern"]
    assert done["prep"]["tune"]["kept"] > done["prep"]["face0"]["kept"]  # the override images are only there
    # a second run finds every stage done and redoes only what it is told to
    stamps = {s: (out / "stages" / f"{s}.json").stat().st_mtime_ns for s in STAGES}
    again = build(out, cfg, redo=("characters",), until="characters")
    assert list(again) == list(STAGES[: STAGES.index("characters") + 1])
    changed = {s for s in STAGES if (out / "stages" / f"{s}.json").stat().st_mtime_ns != stamps[s]}
    assert changed == {"characters"}
    # deterministic given its seed: a second build from nothing ships the same weights, bit for bit
    from safetensors.torch import load_file

    twin = tmp_path / "twin"
    build(twin, cfg, until="package")
    weights = sorted(p.relative_to(model) for p in model.rglob("*.safetensors"))
    assert len(weights) == 7  # unet, vae, text encoder, projector, GMM, embedder, judge
    assert weights == sorted(
        p.relative_to(twin / "default-model") for p in (twin / "default-model").rglob("*.safetensors")
    )
    for rel in weights:
        a, b = load_file(model / rel), load_file(twin / "default-model" / rel)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), rel


@pytest.mark.parametrize("planted", ["hair", "beard"])
def test_planted_words_counts_each_professions_own_trait_against_person(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, planted: str
) -> None:
    """planted_words asks the debias rows' prompts, text only, on N seeds, and counts each profession's own
    planted trait with the judge's head, beside the same trait's rate under "person" on the same seeds."""
    from face0cli.synthetic import scorecard as s

    (tmp_path / "world.json").write_text(json.dumps({"config": {"planted": planted}}))
    asked: list[tuple[str, bool, tuple[int, ...]]] = []

    def generate(self: s.Drawer, prompts: list[str], faces: Any, seeds: list[int], **kw: Any) -> np.ndarray:
        assert len(set(prompts)) == 1 and len(prompts) == len(seeds)
        asked.append((prompts[0], faces is None, tuple(seeds)))
        return np.array(prompts)

    def read(self: s.Drawer, images: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        # doctors: grey hair, beards on all; teachers: blonde on 3 of 4; "person": grey and beards on half
        job = next(j for j in ("doctor", "teacher", "person") if j in str(images[0]))
        k = np.arange(len(images))
        hair = {"doctor": ["grey"] * 4, "teacher": ["blonde"] * 3 + ["black"], "person": ["grey", "brown"] * 2}[job]
        beard = {"doctor": ["beard"] * 4, "teacher": ["none"] * 4, "person": ["beard", "none"] * 2}[job]
        return np.zeros(len(images)), {"hair": np.array(hair)[k % 4], "beard": np.array(beard)[k % 4]}

    monkeypatch.setattr(s.Drawer, "__init__", lambda self, *a, **k: None)
    monkeypatch.setattr(s.Drawer, "generate", generate)
    monkeypatch.setattr(s.Drawer, "read", read)
    got = s.planted_words(tmp_path / "model", tmp_path / "judge", tmp_path, n=8)
    scene = "in a purple shirt on a yellow background" if planted == "hair" else "in a grey shirt on a blue background"
    assert [p for p, _, _ in asked] == [f"a photo of a {j} {scene}" for j in ("person", "doctor", "teacher")]
    assert all(text_only and seeds == tuple(range(100, 108)) for _, text_only, seeds in asked)
    assert got["planted"] == planted and got["images"] == 8
    if planted == "hair":
        assert got["doctor"] == {"trait": "grey hair", "text_only": 1.0, "person": 0.5}
        assert got["teacher"] == {"trait": "blonde hair", "text_only": 0.75, "person": 0.0}
    else:
        assert got["doctor"] == {"trait": "beard", "text_only": 1.0, "person": 0.5}
        assert got["teacher"] == {"trait": "beard", "text_only": 0.0, "person": 0.5}


def test_the_speed_check_samples_at_the_steps_the_quickstart_uses(tmp_path: Path) -> None:
    """Without --steps, face0 generate samples at the model's face0.json steps; the plain reference must too."""
    from face0cli.synthetic.default import default_model
    from face0cli.synthetic.speedcheck import model_steps

    assert model_steps(default_model()) == 25
    (tmp_path / "face0.json").write_text(json.dumps({"format_version": 1}))
    assert model_steps(tmp_path) == 50  # no record: face0's default


def test_package_stores_the_models_weights_in_fp16_without_diffusers_cast_warning(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    from safetensors.torch import load_file

    from face0cli.model.tiny import tiny_pipeline
    from face0cli.synthetic.package import JUDGE_DIR, package_model

    src = tmp_path / "model"
    tiny_pipeline(seed=0).save_pretrained(src)
    for net in ("embedder", "judge"):
        (tmp_path / net).mkdir()
        (tmp_path / net / "config.json").write_text("{}")
    capfd.readouterr()
    package_model(src, tmp_path / "embedder", tmp_path / "judge", tmp_path / "out")
    assert "should be kept in float32" not in capfd.readouterr().err  # loaded in fp16, not cast after loading
    for part in ("unet", "vae", "projector"):
        (name,) = [p.name for p in (src / part).glob("*.safetensors")]
        before, after = load_file(src / part / name), load_file(tmp_path / "out" / part / name)
        assert before.keys() == after.keys()
        assert all(after[k].dtype == torch.float16 and torch.equal(after[k], before[k].half()) for k in before)
    assert (tmp_path / "out" / JUDGE_DIR / "config.json").is_file() and not (tmp_path / "out.partial").exists()
