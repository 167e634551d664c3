"""generate, debias, character new and mix --strip through the CLI on a tiny model directory saved to disk."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from face0cli.cli.app import app
from face0cli.library.store import FaceStore
from tests.test_cli import add_char, assert_clean_error, digest, store_path

runner = CliRunner()
EMBEDDER = "test/emb"
DIM = 8


def run(*args: object):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny face0 model directory (32x32 images) with a GMM of 8-d faces from embedder 'test/emb'."""
    from face0cli.library.face_space import FaceGMM
    from face0cli.model.tiny import tiny_pipeline

    pipe = tiny_pipeline(seed=0, embed_dim=DIM)
    pipe.face0_config = dataclasses.replace(pipe.face0_config, embedder_id=EMBEDDER)
    train = np.random.default_rng(0).standard_normal((200, DIM)).astype(np.float32)
    pipe.gmm = FaceGMM.fit(train, embedder_id=EMBEDDER)
    path = tmp_path_factory.mktemp("model") / "tiny-face0"
    pipe.save_pretrained(path)
    return path


@pytest.fixture(autouse=True)
def _model_env(model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FACE0_MODEL", str(model_dir))


def gen(*args: object):
    return run("generate", "--steps", 3, *args)


def pixels(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"), dtype=np.int16)


@pytest.mark.slow
def test_generate_writes_png_with_parameters_and_from_png_reproduces(tmp_path: Path) -> None:
    add_char("alice", dim=DIM, seed=1)
    out = tmp_path / "a.png"
    r = gen("--face", "alice", "--prompt", "a photo of a person", "--seed", 5, "--c", 0.7, "--out", out, "--json")
    assert r.exit_code == 0, r.output
    res = json.loads(r.stdout)
    assert res[0]["path"] == str(out) and res[0]["seed"] == 5
    assert res[0]["unet_calls_per_step"] == 3  # c=0.7, a=0: u, d, df
    params = json.loads(Image.open(out).text["face0"])
    assert params["c"] == 0.7 and params["prompt"] == "a photo of a person" and params["face"]["label"] == "alice"
    again = tmp_path / "again.png"
    r = run("generate", "--from-png", out, "--out", again)
    assert r.exit_code == 0, r.output
    np.testing.assert_array_equal(pixels(out), pixels(again))
    # the face travels inside the PNG: removing the character does not change the reproduction
    FaceStore(store_path()).remove("alice")
    again2 = tmp_path / "again2.png"
    assert run("generate", "--from-png", out, "--out", again2).exit_code == 0
    np.testing.assert_array_equal(pixels(out), pixels(again2))


def test_keep_the_seed_swap_the_face(tmp_path: Path) -> None:
    add_char("alice", dim=DIM, seed=1)
    add_char("bob", dim=DIM, seed=2)
    for face in ("alice", "bob"):
        assert (
            gen("--face", face, "--prompt", "a person", "--seed", 3, "--out", tmp_path / f"{face}.png").exit_code == 0
        )
    assert gen("--face", "alice", "--prompt", "a person", "--seed", 3, "--out", tmp_path / "a2.png").exit_code == 0
    np.testing.assert_array_equal(pixels(tmp_path / "alice.png"), pixels(tmp_path / "a2.png"))
    assert np.abs(pixels(tmp_path / "alice.png") - pixels(tmp_path / "bob.png")).max() > 0


@pytest.mark.slow
def test_generate_several_random_and_none(tmp_path: Path) -> None:
    r = gen("--face", "random:4", "--prompt", "x", "--n", 3, "--out", tmp_path / "r", "--json")
    assert r.exit_code == 0, r.output
    res = json.loads(r.stdout)
    assert [x["seed"] for x in res] == [0, 1, 2]
    assert all(Path(x["path"]).exists() for x in res)
    assert res[0]["face"] == "random:4"
    r = gen("--face", "none", "--prompt", "x", "--out", tmp_path / "none.png")
    assert r.exit_code == 0, r.output
    r = gen("--prompt", "x", "--out", tmp_path / "none.png")
    assert_clean_error(r, "--force")


@pytest.mark.slow
def test_batch_renders_the_same_images_and_says_so(tmp_path: Path) -> None:
    """--batch 3 of --n 4: images 0-2 in one call, image 3 alone; each the --batch 1 image to float rounding,
    its PNG says its batch, and --from-png redraws it alone to the same tolerance."""
    add_char("alice", dim=DIM, seed=1)
    assert gen("--face", "alice", "--prompt", "x", "--n", 4, "--out", tmp_path / "one").exit_code == 0
    r = gen("--face", "alice", "--prompt", "x", "--n", 4, "--batch", 3, "--out", tmp_path / "three", "--json")
    assert r.exit_code == 0, r.output
    res = json.loads(r.stdout)
    assert [x["seed"] for x in res] == [0, 1, 2, 3]
    ones = sorted((tmp_path / "one").glob("*.png"))
    threes = [Path(x["path"]) for x in res]
    assert [p.name for p in ones] == [p.name for p in threes]
    for one, three in zip(ones, threes):
        assert np.abs(pixels(one) - pixels(three)).max() <= 2  # float rounding in the batched UNet
    assert np.abs(pixels(threes[0]) - pixels(threes[1])).max() > 10  # each image its own seed
    assert [json.loads(Image.open(p).text["face0"]).get("batch") for p in threes] == [3, 3, 3, None]
    again = tmp_path / "again.png"
    assert run("generate", "--from-png", threes[1], "--out", again).exit_code == 0
    assert np.abs(pixels(again) - pixels(ones[1])).max() == 0  # --from-png draws one image alone
    # debias batches its fresh faces the same way
    r = run("debias", "--prompt", "x", "--n", 3, "--steps", 3, "--batch", 3, "--out", tmp_path / "deb", "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(Image.open(tmp_path / "deb" / "debias-000.png").text["face0"])["batch"] == 3


@pytest.mark.parametrize("command", [["generate", "--face", "none", "--prompt", "x"], ["debias", "--prompt", "x"]])
def test_batch_below_one_is_one_line_before_the_model_loads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, command: list[str]
) -> None:
    monkeypatch.setenv("FACE0_MODEL", str(tmp_path / "no-such-model"))
    r = run(*command, "--batch", 0, "--out", tmp_path / "out")
    assert_clean_error(r, "--batch must be a whole number >= 1")
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_sweep_grid(tmp_path: Path) -> None:
    add_char("alice", dim=DIM, seed=1)
    out = tmp_path / "sweep.png"
    r = gen("--face", "alice", "--prompt", "x", "--sweep", "c=0,0.5,1", "--sweep", "a=0,1", "--out", out)
    assert r.exit_code == 0, r.output
    grid = Image.open(out)
    assert grid.width > 2 * 128 and grid.height > 3 * 128  # 3 rows x 2 columns of upscaled 32 px tiles
    assert json.loads(grid.text["face0"])["sweep"] == ["c=0,0.5,1", "a=0,1"]


@pytest.mark.slow
def test_jobs_file_reports_bad_lines_and_runs_the_rest(tmp_path: Path) -> None:
    add_char("alice", dim=DIM, seed=1)
    jobs = tmp_path / "jobs.jsonl"
    jobs.write_text(
        "\n".join(
            [
                json.dumps({"face": "alice", "prompt": "p1", "out": str(tmp_path / "j1.png")}),
                "{not json",
                json.dumps({"face": "ghost", "prompt": "p2"}),
                json.dumps({"face": "alice", "prompt": "p3", "c": "nan"}),
                json.dumps({"face": "random:1", "prompt": "p4", "n": 2, "out": str(tmp_path / "j4")}),
            ]
        )
    )
    r = run("generate", "--jobs", jobs, "--out", tmp_path / "jobs-out")
    assert r.exit_code == 1
    lines = [json.loads(x) for x in r.stdout.splitlines()]
    assert [x["line"] for x in lines] == [1, 2, 3, 4, 5]
    assert [x["ok"] for x in lines] == [True, False, False, False, True]
    assert "ghost" in lines[2]["error"]
    assert (tmp_path / "j1.png").exists() and len(lines[4]["images"]) == 2


@pytest.mark.slow
def test_jobs_batch_across_consecutive_jobs_of_one_setting(tmp_path: Path) -> None:
    """--jobs with --batch 2: consecutive one-image jobs of one setting share a pipeline call; a bad line, another
    setting, or a path that a job of the run writes starts a new run; the records, their order and every image are
    those of --batch 1 (to float rounding), and each PNG says its batch."""
    add_char("alice", dim=DIM, seed=1)
    add_char("bob", dim=DIM, seed=2)

    def jobs(name: str) -> Path:
        d = tmp_path / name
        lines = [
            {"face": "alice", "prompt": "p1", "seed": 1, "out": str(d / "1.png")},
            {"face": "bob", "prompt": "p2", "seed": 2, "out": str(d / "2.png")},
            {"face": "alice", "prompt": "p3", "seed": 3, "out": str(d / "3.png")},
            {"face": "ghost", "prompt": "p4"},  # a bad line: the run before it renders first
            {"face": "bob", "prompt": "p5", "out": str(d / "5.png")},
            {"face": "alice", "prompt": "p6", "w": 3.0, "out": str(d / "6.png")},  # another setting
            {"face": "bob", "prompt": "p7", "w": 3.0, "out": str(d / "6.png")},  # job 6's path: exists, as one by one
            {"face": "alice", "prompt": "p8", "w": 3.0, "out": str(d / "8.png")},
            {"face": "bob", "prompt": "p9", "w": 3.0, "seed": 9, "out": str(d / "9.png")},
        ]
        f = tmp_path / f"{name}.jsonl"
        f.write_text("\n".join(json.dumps({**x, "steps": 3}) for x in lines))
        return f

    one = run("generate", "--jobs", jobs("one"), "--out", tmp_path / "o1")
    two = run("generate", "--jobs", jobs("two"), "--out", tmp_path / "o2", "--batch", 2)
    assert one.exit_code == two.exit_code == 1 and "Traceback" not in two.output
    records = [json.loads(x) for x in two.stdout.splitlines()]
    assert [(x["line"], x["ok"]) for x in records] == [
        (x["line"], x["ok"]) for x in map(json.loads, one.stdout.splitlines())
    ]
    assert [x["line"] for x in records if not x["ok"]] == [4, 7]
    assert "ghost" in records[3]["error"] and "exists already" in records[6]["error"]
    batch = {}
    for k in (1, 2, 3, 5, 6, 8, 9):
        a, b = tmp_path / "one" / f"{k}.png", tmp_path / "two" / f"{k}.png"
        assert np.abs(pixels(a) - pixels(b)).max() <= 2  # float rounding in the batched UNet
        assert json.loads(Image.open(b).text["face0"])["prompt"] == f"p{k}"
        batch[k] = json.loads(Image.open(b).text["face0"]).get("batch")
    assert batch == {1: 2, 2: 2, 3: None, 5: None, 6: None, 8: 2, 9: 2}
    assert np.abs(pixels(tmp_path / "two" / "1.png") - pixels(tmp_path / "two" / "2.png")).max() > 10


def test_jobs_from_standard_input(tmp_path: Path) -> None:
    """--jobs - reads the jobs from standard input: the same records and images as from a file, batched alike; input
    that is not UTF-8 is one line on stderr and a non-zero exit."""
    add_char("alice", dim=DIM, seed=1)
    lines = [
        json.dumps({"face": "alice", "prompt": "p1", "steps": 2, "out": str(tmp_path / "in" / "1.png")}),
        "{not json",
        json.dumps({"face": "random:3", "prompt": "p3", "steps": 2, "out": str(tmp_path / "in" / "3.png")}),
    ]
    r = runner.invoke(
        app, ["generate", "--jobs", "-", "--batch", "2", "--out", str(tmp_path / "o")], input="\n".join(lines)
    )
    assert r.exit_code == 1 and "Traceback" not in r.output
    records = [json.loads(x) for x in r.stdout.splitlines()]
    assert [(x["line"], x["ok"]) for x in records] == [(1, True), (2, False), (3, True)]
    assert r.stderr.strip().startswith("error: <stdin>:2: not valid JSON")
    params = [json.loads(Image.open(tmp_path / "in" / f"{k}.png").text["face0"]) for k in (1, 3)]
    assert [x["prompt"] for x in params] == ["p1", "p3"] and [x.get("batch") for x in params] == [None, None]
    (tmp_path / "jobs.jsonl").write_text("\n".join(lines).replace("/in/", "/file/"))
    assert run("generate", "--jobs", tmp_path / "jobs.jsonl", "--out", tmp_path / "o").exit_code == 1
    assert np.abs(pixels(tmp_path / "in" / "3.png") - pixels(tmp_path / "file" / "3.png")).max() == 0
    bad = runner.invoke(app, ["generate", "--jobs", "-", "--out", str(tmp_path / "o2")], input=b"\xff\xfe{}\n")
    assert bad.exit_code != 0 and "Traceback" not in bad.output and bad.stdout == ""
    assert bad.stderr.strip() == "error: standard input (--jobs -) is not UTF-8 text."


def test_jobs_batched_call_that_fails_is_retried_job_by_job(
    tmp_path: Path, model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When a call batched across jobs fails, its jobs render again one by one: the error is the failing job's
    only, and the jobs beside it still write their images."""
    from face0cli.errors import ModelError
    from face0cli.generation import generate
    from face0cli.generation.context import ModelContext
    from face0cli.generation.jobs import run_jobs

    real_batch, real_render = generate.render_batch, generate.render
    calls: list[list[str]] = []

    def render_batch(pipe, reqs, **kw):  # type: ignore[no-untyped-def]
        calls.append([r.prompt for r in reqs])
        if any(r.prompt == "bad" for r in reqs):
            raise ModelError("the bad prompt broke the sampler.")
        return real_batch(pipe, reqs, **kw)

    def render(pipe, req, **kw):  # type: ignore[no-untyped-def]
        calls.append([req.prompt])
        if req.prompt == "bad":
            raise ModelError("the bad prompt broke the sampler.")
        return real_render(pipe, req, **kw)

    monkeypatch.setattr(generate, "render_batch", render_batch)
    monkeypatch.setattr(generate, "render", render)
    jobs = tmp_path / "jobs.jsonl"
    jobs.write_text("\n".join(json.dumps({"face": "random:1", "prompt": p, "steps": 2}) for p in ("a", "bad", "c")))
    ctx = ModelContext(str(model_dir), store=tmp_path / "lib.h5")
    records = list(run_jobs(ctx, jobs, tmp_path / "out", batch=3))
    assert calls[0] == ["a", "bad", "c"] and all(len(c) == 1 for c in calls[1:])  # batched, then one by one
    assert [(x["line"], x["ok"]) for x in records] == [(1, True), (2, False), (3, True)]
    assert records[1]["error"] == "the bad prompt broke the sampler."
    assert all(Path(x["images"][0]).is_file() for x in (records[0], records[2]))


def test_jobs_batched_run_that_fails_late_keeps_the_jobs_it_finished(
    tmp_path: Path, model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run of jobs takes several batched calls when its last job has more images than fit the first; when a
    later call fails, the jobs that the earlier calls wrote stand (they do not render again, so they cannot fail
    now), and the error is the unfinished job's."""
    from face0cli.errors import ModelError
    from face0cli.generation import generate
    from face0cli.generation.context import ModelContext
    from face0cli.generation.jobs import run_jobs

    real_batch = generate.render_batch
    calls: list[list[str]] = []

    def render_batch(pipe, reqs, **kw):  # type: ignore[no-untyped-def]
        calls.append([r.prompt for r in reqs])
        if len(calls) > 1:  # the sampler breaks after the run's first call
            raise ModelError("the sampler ran out of memory.")
        return real_batch(pipe, reqs, **kw)

    def render(pipe, req, **kw):  # type: ignore[no-untyped-def]
        calls.append([req.prompt])
        raise ModelError("the sampler ran out of memory.")

    monkeypatch.setattr(generate, "render_batch", render_batch)
    monkeypatch.setattr(generate, "render", render)
    jobs = tmp_path / "jobs.jsonl"
    lines = [{"face": "random:1", "prompt": "a", "steps": 2}, {"face": "random:2", "prompt": "b", "n": 3, "steps": 2}]
    jobs.write_text("\n".join(json.dumps(x) for x in lines))
    ctx = ModelContext(str(model_dir), store=tmp_path / "lib.h5")
    records = list(run_jobs(ctx, jobs, tmp_path / "out", batch=2))
    assert calls == [["a", "b"], ["b", "b"]]  # one run: [a, b0], then [b1, b2] fails; job 1 is not drawn again
    assert [(x["line"], x["ok"]) for x in records] == [(1, True), (2, False)]
    assert Path(records[0]["images"][0]).is_file() and records[1]["error"] == "the sampler ran out of memory."


def test_jobs_field_of_the_wrong_type_is_its_lines_error(tmp_path: Path) -> None:
    jobs = tmp_path / "jobs.jsonl"
    lines = [
        {"prompt": "p1", "seed": "five"},
        {"prompt": "p2", "steps": True},
        {"prompt": 3},
        {"prompt": "p4", "face": 7},
        {"prompt": "p5", "out": str(tmp_path / "ok.png")},
    ]
    jobs.write_text("\n".join(json.dumps(x) for x in lines))
    r = run("generate", "--jobs", jobs, "--out", tmp_path / "jobs-out")
    assert r.exit_code == 1 and "Traceback" not in r.output
    records = [json.loads(x) for x in r.stdout.splitlines()]
    assert [x["ok"] for x in records] == [False, False, False, False, True]
    assert "'seed' must be a whole number" in records[0]["error"] and "'steps'" in records[1]["error"]
    assert "'prompt' must be text" in records[2]["error"] and "'face'" in records[3]["error"]
    assert len(r.stderr.strip().splitlines()) == 4 and (tmp_path / "ok.png").exists()


@pytest.mark.parametrize(
    "command",
    [
        ["generate", "--steps", "2", "--prompt", "x", "--out", "{blocker}/sub/a.png"],
        ["generate", "--steps", "2", "--prompt", "x", "--n", "2", "--out", "{blocker}/sub"],
        ["debias", "--steps", "2", "--prompt", "x", "--n", "2", "--out", "{blocker}/d"],
        ["mix", "alice", "bob", "--name", "ab", "--strip", "3", "--out", "{blocker}/s.png"],
        ["eval", "run", "spec.yaml", "--out", "{blocker}/e"],
        ["eval", "spec.yaml", "--out", "{blocker}"],
    ],
)
def test_out_folder_that_cannot_be_created(command: list[str], tmp_path: Path) -> None:
    add_char("alice", dim=DIM, seed=1)
    add_char("bob", dim=DIM, seed=2)
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    before = digest(store_path())
    r = run(*[a.replace("{blocker}", str(blocker)) for a in command])
    assert_clean_error(r, "--out", "a-file")
    assert blocker.read_text() == "x" and sorted(p.name for p in tmp_path.iterdir()) == ["a-file", "store"]
    assert digest(store_path()) == before


def test_pickled_model_weights_are_refused(tmp_path: Path, model_dir: Path) -> None:
    import shutil

    import torch
    from safetensors.torch import load_file

    model = tmp_path / "pickled"
    shutil.copytree(model_dir, model)
    weights = model / "unet" / "diffusion_pytorch_model.safetensors"
    torch.save(load_file(weights), model / "unet" / "diffusion_pytorch_model.bin")
    weights.unlink()
    r = gen("--prompt", "x", "--model", model, "--out", tmp_path / "a.png")
    assert_clean_error(r, "face0 loads safetensors only")
    assert not (tmp_path / "a.png").exists()


def test_debias_and_keep_a_face(tmp_path: Path, model_dir: Path) -> None:
    from face0cli.library.face_space import FaceGMM

    out = tmp_path / "doctors"
    r = run("debias", "--prompt", "a stock photo of a doctor", "--n", 3, "--steps", 2, "--seed", 10, "--out", out)
    assert r.exit_code == 0, r.output
    assert (out / "grid.png").exists() and len(list(out.glob("debias-*.png"))) == 3
    from face0cli.config import DEBIAS_A, DEBIAS_C

    params = json.loads(Image.open(out / "debias-000.png").text["face0"])
    assert (params["c"], params["a"]) == (DEBIAS_C, DEBIAS_A) != (1.0, 0.0)  # mostly the face alone, by default
    assert params["unet_calls_per_step"] == 3  # u, f and df
    plain = tmp_path / "plain"
    r = run(
        "debias", "--prompt", "a stock photo of a doctor", "--n", 1, "--steps", 2, "--c", 1, "--a", 0, "--out", plain
    )
    assert r.exit_code == 0, r.output
    params = json.loads(Image.open(plain / "debias-000.png").text["face0"])
    assert (params["c"], params["a"], params["unet_calls_per_step"]) == (1.0, 0.0, 2)  # the paper's: u and df
    r = run("character", "new", "doc1", "--from-debias", out, "--index", 1)
    assert r.exit_code == 0, r.output
    gmm = FaceGMM.load(model_dir / "gmm")
    kept = FaceStore(store_path()).get("doc1")
    np.testing.assert_array_equal(kept.vector, gmm.sample(1, seed=11)[0])
    assert kept.kind == "random" and kept.provenance["seed"] == 11
    assert_clean_error(run("character", "new", "doc9", "--from-debias", out, "--index", 7), "index")


def test_character_new_from_gmm_is_reproducible(model_dir: Path) -> None:
    from face0cli.library.face_space import FaceGMM

    assert run("character", "new", "hero", "--seed", 42).exit_code == 0
    hero = FaceStore(store_path()).get("hero")
    np.testing.assert_array_equal(hero.vector, FaceGMM.load(model_dir / "gmm").sample(1, seed=42)[0])
    assert hero.embedder_id == EMBEDDER and hero.provenance["seed"] == 42
    assert hero.provenance["gmm"] == FaceGMM.load(model_dir / "gmm").identity
    assert run("character", "new", "villain").exit_code == 0
    assert "seed" in FaceStore(store_path()).get("villain").provenance


def test_mix_strip(tmp_path: Path) -> None:
    add_char("alice", dim=DIM, seed=1)
    add_char("bob", dim=DIM, seed=2)
    out = tmp_path / "strip.png"
    r = run("mix", "alice", "bob", "--t", 0.5, "--name", "ab", "--strip", 4, "--steps", 2, "--out", out)
    assert r.exit_code == 0, r.output
    im = Image.open(out)
    assert im.width > 4 * 128 > im.height
    assert FaceStore(store_path()).get("ab").kind == "mix"
    assert json.loads(im.text["face0"])["t"] == [0.0, 1 / 3, 2 / 3, 1.0]


@pytest.mark.parametrize(
    "args,needle",
    [
        (["--face", "ghost"], "ghost"),
        (["--face", "alice", "--c", "nan"], "finite"),
        (["--face", "alice", "--w", "inf"], "finite"),
        (["--face", "alice", "--steps", "0"], "steps"),
        (["--face", "alice", "--size", "30"], "multiple"),
        (["--face", "wide"], "dimension"),
        (["--face", "other"], "embedder"),
        (["--face", "alice", "--scheduler", "magic"], "ddim"),
        (["--face", "random:1", "--prompt", ""], "prompt"),
    ],
)
def test_generate_bad_input(args: list[str], needle: str, tmp_path: Path) -> None:
    add_char("alice", dim=DIM, seed=1)
    add_char("wide", dim=16, seed=2)
    add_char("other", dim=DIM, seed=3, embedder="other/emb")
    before = digest(store_path())
    full = ["--prompt", "x", *args] if "--prompt" not in args else args
    r = gen(*full, "--out", tmp_path / "o.png")
    assert_clean_error(r, needle)
    assert not (tmp_path / "o.png").exists()
    assert digest(store_path()) == before


def test_bad_models(tmp_path: Path, model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import shutil

    monkeypatch.delenv("FACE0_MODEL")
    r = gen("--face", "none", "--prompt", "x", "--out", tmp_path / "default.png")
    assert r.exit_code == 0, r.output  # no --model: the embedded default model
    assert (tmp_path / "default.png").is_file()
    broken = tmp_path / "broken"
    shutil.copytree(model_dir, broken)
    shutil.rmtree(broken / "unet")
    assert_clean_error(gen("--face", "none", "--prompt", "x", "--model", broken), "unet")
    newer = tmp_path / "newer"
    shutil.copytree(model_dir, newer)
    cfg = json.loads((newer / "face0.json").read_text())
    cfg["format_version"] = 99
    (newer / "face0.json").write_text(json.dumps(cfg))
    assert_clean_error(gen("--face", "none", "--prompt", "x", "--model", newer, "--out", tmp_path / "n.png"), "newer")
    assert not (tmp_path / "n.png").exists()


@pytest.mark.slow
def test_generate_from_a_photo_with_the_models_embedder(
    photo_dir: Path, embedder_weights: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--face PHOTO embeds the photo with the embedder the model names; other weights are refused."""
    from face0cli.faces.embedders import FacenetEmbedder
    from face0cli.model.tiny import tiny_pipeline

    emb_id = FacenetEmbedder(weights=embedder_weights).id
    pipe = tiny_pipeline(seed=0, embed_dim=1792)
    pipe.face0_config = dataclasses.replace(pipe.face0_config, embedder_id=emb_id)
    model = tmp_path / "photo-model"
    pipe.save_pretrained(model)
    monkeypatch.setenv("FACE0_EMBEDDER_WEIGHTS", str(embedder_weights))
    out = tmp_path / "hopper.png"
    r = gen("--model", model, "--face", photo_dir / "grace_hopper.jpg", "--prompt", "x", "--out", out)
    assert r.exit_code == 0, r.output
    face = json.loads(Image.open(out).text["face0"])["face"]
    assert face["label"] == "grace_hopper.jpg" and face["dim"] == 1792
    assert face["source"]["detection"]["prob"] > 0.9
    # keep the face of a generated image as a character (paper §3.2): the tiny model draws no face
    r = run("character", "new", "fromimg", "--from-image", photo_dir / "astronaut.jpg", "--model", model)
    assert r.exit_code == 0, r.output
    assert FaceStore(store_path()).get("fromimg").dim == 1792
    assert_clean_error(
        run("character", "new", "nof", "--from-image", photo_dir / "coffee.jpg", "--model", model), "no face"
    )
    # a photo of no face, and weights that are not the model's embedder
    assert_clean_error(gen("--model", model, "--face", photo_dir / "coffee.jpg", "--prompt", "x"), "no face")
    other = tmp_path / "other.pt"
    import torch
    from facenet_pytorch import InceptionResnetV1

    torch.manual_seed(1)
    torch.save(InceptionResnetV1(pretrained=None).state_dict(), other)
    monkeypatch.setenv("FACE0_EMBEDDER_WEIGHTS", str(other))
    assert_clean_error(
        gen("--model", model, "--face", photo_dir / "grace_hopper.jpg", "--prompt", "x", "--out", tmp_path / "o.png"),
        "embedder",
    )


def test_fit_gmm_from_a_library(tmp_path: Path, model_dir: Path) -> None:
    """fit-gmm refits the model's GMM to a library's faces; random characters then come from it."""
    import shutil

    from face0cli.library.face_space import FaceGMM

    model = tmp_path / "model"
    shutil.copytree(model_dir, model)
    before = FaceGMM.load(model / "gmm").identity
    for i in range(12):
        add_char(f"c{i}", dim=DIM, seed=100 + i)
    add_char("foreign", dim=16, seed=5, embedder="other/emb")  # left out: another embedder
    r = run("fit-gmm", model, "--from", store_path(), "--max-components", 2, "--json")
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["n_train"] == 12 and out["identity"] != before
    gmm = FaceGMM.load(model / "gmm")
    assert gmm.identity == out["identity"] and gmm.n_train == 12
    assert run("character", "new", "fresh", "--seed", 3, "--model", model).exit_code == 0
    np.testing.assert_array_equal(FaceStore(store_path()).get("fresh").vector, gmm.sample(1, seed=3)[0])
    assert_clean_error(run("fit-gmm", tmp_path, "--from", store_path()), "face0.json")
    assert_clean_error(run("fit-gmm", model, "--from", tmp_path / "nope.h5"), "does not exist")


# ------------------------------------------------------------------------------------------------ thumbnails


def test_random_and_mixed_characters_get_a_rendered_thumbnail(model_dir: Path) -> None:
    from face0cli.generation.context import ModelContext, render_thumbnail

    assert run("character", "new", "thumbed", "--seed", 4).exit_code == 0
    lib = FaceStore(store_path())
    thumb = lib.thumbnail("thumbed")
    assert thumb is not None and thumb.shape == (32, 32, 3)  # the tiny model's size, kept whole
    again = render_thumbnail(ModelContext(str(model_dir)), lib.get("thumbed").vector, EMBEDDER)
    assert np.abs(np.asarray(again, np.int16) - thumb).max() <= 2  # the model's rendering of that face, seed 0
    assert run("character", "new", "bare", "--seed", 4, "--no-thumbnail").exit_code == 0
    assert FaceStore(store_path()).thumbnail("bare") is None
    add_char("alice", dim=DIM, seed=1)
    add_char("bob", dim=DIM, seed=2)
    assert run("mix", "alice", "bob", "--t", 0.5, "--name", "ab").exit_code == 0
    assert FaceStore(store_path()).thumbnail("ab") is not None


def test_a_face_the_model_cannot_draw_gets_no_thumbnail_and_no_error(tmp_path: Path) -> None:
    add_char("x1", dim=16, seed=1, embedder="other/emb")
    add_char("x2", dim=16, seed=2, embedder="other/emb")
    r = run("mix", "x1", "x2", "--name", "x12")
    assert r.exit_code == 0, r.output
    assert FaceStore(store_path()).thumbnail("x12") is None
    r = run("mix", "x1", "x2", "--name", "x13", "--model", tmp_path / "not-a-model")
    assert r.exit_code == 0, r.output  # --model is only needed for --strip; an unusable one just means no thumbnail
