"""face0 generate with --init/--strength/--mask, --controlnet/--control, --lora and the A1111 text, on the tiny
model of tests/test_generate_cli.py: each changes the image, is recorded in the PNG and reproduced by --from-png."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from face0cli.faces.images import file_sha256
from tests.test_cli import add_char, assert_clean_error
from tests.test_generate_cli import DIM, _model_env, gen, model_dir, pixels, run  # noqa: F401 (fixtures)
from tests.test_pipeline_ecosystem import controlnet_of, lora_file  # noqa: F401 (fixture)


def picture(path: Path, seed: int, mode: str = "RGB") -> Path:
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).convert(mode).save(path)
    return path


def params_of(path: Path) -> dict:
    return json.loads(Image.open(path).text["face0"])


def reproduces(tmp_path: Path, out: Path) -> None:
    again = tmp_path / f"{out.stem}-again.png"
    r = run("generate", "--from-png", out, "--out", again)
    assert r.exit_code == 0, r.output
    np.testing.assert_array_equal(pixels(out), pixels(again))


@pytest.mark.slow
def test_init_strength_and_mask_change_the_image_are_recorded_and_reproduced(tmp_path: Path) -> None:
    add_char("alice", dim=DIM, seed=1)
    init, mask = picture(tmp_path / "init.png", 1), tmp_path / "mask.png"
    m = np.zeros((32, 32), np.uint8)
    m[:, 16:] = 255
    Image.fromarray(m).save(mask)
    common = ("--face", "alice", "--prompt", "a person", "--seed", 2, "--steps", 5)
    assert gen(*common, "--out", tmp_path / "plain.png").exit_code == 0
    r = gen(*common, "--init", init, "--strength", 0.6, "--out", tmp_path / "i2i.png")
    assert r.exit_code == 0, r.output
    assert np.abs(pixels(tmp_path / "plain.png") - pixels(tmp_path / "i2i.png")).max() > 0
    p = params_of(tmp_path / "i2i.png")
    assert p["strength"] == 0.6 and p["init"] == {"path": str(init.resolve()), "sha256": file_sha256(init)}
    reproduces(tmp_path, tmp_path / "i2i.png")
    r = gen(*common, "--init", init, "--mask", mask, "--out", tmp_path / "inpaint.png")
    assert r.exit_code == 0, r.output
    p = params_of(tmp_path / "inpaint.png")
    assert p["strength"] == 0.8 and p["mask"]["sha256"] == file_sha256(mask)  # the default strength, recorded
    assert np.abs(pixels(tmp_path / "inpaint.png") - pixels(tmp_path / "i2i.png")).max() > 0
    reproduces(tmp_path, tmp_path / "inpaint.png")
    # a changed init image is refused rather than silently giving another picture
    picture(init, 9)
    assert_clean_error(run("generate", "--from-png", tmp_path / "i2i.png", "--out", tmp_path / "x.png"), "changed")


def test_bad_input_options_are_clean_errors(tmp_path: Path) -> None:
    init = picture(tmp_path / "init.png", 1)
    out = ("--prompt", "x", "--out", tmp_path / "o.png")
    assert_clean_error(gen("--init", init, "--strength", 1.5, *out), "--strength", "[0, 1]")
    assert_clean_error(gen("--init", init, "--strength", -0.1, *out), "--strength")
    assert_clean_error(gen("--strength", 0.5, *out), "--init")
    assert_clean_error(gen("--mask", init, *out), "--init")
    assert_clean_error(gen("--control", init, *out), "--controlnet")
    assert_clean_error(gen("--init", tmp_path / "missing.png", *out), "does not exist")
    assert_clean_error(gen("--controlnet", tmp_path, "--control", init, *out), "controlnet")
    assert not (tmp_path / "o.png").exists()


@pytest.mark.slow
def test_lora_changes_the_image_is_recorded_and_reproduced(tmp_path: Path, lora_file: Path) -> None:  # noqa: F811
    common = ("--prompt", "a person", "--seed", 1)
    assert gen(*common, "--out", tmp_path / "plain.png").exit_code == 0
    r = gen(*common, "--lora", f"{lora_file}:1", "--out", tmp_path / "lora.png")
    assert r.exit_code == 0, r.output
    assert np.abs(pixels(tmp_path / "plain.png") - pixels(tmp_path / "lora.png")).max() > 0
    assert params_of(tmp_path / "lora.png")["loras"] == [
        {"path": str(lora_file.resolve()), "sha256": file_sha256(lora_file), "scale": 1.0}
    ]
    reproduces(tmp_path, tmp_path / "lora.png")
    r = gen(*common, "--lora", f"{lora_file}:0", "--out", tmp_path / "zero.png")
    assert r.exit_code == 0, r.output
    assert np.abs(pixels(tmp_path / "plain.png") - pixels(tmp_path / "zero.png")).max() <= 1  # scale 0 = no LoRA
    ckpt = tmp_path / "style.ckpt"
    ckpt.write_bytes(b"not a pickle")
    assert_clean_error(gen(*common, "--lora", ckpt, "--out", tmp_path / "x.png"), "safetensors")
    fake = tmp_path / "fake.safetensors"
    fake.write_bytes(b"garbage")
    assert_clean_error(gen(*common, "--lora", fake, "--out", tmp_path / "x.png"), "safetensors")


def test_lora_without_peft_is_one_line_naming_the_extra_before_the_model_loads(
    tmp_path: Path,
    lora_file: Path,  # noqa: F811
    no_peft: None,
) -> None:
    r = gen("--prompt", "a person", "--lora", f"{lora_file}:1", "--out", tmp_path / "lora.png")
    assert_clean_error(r, "--lora needs peft", "pip install 'face0[lora]'")
    assert r.exit_code == 10 and not (tmp_path / "lora.png").exists()
    assert gen("--prompt", "a person", "--steps", 2, "--out", tmp_path / "plain.png").exit_code == 0  # the rest works


def test_controlnet_changes_the_image_is_recorded_and_reproduced(tmp_path: Path, model_dir: Path) -> None:  # noqa: F811
    from face0cli.model.pipeline import Face0Pipeline

    net_dir = tmp_path / "controlnet"
    controlnet_of(Face0Pipeline.load(str(model_dir)), zero=False).save_pretrained(net_dir)
    pose = picture(tmp_path / "pose.png", 7)
    common = ("--prompt", "a person", "--seed", 1)
    assert gen(*common, "--out", tmp_path / "plain.png").exit_code == 0
    r = gen(*common, "--controlnet", net_dir, "--control", pose, "--control-scale", 0.7, "--out", tmp_path / "cn.png")
    assert r.exit_code == 0, r.output
    assert np.abs(pixels(tmp_path / "plain.png") - pixels(tmp_path / "cn.png")).max() > 0
    p = params_of(tmp_path / "cn.png")
    assert p["controlnet"] == str(net_dir.resolve()) and p["control_scale"] == 0.7
    assert p["control"]["sha256"] == file_sha256(pose)
    reproduces(tmp_path, tmp_path / "cn.png")


def test_a1111_text_is_written_and_a_png_with_only_it_is_reproduced(tmp_path: Path) -> None:
    out = tmp_path / "a.png"
    r = gen("--prompt", "a photo of a person", "--negative", "blurry", "--seed", 5, "--w", 6, "--out", out)
    assert r.exit_code == 0, r.output
    text = Image.open(out).text
    assert "face0" in text
    lines = text["parameters"].splitlines()
    assert lines[0] == "a photo of a person" and lines[1] == "Negative prompt: blurry"
    for part in ("Steps: 3", "Sampler: DDIM", "CFG scale: 6", "Seed: 5", "Size: 32x32", "Model hash: ", "Face0 c: "):
        assert part in lines[2], lines[2]
    # the same text alone, as another tool would write it
    only = tmp_path / "only.png"
    info = PngInfo()
    info.add_text("parameters", text["parameters"] + ", Hires upscale: 2")
    Image.open(out).convert("RGB").save(only, pnginfo=info)
    again = tmp_path / "only-again.png"
    r = run("generate", "--from-png", only, "--out", again)
    assert r.exit_code == 0, r.output
    np.testing.assert_array_equal(pixels(out), pixels(again))
    assert "A1111" in r.stderr and "Hires upscale" in r.stderr and "Model hash" in r.stderr
    p = params_of(again)
    assert (p["prompt"], p["negative"], p["seed"], p["w"], p["steps"]) == ("a photo of a person", "blurry", 5, 6, 3)
    # no parameters at all: one clean line
    bare = picture(tmp_path / "bare.png", 3)
    assert_clean_error(run("generate", "--from-png", bare, "--out", tmp_path / "x.png"), "no face0 parameters")


def test_jobs_take_the_image_inputs_and_report_bad_ones_per_line(tmp_path: Path, lora_file: Path) -> None:  # noqa: F811
    add_char("alice", dim=DIM, seed=1)
    init = picture(tmp_path / "init.png", 1)
    common = {"prompt": "a person", "face": "alice", "seed": 2, "steps": 3}
    jobs = tmp_path / "jobs.jsonl"
    lines = [
        common | {"init": str(init), "strength": 0.5, "out": str(tmp_path / "a")},
        common | {"lora": f"{lora_file}:0.5", "out": str(tmp_path / "b")},
        common | {"strength": 0.5},  # no init image
        common | {"lora": [3]},  # wrong type
    ]
    jobs.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    r = run("generate", "--jobs", jobs, "--out", tmp_path / "out", "--json")
    records = [json.loads(x) for x in r.stdout.strip().splitlines()]
    assert [x["ok"] for x in records] == [True, True, False, False], r.output
    assert "--init" in records[2]["error"] and "lora" in records[3]["error"]
    a = params_of(Path(records[0]["images"][0]))
    assert a["strength"] == 0.5 and a["init"]["sha256"] == file_sha256(init)
    assert params_of(Path(records[1]["images"][0]))["loras"][0]["scale"] == 0.5
    reproduces(tmp_path, Path(records[0]["images"][0]))
