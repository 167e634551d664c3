"""Face0Pipeline on tiny components (paper §2): parity with diffusers' SD pipeline, UNet cost, model dirs."""

from __future__ import annotations

import dataclasses
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from diffusers import StableDiffusionPipeline, UNet2DConditionModel

from face0cli.errors import ModelError, NewerFormat, ParameterError
from face0cli.library.face_space import FaceGMM
from face0cli.model.pipeline import SCHEDULERS, Face0Config, Face0Pipeline, make_scheduler
from face0cli.model.tiny import tiny_components, tiny_pipeline
from tests.conftest import rng_vector

PROMPT = "a photo of a person with blue hair"
STEPS = 4
NO_SAFETY = {"safety_checker": None, "feature_extractor": None, "requires_safety_checker": False}


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.fixture(scope="module")
def pipe() -> Face0Pipeline:
    return tiny_pipeline(seed=0, embed_dim=32)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A saved tiny face0 model directory with a GMM."""
    p = tiny_pipeline(seed=1, embed_dim=32)
    embeddings = np.random.default_rng(0).standard_normal((64, 32)).astype(np.float32)
    p.gmm = FaceGMM.fit(embeddings, embedder_id="tiny/random")
    d = tmp_path_factory.mktemp("model") / "face0-tiny"
    p.save_pretrained(d)
    return d


def copy_model(src: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "copy"
    shutil.copytree(src, dst)
    return dst


def sd_twin(pipe: Face0Pipeline, scheduler: str) -> StableDiffusionPipeline:
    """diffusers' own pipeline over the same modules, with its own scheduler instance."""
    sd = StableDiffusionPipeline(
        vae=pipe.vae,
        text_encoder=pipe.text_encoder,
        tokenizer=pipe.tokenizer,
        unet=pipe.unet,
        scheduler=make_scheduler(scheduler, pipe.scheduler.config),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    sd.set_progress_bar_config(disable=True)
    return sd


class UNetCounter:
    """Counts UNet forward calls and the batch rows each one evaluates."""

    def __init__(self, unet: torch.nn.Module) -> None:
        self.batches: list[int] = []
        self.handle = unet.register_forward_pre_hook(self._hook, with_kwargs=True)

    def _hook(self, module: torch.nn.Module, args: tuple, kwargs: dict) -> None:
        sample = args[0] if args else kwargs["sample"]
        self.batches.append(int(sample.shape[0]))


@pytest.fixture
def count_unet(pipe: Face0Pipeline) -> Iterator[UNetCounter]:
    counter = UNetCounter(pipe.unet)
    yield counter
    counter.handle.remove()


# ------------------------------------------------------------------------------------ parity with diffusers


@pytest.mark.parametrize("scheduler", ["ddim", "dpm++", "euler-a"])
@pytest.mark.parametrize("c,face", [(0.0, "random"), (1.0, None)])
def test_matches_diffusers_cfg(pipe: Face0Pipeline, scheduler: str, c: float, face: str | None) -> None:
    """c = 0, a = 0 (or c = 1 with the null face) is plain CFG on text with zeroed face tokens."""
    sd = sd_twin(pipe, scheduler)
    text, empty = sd.encode_prompt(PROMPT, "cpu", 1, True, negative_prompt="")
    text, empty = text.clone(), empty.clone()
    text[:, 74:] = 0
    empty[:, 74:] = 0
    ref = sd(
        prompt_embeds=text,
        negative_prompt_embeds=empty,
        guidance_scale=7.5,
        num_inference_steps=STEPS,
        generator=gen(3),
        output_type="np",
    ).images
    vector = rng_vector(32, 0) if face else None
    out = pipe(
        PROMPT,
        vector,
        w=7.5,
        c=c,
        a=0.0,
        num_inference_steps=STEPS,
        generator=gen(3),
        scheduler=scheduler,
        output_type="np",
    )
    assert out.images.shape == ref.shape == (1, 32, 32, 3)
    np.testing.assert_allclose(out.images, ref, rtol=0, atol=1e-5)
    assert out.images.std() > 0.01  # not a degenerate constant image


def test_matches_diffusers_with_batches(pipe: Face0Pipeline) -> None:
    prompts = [PROMPT, "a painting of a man"]
    sd = sd_twin(pipe, "ddim")
    text, neg = sd.encode_prompt(prompts, "cpu", 2, True, negative_prompt=["red", "green"])
    text, neg = text.clone(), neg.clone()
    text[:, 74:] = 0
    neg[:, 74:] = 0
    ref = sd(
        prompt_embeds=text,
        negative_prompt_embeds=neg,
        guidance_scale=5.0,
        num_inference_steps=3,
        generator=gen(7),
        output_type="np",
    ).images
    out = pipe(
        prompts,
        None,
        negative_prompt=["red", "green"],
        w=5.0,
        c=0.0,
        num_inference_steps=3,
        generator=gen(7),
        num_images_per_prompt=2,
        output_type="np",
    )
    assert out.images.shape == (4, 32, 32, 3)
    np.testing.assert_allclose(out.images, ref, rtol=0, atol=1e-5)


# ---------------------------------------------------------------------------------------- UNet evaluations


@pytest.mark.parametrize(
    "c,a,expected",
    [(1.0, 0.0, 2), (0.0, 0.0, 2), (0.5, 0.0, 3), (0.5, 1.0, 3), (1.4, 1.0, 3), (0.6, 0.5, 4)],
)
def test_unet_calls_per_step(pipe: Face0Pipeline, count_unet: UNetCounter, c: float, a: float, expected: int):
    n = 2
    face = rng_vector(32, 1)
    out = pipe(PROMPT, face, c=c, a=a, num_inference_steps=3, generator=gen(0), num_images_per_prompt=n)
    assert len(count_unet.batches) == 3  # one batched UNet call per step
    assert count_unet.batches == [expected * n] * 3
    assert out.unet_calls_per_step == expected
    assert out.unet_calls == 3 * expected
    assert len(out.plan) == expected and len(out.images) == n


def test_face_changes_the_image(pipe: Face0Pipeline) -> None:
    """Random tiny weights make the face's effect small, so compare latents (float noise is ~1e-6)."""

    def run(v: np.ndarray | None) -> torch.Tensor:
        return pipe(PROMPT, v, num_inference_steps=3, generator=gen(0), output_type="latent").images

    a, b, none = run(rng_vector(32, 1)), run(rng_vector(32, 2)), run(None)
    assert (a - b).abs().max() > 1e-3 and (a - none).abs().max() > 1e-3
    assert torch.equal(a, run(rng_vector(32, 1)))


def test_projector_and_text_encoder_run_once_per_request(pipe: Face0Pipeline) -> None:
    calls = {"projector": [], "text_encoder": []}
    hooks = [
        getattr(pipe, name).register_forward_hook(lambda m, args, out, k=name: calls[k].append(args[0].shape))
        for name in calls
    ]
    try:
        for variety in (0.0, 0.2):
            for k in calls:
                calls[k].clear()
            pipe(
                [PROMPT, "a man"],
                rng_vector(32, 1),
                c=0.5,
                a=1.0,
                variety=variety,
                num_inference_steps=3,
                generator=gen(0),
                num_images_per_prompt=3,
            )
            assert len(calls["projector"]) == 1 and len(calls["text_encoder"]) == 1
            # a noised copy per image, else one row per prompt
            assert calls["projector"][0][0] == (6 if variety else 2)
            assert calls["text_encoder"][0][0] == 4  # 2 prompts + their 2 negative prompts
    finally:
        for h in hooks:
            h.remove()


def test_variety_changes_output_and_is_reproducible(pipe: Face0Pipeline) -> None:
    face = rng_vector(32, 4)

    def run(variety: float, seed: int, steps: int = 3) -> torch.Tensor:
        return pipe(
            PROMPT,
            face,
            variety=variety,
            num_inference_steps=steps,
            generator=gen(seed),
            output_type="latent",
            num_images_per_prompt=2,
        ).images

    base = run(0.0, 5)
    v1 = run(0.5, 5)
    assert (v1 - base).abs().max() > 1e-3
    assert torch.equal(v1, run(0.5, 5))
    assert (v1 - run(0.5, 6)).abs().max() > 1e-3
    same_start = run(0.0, 5)
    assert torch.equal(base, same_start)
    # each image of a request gets its own noise on the embedding
    emb = torch.as_tensor(face)[None]
    tokens = pipe.project_faces(emb, 2, 0.5, gen(9))
    assert tokens.shape == (2, 3, 32) and (tokens[0] - tokens[1]).abs().max() > 1e-4
    plain = pipe.project_faces(emb, 2, 0.0, gen(9))
    assert torch.equal(plain[0], plain[1])


# ------------------------------------------------------------------------------------------- inputs, options


def test_embedding_dimension_is_checked(pipe: Face0Pipeline) -> None:
    with pytest.raises(ModelError, match="dimension 31, the model expects 32"):
        pipe(PROMPT, rng_vector(31, 0), num_inference_steps=1)
    with pytest.raises(ModelError, match="dimension 1792, the model expects 32"):
        pipe(PROMPT, torch.zeros(1, 1792), num_inference_steps=1)
    with pytest.raises(ParameterError, match="one per prompt"):
        pipe([PROMPT, PROMPT, PROMPT], np.zeros((2, 32), np.float32), num_inference_steps=1)
    bad = rng_vector(32, 0)
    bad[3] = np.nan
    with pytest.raises(ParameterError, match="NaN"):
        pipe(PROMPT, bad, num_inference_steps=1)


@pytest.mark.parametrize(
    "kwargs,needle",
    [
        ({"w": float("nan")}, "w must be a finite"),
        ({"c": float("inf")}, "c must be a finite"),
        ({"a": float("nan")}, "a must be a finite"),
        ({"variety": -0.1}, "variety"),
        ({"num_inference_steps": 0}, "steps must be a whole number"),
        ({"height": 30}, "height"),
        ({"width": 0}, "width"),
        ({"scheduler": "heun"}, "ddim, dpm\\+\\+, euler, euler-a, pndm"),
        ({"output_type": "jpeg"}, "output_type"),
        ({"negative_prompt": ["x", "y"]}, "negative"),
    ],
)
def test_bad_parameters(pipe: Face0Pipeline, kwargs: dict, needle: str) -> None:
    with pytest.raises(ParameterError, match=needle):
        pipe(PROMPT, rng_vector(32, 0), **{"num_inference_steps": 1, **kwargs})


@pytest.mark.parametrize("name", list(SCHEDULERS))
def test_schedulers_by_name(pipe: Face0Pipeline, name: str) -> None:
    sched = make_scheduler(name, pipe.scheduler.config)
    assert type(sched) is SCHEDULERS[name][0]
    assert sched.config.beta_schedule == "scaled_linear" and sched.config.beta_end == pytest.approx(0.012)
    if name == "dpm++":
        assert sched.config.algorithm_type == "dpmsolver++"
    steps: list[int] = []
    out = pipe(
        PROMPT,
        rng_vector(32, 0),
        c=0.5,
        num_inference_steps=3,
        generator=gen(0),
        scheduler=name,
        output_type="np",
        callback=lambda i, t, latents: steps.append(i),
    )
    assert steps == [0, 1, 2]  # one progress call per requested step
    assert np.isfinite(out.images).all()
    assert type(pipe.scheduler).__name__ == "DDIMScheduler"  # the model's own scheduler is left alone


def test_size_and_output_types(pipe: Face0Pipeline) -> None:
    out = pipe(PROMPT, None, num_inference_steps=1, height=48, width=64, generator=gen(0))
    assert out.images[0].size == (64, 48)
    pt = pipe(PROMPT, None, num_inference_steps=1, generator=gen(0), output_type="pt").images
    assert pt.shape == (1, 3, 32, 32) and pt.min() >= 0.0 and pt.max() <= 1.0


def test_bfloat16(pipe: Face0Pipeline) -> None:
    low = tiny_pipeline(seed=0).to(dtype=torch.bfloat16)
    assert low.unet.dtype == low.projector.dtype == torch.bfloat16
    face = rng_vector(32, 0)
    out = low(PROMPT, face, c=0.5, num_inference_steps=2, generator=gen(0), output_type="np").images
    ref = pipe(PROMPT, face, c=0.5, num_inference_steps=2, generator=gen(0), output_type="np").images
    assert np.isfinite(out).all() and np.abs(out - ref).mean() < 0.05


# ---------------------------------------------------------------------------------------- model directory


def test_save_writes_the_format(model_dir: Path) -> None:
    for part in ("unet", "vae", "text_encoder", "tokenizer", "scheduler", "projector", "gmm"):
        assert (model_dir / part).is_dir(), part
    assert (model_dir / "projector" / "diffusion_pytorch_model.safetensors").is_file()
    assert (model_dir / "gmm" / "gmm.safetensors").is_file()
    assert not list(model_dir.rglob("*.bin"))
    meta = json.loads((model_dir / "face0.json").read_text())
    assert meta == {
        "format_version": 1,
        "embedder_id": "tiny/random",
        "embed_dim": 32,
        "n_tokens": 3,
        "token_positions": [74, 75, 76],
        "null_face": "zeros",
        "context_dim": 32,
    }
    index = json.loads((model_dir / "model_index.json").read_text())
    assert index["_class_name"] == "Face0Pipeline"
    assert index["projector"] == ["face0cli.model.projector", "FaceProjector"]


def test_round_trip_keeps_the_weights_and_the_images(model_dir: Path) -> None:
    original = tiny_pipeline(seed=1, embed_dim=32)
    loaded = Face0Pipeline.from_pretrained(model_dir)
    assert loaded.face0_config == original.face0_config
    assert loaded.gmm is not None and loaded.gmm.dim == 32
    # the weights survive bit for bit ...
    for part in ("unet", "vae", "text_encoder", "projector"):
        saved, again = getattr(original, part).state_dict(), getattr(loaded, part).state_dict()
        assert saved.keys() == again.keys(), part
        assert all(torch.equal(saved[k], again[k]) for k in saved), part
    # ... and the images agree up to float rounding of separately built modules (kernel order)
    face = loaded.gmm.sample(1, seed=0)[0]
    for c, a in ((1.0, 0.0), (0.5, 0.0), (1.4, 1.0)):
        kw = dict(c=c, a=a, num_inference_steps=3, output_type="np")
        np.testing.assert_allclose(
            loaded(PROMPT, face, generator=gen(2), **kw).images,
            original(PROMPT, face, generator=gen(2), **kw).images,
            atol=1e-5,
        )


def test_load_for_the_cli(model_dir: Path) -> None:
    pipe = Face0Pipeline.load(str(model_dir), device="cpu", dtype="bf16")
    assert pipe.unet.dtype == torch.bfloat16 and pipe.projector.dtype == torch.bfloat16
    assert pipe.face0_config.embed_dim == 32
    with pytest.raises(ParameterError, match="dtype"):
        Face0Pipeline.load(str(model_dir), dtype="fp8")
    if not torch.cuda.is_available():
        with pytest.raises(ParameterError, match="CUDA"):
            Face0Pipeline.load(str(model_dir), device="cuda")


@pytest.mark.parametrize("part", ["unet", "projector", "tokenizer", "face0.json", "model_index.json"])
def test_missing_part(model_dir: Path, tmp_path: Path, part: str) -> None:
    d = copy_model(model_dir, tmp_path)
    target = d / part
    shutil.rmtree(target) if target.is_dir() else target.unlink()
    with pytest.raises(ModelError, match=f"{part}.* is missing|{part}/ is missing"):
        Face0Pipeline.from_pretrained(d)


def test_pickled_weights_are_refused(model_dir: Path, tmp_path: Path) -> None:
    from safetensors.torch import load_file

    d = copy_model(model_dir, tmp_path)
    weights = d / "unet" / "diffusion_pytorch_model.safetensors"
    torch.save(load_file(weights), d / "unet" / "diffusion_pytorch_model.bin")
    weights.unlink()
    with pytest.raises(ModelError, match=r"^face0 loads safetensors only, .*unet.*diffusion_pytorch_model\.bin"):
        Face0Pipeline.from_pretrained(d)


def test_missing_weights_file_is_a_model_error(model_dir: Path, tmp_path: Path) -> None:
    d = copy_model(model_dir, tmp_path)
    (d / "unet" / "diffusion_pytorch_model.safetensors").unlink()
    with pytest.raises(ModelError, match="cannot load the model"):
        Face0Pipeline.from_pretrained(d)


def test_newer_format(model_dir: Path, tmp_path: Path) -> None:
    d = copy_model(model_dir, tmp_path)
    meta = json.loads((d / "face0.json").read_text())
    (d / "face0.json").write_text(json.dumps({**meta, "format_version": 2}))
    with pytest.raises(NewerFormat, match="newer face0"):
        Face0Pipeline.from_pretrained(d)


@pytest.mark.parametrize(
    "change,needle",
    [
        ({"embed_dim": 64}, "do not fit"),
        ({"token_positions": [74, 75, 77]}, "outside"),
        ({"null_face": "mean"}, "null_face"),
        ({"embed_dim": "x"}, "malformed"),
        ({"steps": 0}, "steps must be a whole number >= 1"),
        ({"steps": True}, "steps must be a whole number >= 1"),
        ({"steps": "many"}, "malformed"),
    ],
)
def test_face0_json_must_fit_the_parts(model_dir: Path, tmp_path: Path, change: dict, needle: str) -> None:
    d = copy_model(model_dir, tmp_path)
    meta = json.loads((d / "face0.json").read_text())
    (d / "face0.json").write_text(json.dumps({**meta, **change}))
    with pytest.raises(ModelError, match=needle):
        Face0Pipeline.from_pretrained(d)


def test_face0_json_records_the_models_steps_and_leaves_them_out_when_unset(model_dir: Path, tmp_path: Path) -> None:
    d = copy_model(model_dir, tmp_path)
    meta = json.loads((d / "face0.json").read_text())
    assert "steps" not in meta  # a model that records none: face0's default, as before the field existed
    pipe = Face0Pipeline.from_pretrained(d)
    assert pipe.face0_config.steps is None
    pipe.face0_config = dataclasses.replace(pipe.face0_config, steps=12)
    pipe.save_pretrained(tmp_path / "again")
    assert json.loads((tmp_path / "again" / "face0.json").read_text())["steps"] == 12
    assert Face0Pipeline.from_pretrained(tmp_path / "again").face0_config.steps == 12


def test_gmm_of_another_embedder_is_refused(model_dir: Path, tmp_path: Path) -> None:
    d = copy_model(model_dir, tmp_path)
    FaceGMM.fit(np.random.default_rng(0).standard_normal((20, 16)), embedder_id="other").save(d / "gmm")
    with pytest.raises(ModelError, match="GMM"):
        Face0Pipeline.from_pretrained(d)


def test_model_without_gmm_and_resave(model_dir: Path, tmp_path: Path) -> None:
    d = copy_model(model_dir, tmp_path)
    shutil.rmtree(d / "gmm")
    pipe = Face0Pipeline.from_pretrained(d)
    assert pipe.gmm is None
    pipe.save_pretrained(model_dir.parent / "resaved")  # a fresh directory
    again = tmp_path / "again"
    shutil.copytree(model_dir, again)  # has a gmm/ that does not belong to `pipe`
    pipe.save_pretrained(again)
    assert not (again / "gmm").exists()


def test_hub_id_offline_and_missing_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(ModelError, match="'some-org/face0-model' is not a local directory.*Hugging Face Hub"):
        Face0Pipeline.from_pretrained("some-org/face0-model", cache_dir=str(tmp_path / "hf"))
    with pytest.raises(ModelError, match="no model directory"):
        Face0Pipeline.from_pretrained(str(tmp_path / "nowhere" / "model"))
    (tmp_path / "file.bin").write_bytes(b"x")
    with pytest.raises(ModelError, match="is a file"):
        Face0Pipeline.from_pretrained(tmp_path / "file.bin")


# ---------------------------------------------------------------------------------------- from an SD base


@pytest.fixture(scope="module")
def sd_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    comps = tiny_components(seed=2)
    comps.pop("projector")
    sd = StableDiffusionPipeline(**comps, **NO_SAFETY)
    d = tmp_path_factory.mktemp("sd") / "tiny-sd"
    sd.save_pretrained(d)
    return d


def test_from_sd_directory(sd_dir: Path, tmp_path: Path) -> None:
    rng_before = torch.random.get_rng_state()
    pipe = Face0Pipeline.from_sd(sd_dir, embedder_id="emb/x", embed_dim=48, seed=1, hidden_dim=64)
    assert torch.equal(torch.random.get_rng_state(), rng_before)
    assert pipe.face0_config == Face0Config("emb/x", 48, 3, (74, 75, 76), "zeros", 32)
    p = pipe.projector.config
    assert (p.embed_dim, p.hidden_dim, p.n_tokens, p.context_dim, p.n_layers) == (48, 64, 3, 32, 4)
    assert type(pipe.scheduler).__name__ == "DDIMScheduler"
    twin = Face0Pipeline.from_sd(sd_dir, embedder_id="emb/x", embed_dim=48, seed=1, hidden_dim=64)
    other = Face0Pipeline.from_sd(sd_dir, embedder_id="emb/x", embed_dim=48, seed=2, hidden_dim=64)
    w1, w2, w3 = (x.projector.mlp[0].weight for x in (pipe, twin, other))
    assert torch.equal(w1, w2) and not torch.equal(w1, w3)
    out = pipe(PROMPT, rng_vector(48, 0), c=0.5, num_inference_steps=2, generator=gen(0), output_type="np")
    assert out.images.shape == (1, 32, 32, 3)
    pipe.save_pretrained(tmp_path / "trained")
    again = Face0Pipeline.from_pretrained(tmp_path / "trained")
    assert again.face0_config.embedder_id == "emb/x" and again.gmm is None


def test_from_sd_refuses_what_is_not_sd1(sd_dir: Path, tmp_path: Path) -> None:
    comps = tiny_components(seed=0)
    comps.pop("projector")
    comps["unet"] = UNet2DConditionModel(
        sample_size=8,
        block_out_channels=(32, 64),
        layers_per_block=1,
        cross_attention_dim=48,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        attention_head_dim=8,
        norm_num_groups=16,
    )
    wrong = StableDiffusionPipeline(**comps, **NO_SAFETY)
    with pytest.raises(ModelError, match="not SD 1.x-shaped.*32"):
        Face0Pipeline.from_sd(wrong, embedder_id="e", embed_dim=8)
    with pytest.raises(ModelError, match="cannot load the Stable Diffusion base"):
        Face0Pipeline.from_sd(tmp_path / "nothing-here", embedder_id="e", embed_dim=8)


# ------------------------------------------------------------------------------------ diffusers' call contract


def test_guidance_scale_is_w_and_parameter_errors_are_value_errors(pipe: Face0Pipeline) -> None:
    face = rng_vector(32, 1)

    def run(**kw: Any) -> torch.Tensor:
        return pipe(PROMPT, face, num_inference_steps=2, generator=gen(0), output_type="latent", **kw).images

    assert torch.equal(run(guidance_scale=3.0), run(w=3.0))
    assert torch.equal(run(guidance_scale=3.0, w=3.0), run(w=3.0))
    assert (run(guidance_scale=3.0) - run()).abs().max() > 1e-4  # default w = SampleConfig's 7.5
    with pytest.raises(ParameterError, match="one setting"):
        run(guidance_scale=3.0, w=4.0)
    with pytest.raises(ValueError, match="steps"):
        pipe(PROMPT, face, num_inference_steps=0)


def test_latents_and_return_dict(pipe: Face0Pipeline) -> None:
    face = rng_vector(32, 1)
    noise = torch.randn((1, 4, 8, 8), generator=gen(0))
    kw = dict(num_inference_steps=2, output_type="latent")
    drawn = pipe(PROMPT, face, generator=gen(0), **kw).images
    given = pipe(PROMPT, face, latents=noise.clone(), generator=gen(5), **kw).images
    assert torch.equal(drawn, given)  # the given noise is the noise the generator draws first
    with pytest.raises(ParameterError, match="latents must have the shape"):
        pipe(PROMPT, face, latents=torch.zeros(1, 4, 4, 4), **kw)
    images, per_step, calls, plan = pipe(PROMPT, face, generator=gen(0), return_dict=False, **kw)
    assert torch.equal(images, drawn) and per_step == 2 and calls == 4 and len(plan) == 2


def test_callback_on_step_end_reads_and_replaces_tensors(pipe: Face0Pipeline) -> None:
    seen: list[tuple[int, tuple[str, ...], float]] = []

    def on_step(p: Any, step: int, timestep: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
        seen.append((step, tuple(sorted(kwargs)), p.guidance_scale))
        return {"latents": torch.zeros_like(kwargs["latents"])} if step == 2 else {}

    out = pipe(
        PROMPT,
        rng_vector(32, 1),
        num_inference_steps=3,
        generator=gen(0),
        output_type="latent",
        guidance_scale=5.0,
        callback_on_step_end=on_step,
        callback_on_step_end_tensor_inputs=["latents", "prompt_embeds"],
    )
    assert seen == [(i, ("latents", "prompt_embeds"), 5.0) for i in range(3)] and pipe.num_timesteps == 3
    assert torch.count_nonzero(out.images) == 0  # the last step's replacement is the result
    with pytest.raises(ParameterError, match="callback_on_step_end_tensor_inputs"):
        pipe(
            PROMPT, None, num_inference_steps=1, callback_on_step_end=on_step, callback_on_step_end_tensor_inputs=["x"]
        )


def test_diffusers_pipeline_callback_objects_work(pipe: Face0Pipeline) -> None:
    from diffusers.callbacks import PipelineCallback

    class Count(PipelineCallback):
        tensor_inputs = ["latents"]

        def __init__(self) -> None:
            super().__init__(cutoff_step_ratio=1.0)
            self.steps: list[int] = []

        def callback_fn(self, pipeline: Any, step_index: int, timestep: Any, callback_kwargs: dict) -> dict:
            self.steps.append(step_index)
            return callback_kwargs

    count = Count()
    pipe(PROMPT, None, num_inference_steps=2, generator=gen(0), output_type="latent", callback_on_step_end=count)
    assert count.steps == [0, 1]
