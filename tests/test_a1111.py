"""A1111-readable PNG parameters: written from face0's parameters, parsed from any tool's text."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from face0cli.config import SampleConfig
from face0cli.errors import BadInput
from face0cli.generation.a1111 import a1111_parameters, model_hash, parse_a1111, quote, read_a1111
from face0cli.generation.generate import Face, Request

A1111_EXAMPLE = """masterpiece, best quality, portrait of a woman,
looking at viewer
Negative prompt: lowres, bad anatomy, (worst quality:1.4)
Steps: 28, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 7, Seed: 1234567890, Size: 512x768, \
Model hash: 6ce0161689, Model: v1-5-pruned-emaonly, Denoising strength: 0.5, Clip skip: 2, \
Lora hashes: "add_detail: 7c6bad76eb54", Version: v1.7.0"""


def face0_params(**kw) -> dict:
    req = Request(
        prompt="a photo of a person, in a red shirt",
        face=Face(None, "alice", {"kind": "character"}),
        seed=41,
        sample=SampleConfig(w=7.5, c=0.6, a=0.0, variety=0.1, steps=30, scheduler="euler-a"),
        negative="blurry",
        model="/models/face0-sd14",
    )
    return req.replace(**kw).params(1) if kw else req.params(1)


def test_writes_the_a1111_layout_then_face0_keys() -> None:
    text = a1111_parameters(face0_params(), (512, 768), embedder_id="vggface2/sha256:abc", model_hash="1a2b3c4d5e")
    prompt, negative, line = text.split("\n")
    assert prompt == "a photo of a person, in a red shirt"
    assert negative == "Negative prompt: blurry"
    assert line.startswith(
        "Steps: 30, Sampler: Euler a, CFG scale: 7.5, Seed: 42, Size: 512x768, Model hash: 1a2b3c4d5e, "
        "Model: face0-sd14, Face0 face: alice, Face0 c: 0.6, Face0 a: 0, Face0 variety: 0.1, "
        'Face0 embedder: "vggface2/sha256:abc", Face0 version: '
    )


def test_round_trip_through_a_png(tmp_path: Path) -> None:
    params = face0_params(height=64, width=48)
    info = PngInfo()
    info.add_text("parameters", a1111_parameters(params, (48, 64), embedder_id="tiny/random"))
    path = tmp_path / "img.png"
    Image.new("RGB", (48, 64)).save(path, pnginfo=info)
    got = read_a1111(path)
    assert (got.prompt, got.negative) == (params["prompt"], "blurry")
    assert (got.steps, got.cfg_scale, got.seed, got.size) == (30, 7.5, 42, (48, 64))
    assert (got.sampler, got.scheduler) == ("Euler a", "euler-a")
    assert got.face0 == {
        "face": "alice",
        "c": "0.6",
        "a": "0",
        "variety": "0.1",
        "embedder": "tiny/random",
        "face0_version": params["face0_version"],
    }
    assert got.unused == ["Model"]
    kwargs = got.request_kwargs()
    assert kwargs == {
        "prompt": params["prompt"],
        "negative": "blurry",
        "steps": 30,
        "w": 7.5,
        "seed": 42,
        "width": 48,
        "height": 64,
        "scheduler": "euler-a",
        "c": 0.6,
        "a": 0.0,
        "variety": 0.1,
    }
    Request(prompt="", face=Face(None, "none")).replace(**{k: v for k, v in kwargs.items()}).check()


@pytest.mark.parametrize("scheduler", ["ddim", "dpm++", "euler", "euler-a", "pndm"])
def test_every_face0_sampler_round_trips(scheduler: str) -> None:
    params = face0_params() | {"scheduler": scheduler}
    assert parse_a1111(a1111_parameters(params, (8, 8))).scheduler == scheduler


def test_parses_a_literal_a1111_string() -> None:
    got = parse_a1111(A1111_EXAMPLE)
    assert got.prompt == "masterpiece, best quality, portrait of a woman,\nlooking at viewer"
    assert got.negative == "lowres, bad anatomy, (worst quality:1.4)"
    assert (got.steps, got.cfg_scale, got.seed, got.size) == (28, 7.0, 1234567890, (512, 768))
    assert got.scheduler == "dpm++"
    assert got.raw["Lora hashes"] == "add_detail: 7c6bad76eb54"
    assert got.unused == [
        "Schedule type",
        "Model hash",
        "Model",
        "Denoising strength",
        "Clip skip",
        "Lora hashes",
        "Version",
    ]
    assert got.face0 == {}


def test_no_parameter_line_is_all_prompt_and_odd_values_are_unused() -> None:
    got = parse_a1111("just a prompt\nNegative prompt: ugly")
    assert (got.prompt, got.negative, got.steps, got.unused) == ("just a prompt", "ugly", None, [])
    odd = parse_a1111("p\nSteps: many, Sampler: UniPC, CFG scale: 5, Seed: 3, Size: big")
    assert (odd.steps, odd.cfg_scale, odd.seed, odd.size, odd.scheduler) == (None, 5.0, 3, None, None)
    assert odd.unused == ["Steps", "Sampler", "Size"]


def test_quote_follows_a1111() -> None:
    assert quote("plain words") == "plain words"
    assert quote("a, b") == '"a, b"'
    assert quote("random:42") == '"random:42"'
    assert parse_a1111(f"p\nSteps: 1, Seed: 2, Size: 8x8, Face0 face: {quote('x, y: z')}").face0["face"] == "x, y: z"


def test_read_a1111_errors(tmp_path: Path) -> None:
    bare = tmp_path / "bare.png"
    Image.new("RGB", (8, 8)).save(bare)
    with pytest.raises(BadInput, match="no 'parameters'"):
        read_a1111(bare)
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"not a png")
    with pytest.raises(BadInput, match="not a readable image"):
        read_a1111(junk)


def test_model_hash(tmp_path: Path) -> None:
    assert model_hash(tmp_path) == ""
    (tmp_path / "unet").mkdir()
    (tmp_path / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(b"weights")
    assert model_hash(tmp_path) == "9a129038d9"  # sha256(b"weights")[:10]


def test_img2img_writes_the_denoising_strength() -> None:
    init = {"path": "/in/photo.png", "sha256": "0" * 64}
    text = a1111_parameters(face0_params() | {"init": init, "strength": 0.6}, (64, 64))
    assert "Model: face0-sd14, Denoising strength: 0.6, Face0 face: alice" in text
    assert "Denoising strength" not in a1111_parameters(face0_params(), (64, 64))  # text-to-image: none
