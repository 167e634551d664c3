"""The embedded default model that ships in the package: it loads offline, is small, and the quickstart works."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from face0cli.cli.app import app
from face0cli.synthetic.default import DEFAULT_MODEL_DIR, default_model

runner = CliRunner()
QUICKSTART = "a photo of a person in a red shirt on a blue background"


def run(*args: object):
    return runner.invoke(app, [str(a) for a in args])


def test_the_default_model_ships_with_its_embedder_judge_and_examples() -> None:
    model = default_model()
    assert model == DEFAULT_MODEL_DIR
    cfg = json.loads((model / "face0.json").read_text())
    assert cfg["embedder_id"].startswith("synthetic/facenet-")
    for part in ("unet", "vae", "text_encoder", "tokenizer", "scheduler", "projector", "embedder", "judge", "gmm"):
        assert (model / part).is_dir(), part
    assert not list(model.rglob("*.bin")) and not list(model.rglob("*.pt"))  # safetensors only
    size = sum(f.stat().st_size for f in model.rglob("*") if f.is_file())
    assert size <= 40 * 2**20, size
    from face0cli.library.store import FaceStore

    names = {c.name for c in FaceStore(model / "characters.h5").list()}
    assert {"ada", "bruno"} <= names


def test_quickstart_generates_offline_with_an_example_character(tmp_path: Path) -> None:
    out = tmp_path / "ada.png"
    r = run("generate", "--face", "ada", "--prompt", QUICKSTART, "--steps", 6, "--seed", 1, "--out", out, "--json")
    assert r.exit_code == 0, r.output
    img = Image.open(out)
    assert img.size == (64, 64)
    params = json.loads(img.info["face0"])
    assert params["face"]["label"] == "ada" and params["prompt"] == QUICKSTART
    a = np.asarray(img.convert("RGB"), dtype=float)
    assert a.std() > 10  # an image, not a flat colour


def test_the_default_model_samples_at_the_steps_its_scorecard_measured_unless_asked(tmp_path: Path) -> None:
    from face0cli.synthetic.package import SAMPLE_STEPS

    assert json.loads((DEFAULT_MODEL_DIR / "face0.json").read_text())["steps"] == SAMPLE_STEPS == 25
    r = run("generate", "--face", "ada", "--prompt", QUICKSTART, "--out", tmp_path / "a.png")
    assert r.exit_code == 0, r.output
    assert json.loads(Image.open(tmp_path / "a.png").info["face0"])["steps"] == SAMPLE_STEPS
    jobs = tmp_path / "jobs.jsonl"
    lines = [
        {"prompt": QUICKSTART, "out": str(tmp_path / "b.png")},
        {"prompt": QUICKSTART, "steps": 3, "out": str(tmp_path / "c.png")},
    ]
    jobs.write_text("".join(json.dumps(job) + "\n" for job in lines))
    r = run("generate", "--jobs", jobs, "--out", tmp_path)
    assert r.exit_code == 0, r.output
    assert [json.loads(Image.open(tmp_path / f).info["face0"])["steps"] for f in ("b.png", "c.png")] == [25, 3]
    r = run("debias", "--prompt", QUICKSTART, "--n", 1, "--out", tmp_path / "deb")
    assert r.exit_code == 0, r.output
    images = [p for p in (tmp_path / "deb").glob("*.png") if p.name != "grid.png"]
    assert [json.loads(Image.open(p).info["face0"])["steps"] for p in images] == [SAMPLE_STEPS]


def test_a_user_character_wins_over_an_example_of_the_same_name(tmp_path: Path) -> None:
    src = DEFAULT_MODEL_DIR.parent.parent.parent / "characters" / "bruno.png"
    if not src.is_file():
        from face0cli.synthetic.package import reference_portrait

        src = tmp_path / "bruno.png"
        reference_portrait(401).save(src)
    r = run("embed", src, "--name", "ada")  # the default model's synthetic embedder
    assert r.exit_code == 0, r.output
    r = run("character", "show", "ada", "--json")
    assert r.exit_code == 0 and "synthetic/facenet-" in r.stdout


def test_example_characters_mix_into_the_users_library(tmp_path: Path) -> None:
    from face0cli.library.store import FaceStore

    examples = DEFAULT_MODEL_DIR / "characters.h5"
    before = examples.read_bytes()
    r = run("mix", "ada", "bruno", "--t", 0.25, "--name", "adabruno", "--json")
    assert r.exit_code == 0, r.output
    store = FaceStore(tmp_path / "store" / "characters.h5")  # the user's library (conftest), not the examples
    ex = FaceStore(examples)
    want = 0.75 * ex.get("ada").vector.astype(np.float64) + 0.25 * ex.get("bruno").vector
    np.testing.assert_allclose(store.get("adabruno").vector, want, rtol=1e-5, atol=1e-6)
    assert examples.read_bytes() == before and "adabruno" not in ex
    r = run("mix", "ada", "nobody", "--t", 0.5, "--name", "x")
    assert r.exit_code != 0 and "nobody" in r.output and "Traceback" not in r.output


def test_character_list_and_show_include_the_models_examples() -> None:
    r = run("character", "list")
    assert r.exit_code == 0 and "no characters in" in r.output and "example characters of the model" in r.output
    assert all(n in r.output for n in ("ada", "bruno", "chen", "dara"))
    assert json.loads(run("character", "list", "--json").stdout) == []  # --json: the library only, as before
    r = run("character", "show", "chen")
    assert r.exit_code == 0 and "an example character of the model" in r.output
    assert json.loads(run("character", "show", "chen", "--json").stdout)["name"] == "chen"
    run("mix", "ada", "bruno", "--name", "mine")  # the user's own character is listed first, examples after
    r = run("character", "list", "--kind", "mix")
    assert r.exit_code == 0 and "mine" in r.output and "example characters" not in r.output  # the filter applies


def test_character_sheet_shows_the_models_examples_after_the_library(tmp_path: Path) -> None:
    from face0cli.library.sheet import PLACEHOLDER
    from face0cli.library.store import FaceStore
    from face0cli.synthetic.package import EXAMPLES

    examples = FaceStore(DEFAULT_MODEL_DIR / EXAMPLES)
    assert examples.get("ada").has_thumbnail
    out = tmp_path / "examples.png"
    r = run("character", "sheet", "--out", out, "--tile", 64, "--json")  # a fresh library: the examples alone
    assert r.exit_code == 0, r.output
    every = Image.open(out)
    one = tmp_path / "ada.png"
    assert run("character", "sheet", "ada", "--out", one, "--tile", 64).exit_code == 0
    ada = np.asarray(Image.open(one).convert("RGB"))
    assert ada.shape[1] < every.width  # one tile against all the examples
    tile = ada[ada.shape[0] // 2 - 8 : ada.shape[0] // 2 + 8, 16:48]
    assert not (tile == np.array(PLACEHOLDER, np.uint8)).all(axis=-1).mean() > 0.5  # ada's portrait, not a blank
    run("mix", "ada", "bruno", "--name", "mine")
    both = tmp_path / "both.png"  # a selection may name the library's own characters and the examples
    assert run("character", "sheet", "mine", "ada", "--out", both, "--tile", 64).exit_code == 0
    assert Image.open(both).width > ada.shape[1]
    r = run("character", "sheet", "nobody", "--out", tmp_path / "x.png")
    assert r.exit_code != 0 and "nobody" in r.output and not (tmp_path / "x.png").exists()


def test_a_photo_is_embedded_with_the_synthetic_embedder_and_no_face_is_a_clean_error(photo_dir: Path) -> None:
    r = run("embed", photo_dir / "astronaut.jpg", "--name", "eileen")
    assert r.exit_code == 0, r.output
    r = run("embed", photo_dir / "coffee.jpg", "--name", "cup")
    assert r.exit_code != 0 and "no face" in r.stderr and "Traceback" not in r.output


def test_another_size_than_the_trained_one_warns(tmp_path: Path) -> None:
    out = tmp_path / "big.png"
    r = run("generate", "--face", "random:3", "--prompt", QUICKSTART, "--steps", 2, "--size", 96, "--out", out)
    assert r.exit_code == 0, r.output
    assert "trained at 64x64" in r.stderr


@pytest.mark.parametrize("c", ["0.5"])
def test_stylised_sampling_with_three_branches(tmp_path: Path, c: str) -> None:
    out = tmp_path / "s.png"
    r = run(
        "generate", "--face", "chen", "--prompt", "a pencil sketch of a person", "--c", c, "--steps", 3, "--out", out
    )
    assert r.exit_code == 0, r.output
    assert out.is_file()


# ------------------------------------------------------------------------------------------------ face0 eval


def test_the_synthetic_judge_is_registered_and_tells_people_apart(tmp_path: Path) -> None:
    from face0cli.errors import BadInput, MissingWeights
    from face0cli.evaluation.judges import JudgeContext, make_judge
    from face0cli.synthetic.package import other_portraits, reference_portrait

    judge = make_judge("synthetic", {}, JudgeContext(clip_id=None))
    assert judge.id.startswith("synthetic:") and judge.encoder_id == ""
    a = [reference_portrait(9000), *other_portraits(9000)]  # identities far beyond the world's: never trained on
    b = [reference_portrait(9001), *other_portraits(9001)]
    z = np.stack(judge.embed_faces([im.resize((128, 128)) for im in a + b]))  # any size: resized to 64 whole
    assert np.allclose(np.linalg.norm(z, axis=1), 1.0, atol=1e-4)
    sims = z @ z.T
    same = [sims[i, j] for grp in ((0, 1, 2), (3, 4, 5)) for i in grp for j in grp if i < j]
    cross = [sims[i, j] for i in (0, 1, 2) for j in (3, 4, 5)]
    assert min(same) > max(cross)
    with pytest.raises(BadInput, match="takes weights"):
        make_judge("synthetic", {"size": 3}, JudgeContext(clip_id=None))
    with pytest.raises(MissingWeights, match="model.safetensors"):
        make_judge("synthetic", {"weights": str(tmp_path)}, JudgeContext(clip_id=None))


@pytest.mark.slow
def test_eval_runs_offline_on_the_default_model_with_the_synthetic_judge(tmp_path: Path) -> None:
    from face0cli.synthetic.package import other_portraits, reference_portrait

    photos = {}
    for name, ident in (("p1", 9000), ("p2", 9001)):
        paths = [tmp_path / f"{name}-{k}.png" for k in range(3)]
        for p, im in zip(paths, [reference_portrait(ident), *other_portraits(ident)]):
            im.save(p)
        photos[name] = [str(p) for p in paths]
    spec = {
        "clip": None,
        "identities": {n: {"photos": p} for n, p in photos.items()},
        "prompts": [QUICKSTART],
        "seeds": 1,
        "settings": {"quick": {"steps": 8}},
        "judges": ["synthetic"],
    }
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    r = run("eval", "run", tmp_path / "spec.json", "--out", tmp_path / "out")  # no model: the embedded default
    assert r.exit_code == 0, r.output
    res = json.loads((tmp_path / "out" / "results.json").read_text())
    assert res["models"] == {
        str(DEFAULT_MODEL_DIR): json.loads((DEFAULT_MODEL_DIR / "face0.json").read_text())["embedder_id"]
    }
    faces = res["aggregates"]["quick"]["synthetic"]
    assert faces["all"]["found"]["mean"] == 1.0 and faces["all"]["face"]["n"] == 2
    assert all(img["conditioning"]["kind"] == "photo" for img in res["images"])
