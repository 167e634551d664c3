"""Face0's sampler with img2img, inpainting, ControlNet and LoRA (paper §2.2 guidance kept), on tiny parts."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import ControlNetModel, StableDiffusionImg2ImgPipeline
from PIL import Image

from face0cli.errors import BadInput, ModelError, ParameterError
from face0cli.model.embeds import face_prompt_embeds
from face0cli.model.lora import LoraSpec, load_loras, parse_lora_spec
from face0cli.model.pipeline import Face0Pipeline
from face0cli.model.tiny import tiny_components, tiny_pipeline
from tests.conftest import rng_vector

PROMPT = "a photo of a person with blue hair"
FACE = rng_vector(32, 1)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.fixture(scope="module")
def pipe() -> Face0Pipeline:
    return tiny_pipeline(seed=0, embed_dim=32)


def picture(seed: int = 0) -> Image.Image:
    """A 32x32 picture with structure: a gradient, a block and noise."""
    rng = np.random.default_rng(seed)
    x = np.linspace(0, 255, 32)[None, :, None] * np.ones((32, 1, 3))
    x[8:20, 10:26] = rng.uniform(0, 255, 3)
    x += rng.normal(0, 10, x.shape)
    return Image.fromarray(np.clip(x, 0, 255).astype(np.uint8))


def latents(pipe: Face0Pipeline, **kw) -> torch.Tensor:
    kw.setdefault("num_inference_steps", 8)
    out = pipe(PROMPT, FACE, generator=gen(kw.pop("seed", 0)), output_type="latent", **kw)
    return out.images


def rel(x: torch.Tensor, y: torch.Tensor) -> float:
    """Relative distance |x - y| / |y|."""
    return float((x - y).norm() / y.norm())


@torch.no_grad()
def image_latents(pipe: Face0Pipeline, image: Image.Image, seed: int = 0) -> torch.Tensor:
    """The init image's latents exactly as the sampler draws them first from a generator seeded SEED."""
    pixels = pipe.image_processor.preprocess(image)
    return pipe.prepare_image_latents(pixels, 1, 1, gen(seed))


class Counter:
    """Counts forward calls of a module and the batch rows of each."""

    def __init__(self, module: torch.nn.Module) -> None:
        self.batches: list[int] = []
        self.handle = module.register_forward_pre_hook(self._hook, with_kwargs=True)

    def _hook(self, module: torch.nn.Module, args: tuple, kwargs: dict) -> None:
        sample = args[0] if args else kwargs["sample"]
        self.batches.append(int(sample.shape[0]))


def controlnet_of(pipe: Face0Pipeline, zero: bool = True) -> ControlNetModel:
    """diffusers' ControlNetModel.from_unet of the tiny UNet (zero convs), or with the zero convs randomised."""
    net = ControlNetModel.from_unet(pipe.unet, conditioning_embedding_out_channels=(16, 32, 32)).eval()
    if not zero:
        torch.manual_seed(5)
        zero_convs = [*net.controlnet_down_blocks, net.controlnet_mid_block, net.controlnet_cond_embedding.conv_out]
        for conv in zero_convs:
            torch.nn.init.normal_(conv.weight, std=0.3)
    return net


def pose() -> Image.Image:
    rng = np.random.default_rng(7)
    return Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8))


# ------------------------------------------------------------------------------------------------ img2img


def test_img2img_equals_diffusers_img2img_with_face_embeds_at_c1(pipe: Face0Pipeline) -> None:
    ours = pipe(PROMPT, FACE, image=picture(), strength=0.6, num_inference_steps=8, generator=gen(2),
                output_type="np").images  # fmt: skip
    sd = StableDiffusionImg2ImgPipeline(
        vae=pipe.vae,
        text_encoder=pipe.text_encoder,
        tokenizer=pipe.tokenizer,
        unet=pipe.unet,
        scheduler=pipe.scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    sd.set_progress_bar_config(disable=True)
    theirs = sd(
        image=picture(),
        strength=0.6,
        **face_prompt_embeds(pipe, PROMPT, FACE).as_kwargs(),
        guidance_scale=7.5,
        num_inference_steps=8,
        generator=gen(2),
        output_type="np",
    ).images
    assert float(np.abs(np.asarray(ours) - np.asarray(theirs)).max()) < 1e-5


def test_img2img_strength_one_behaves_like_text_to_image(pipe: Face0Pipeline) -> None:
    t2i = pipe(PROMPT, FACE, num_inference_steps=8, generator=gen(0), output_type="latent")
    full = pipe(PROMPT, FACE, image=picture(0), strength=1.0, num_inference_steps=8, generator=gen(0),
                output_type="latent")  # fmt: skip
    assert full.unet_calls == t2i.unet_calls == 8 * 2
    # at strength 1 the start is (almost) pure noise: the init image hardly matters, unlike at strength 0.5
    other = latents(pipe, image=picture(1), strength=1.0)
    half_a, half_b = latents(pipe, image=picture(0), strength=0.5), latents(pipe, image=picture(1), strength=0.5)
    assert rel(full.images, other) < 0.3 * rel(half_a, half_b)
    # and the result is as far from the init image as a text-to-image sample is
    init = image_latents(pipe, picture(0))
    d_full, d_t2i = (full.images - init).norm(), (t2i.images - init).norm()
    assert 0.5 < float(d_full / d_t2i) < 2.0


def test_img2img_small_strength_stays_close_to_the_input(pipe: Face0Pipeline) -> None:
    init = image_latents(pipe, picture())
    small = latents(pipe, image=picture(), strength=0.25)
    full = latents(pipe, image=picture(), strength=1.0)
    assert (small - init).norm() < 0.5 * (full - init).norm()
    out = pipe(PROMPT, FACE, image=picture(), strength=0.25, num_inference_steps=8, generator=gen(0))
    assert out.unet_calls == 2 * 2  # the last int(8 * 0.25) = 2 steps run
    assert out.images[0].size == (32, 32)


def test_img2img_takes_its_size_from_the_image(pipe: Face0Pipeline) -> None:
    wide = picture().resize((48, 32))
    out = pipe(PROMPT, FACE, image=wide, strength=0.5, num_inference_steps=4, generator=gen(0))
    assert out.images[0].size == (48, 32)


# ---------------------------------------------------------------------------------------------- inpainting


def test_inpaint_keeps_the_unmasked_region_in_latent_space(pipe: Face0Pipeline) -> None:
    mask = np.zeros((32, 32), dtype=np.uint8)
    mask[:, 16:] = 255  # regenerate the right half
    for strength in (1.0, 0.7):
        out = latents(pipe, image=picture(), mask_image=Image.fromarray(mask), strength=strength, seed=3)
        init = image_latents(pipe, picture(), seed=3)
        # latent columns 0..3 are the left half (the tiny VAE downsamples by 4): kept exactly
        assert torch.equal(out[..., :4], init[..., :4])
        assert (out[..., 4:] - init[..., 4:]).abs().mean() > 0.1
    # (compared in latent space: the VAE decoder's mid-block attention mixes the whole image, so decoded
    # pixels of the kept half also depend on the regenerated half)


def test_inpaint_needs_an_image(pipe: Face0Pipeline) -> None:
    with pytest.raises(ParameterError, match="mask"):
        pipe(PROMPT, FACE, mask_image=Image.new("L", (32, 32), 255), num_inference_steps=2)


# ------------------------------------------------------------------------------------------------ controlnet


def test_zero_controlnet_leaves_the_image_unchanged(pipe: Face0Pipeline) -> None:
    plain = latents(pipe)
    ctrl = latents(pipe, controlnet=controlnet_of(pipe), control_image=pose())
    assert torch.allclose(plain, ctrl, atol=1e-6)


def test_nonzero_controlnet_changes_the_image_by_its_scale(pipe: Face0Pipeline) -> None:
    net = controlnet_of(pipe, zero=False)
    plain = latents(pipe)
    ctrl = latents(pipe, controlnet=net, control_image=pose())
    assert (ctrl - plain).abs().mean() > 1e-2
    off = latents(pipe, controlnet=net, control_image=pose(), controlnet_conditioning_scale=0.0)
    assert torch.allclose(plain, off, atol=1e-6)


@pytest.mark.parametrize(("c", "a", "k"), [(1.0, 0.0, 2), (0.5, 0.5, 4)])
def test_one_batched_unet_call_per_step_with_everything_on(pipe: Face0Pipeline, c, a, k) -> None:
    net = controlnet_of(pipe, zero=False)
    unet_calls, net_calls = Counter(pipe.unet), Counter(net)
    try:
        mask = Image.new("L", (32, 32), 0)
        mask.paste(255, (0, 0, 16, 32))
        out = pipe(["a man", "a woman"], FACE, c=c, a=a, image=picture(), strength=0.5, mask_image=mask,
                   controlnet=net, control_image=pose(), num_inference_steps=8, num_images_per_prompt=2,
                   generator=gen(0), output_type="latent")  # fmt: skip
    finally:
        unet_calls.handle.remove()
        net_calls.handle.remove()
    assert unet_calls.batches == [k * 4] * 4  # 4 steps of 8 run, all branches of 4 images in one call
    assert net_calls.batches == unet_calls.batches
    assert out.unet_calls == 4 * k and out.unet_calls_per_step == k


def test_controlnet_checks(pipe: Face0Pipeline) -> None:
    with pytest.raises(ParameterError, match="control image"):
        pipe(PROMPT, FACE, controlnet=controlnet_of(pipe), num_inference_steps=2)
    with pytest.raises(ParameterError, match="strength"):
        pipe(PROMPT, FACE, image=picture(), strength=1.5, num_inference_steps=2)
    with pytest.raises(ParameterError, match="no step"):
        pipe(PROMPT, FACE, image=picture(), strength=0.1, num_inference_steps=4)


# ------------------------------------------------------------------------------------------------------ LoRA


@pytest.fixture(scope="module")
def lora_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random rank-4 LoRA over the tiny UNet's attention, saved by peft + safetensors as diffusers does."""
    import safetensors.torch
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    unet = tiny_components(seed=0)["unet"]
    torch.manual_seed(11)
    cfg = LoraConfig(r=4, lora_alpha=4, target_modules=["to_q", "to_k", "to_v", "to_out.0"], init_lora_weights=False)
    unet.add_adapter(cfg)
    state = {f"unet.{k}": v.contiguous() for k, v in get_peft_model_state_dict(unet).items()}
    path = tmp_path_factory.mktemp("lora") / "style.safetensors"
    safetensors.torch.save_file(state, str(path))
    return path


def test_lora_scale_zero_is_no_lora_and_scale_one_changes_the_image(lora_file: Path) -> None:
    plain = latents(tiny_pipeline(seed=0))
    zero = tiny_pipeline(seed=0)
    assert load_loras(zero, [LoraSpec(lora_file, 0.0)]) == ["lora_style"]
    assert torch.allclose(latents(zero), plain, atol=1e-6)
    one = tiny_pipeline(seed=0)
    load_loras(one, [parse_lora_spec(f"{lora_file}:1")])
    assert (latents(one) - plain).abs().mean() > 1e-2
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        load_loras(one, [LoraSpec(lora_file, 0.5)])  # a second adapter gets its own name
    assert not [w for w in caught if "peft_config" in str(w.message)]  # stacking is what was asked: no noise
    assert set(one.unet.peft_config) == {"lora_style", "lora_style_2"}


def test_lora_refuses_anything_but_safetensors(tmp_path: Path, pipe: Face0Pipeline) -> None:
    ckpt = tmp_path / "style.ckpt"
    torch.save({"a": torch.zeros(1)}, ckpt)
    with pytest.raises(BadInput, match="safetensors"):
        load_loras(pipe, [LoraSpec(ckpt)])
    fake = tmp_path / "fake.safetensors"
    fake.write_bytes(b"not a safetensors file at all")
    with pytest.raises(BadInput, match="readable"):
        load_loras(pipe, [LoraSpec(fake)])
    with pytest.raises(BadInput, match="does not exist"):
        load_loras(pipe, [LoraSpec(tmp_path / "missing.safetensors")])
    import safetensors.torch

    other = tmp_path / "te_only.safetensors"
    safetensors.torch.save_file({"text_encoder.x.lora_A.weight": torch.zeros(4, 32)}, str(other))
    with pytest.raises(ModelError, match="no UNet"):
        load_loras(pipe, [LoraSpec(other)])


def test_parse_lora_spec() -> None:
    assert parse_lora_spec("a/b.safetensors") == LoraSpec(Path("a/b.safetensors"), 1.0)
    assert parse_lora_spec("a/b.safetensors:0.6") == LoraSpec(Path("a/b.safetensors"), 0.6)
    assert parse_lora_spec("C:style.safetensors") == LoraSpec(Path("C:style.safetensors"), 1.0)
    assert parse_lora_spec("x.safetensors:-1e-1").scale == pytest.approx(-0.1)
    with pytest.raises(ParameterError):
        parse_lora_spec("x.safetensors:nan")
