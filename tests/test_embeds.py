"""Face tokens for diffusers' own SD pipelines (paper §2.2 at c = 1): same images as Face0's sampler."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from diffusers import StableDiffusionImg2ImgPipeline, StableDiffusionPipeline
from PIL import Image

from face0cli.errors import ModelError, ParameterError
from face0cli.model.conditioning import encode_prompts
from face0cli.model.embeds import check_c, face_prompt_embeds
from face0cli.model.pipeline import Face0Pipeline
from face0cli.model.tiny import tiny_pipeline
from tests.conftest import rng_vector

PROMPT = "a photo of a person with blue hair"
NO_SAFETY = {"safety_checker": None, "feature_extractor": None, "requires_safety_checker": False}


@pytest.fixture(scope="module")
def pipe() -> Face0Pipeline:
    return tiny_pipeline(seed=0, embed_dim=32)


def sd(pipe: Face0Pipeline, cls: type = StableDiffusionPipeline) -> StableDiffusionPipeline:
    out = cls(
        vae=pipe.vae,
        text_encoder=pipe.text_encoder,
        tokenizer=pipe.tokenizer,
        unet=pipe.unet,
        scheduler=pipe.scheduler,
        **NO_SAFETY,
    )
    out.set_progress_bar_config(disable=True)
    return out


def test_contexts_hold_the_face_in_the_prompt_and_zeros_in_the_negative(pipe: Face0Pipeline) -> None:
    face = rng_vector(32, 1)
    e = face_prompt_embeds(pipe, PROMPT, face, "painting")
    assert e.prompt_embeds.shape == e.negative_prompt_embeds.shape == (1, 77, 32)
    tokens = pipe.projector(torch.as_tensor(face)[None])
    assert torch.allclose(e.prompt_embeds[:, 74:], tokens)
    assert torch.count_nonzero(e.negative_prompt_embeds[:, 74:]) == 0
    text = encode_prompts(pipe.tokenizer, pipe.text_encoder, [PROMPT, "painting"], "cpu")
    assert torch.equal(e.prompt_embeds[:, :74], text[:1, :74])
    assert torch.equal(e.negative_prompt_embeds[:, :74], text[1:, :74])


@pytest.mark.parametrize("face_seed", [1, None])
def test_stable_diffusion_pipeline_with_face_embeds_equals_face0_at_c1(pipe: Face0Pipeline, face_seed) -> None:
    face = None if face_seed is None else rng_vector(32, face_seed)
    ours = pipe(PROMPT, face, w=7.5, c=1.0, num_inference_steps=4, generator=torch.Generator().manual_seed(3),
                output_type="np").images  # fmt: skip
    embeds = face_prompt_embeds(pipe, PROMPT, face)
    theirs = sd(pipe)(
        **embeds.as_kwargs(),
        guidance_scale=7.5,
        num_inference_steps=4,
        height=32,
        width=32,
        generator=torch.Generator().manual_seed(3),
        output_type="np",
    ).images
    diff = float(np.abs(np.asarray(ours) - np.asarray(theirs)).max())
    print(f"max abs difference Face0Pipeline(c=1) vs StableDiffusionPipeline(prompt_embeds=...): {diff:.3g}")
    assert diff < 1e-5


def test_several_prompts_and_images_per_prompt_are_prompt_major(pipe: Face0Pipeline) -> None:
    faces = np.stack([rng_vector(32, 1), rng_vector(32, 2)])
    e = face_prompt_embeds(pipe, ["a man", "a woman"], faces, num_images_per_prompt=2)
    assert e.prompt_embeds.shape == (4, 77, 32)
    assert torch.equal(e.prompt_embeds[0], e.prompt_embeds[1])
    assert not torch.equal(e.prompt_embeds[1, 74:], e.prompt_embeds[2, 74:])


def test_img2img_pipeline_takes_them(pipe: Face0Pipeline) -> None:
    image = Image.new("RGB", (32, 32), (200, 80, 40))
    e = face_prompt_embeds(pipe, PROMPT, rng_vector(32, 1))
    out = sd(pipe, StableDiffusionImg2ImgPipeline)(
        image=image, strength=0.5, **e.as_kwargs(), num_inference_steps=4, output_type="np"
    ).images
    assert np.asarray(out).shape == (1, 32, 32, 3)


def test_bad_requests(pipe: Face0Pipeline) -> None:
    with pytest.raises(ModelError):
        face_prompt_embeds(pipe, PROMPT, rng_vector(16, 1))
    with pytest.raises(ParameterError):
        face_prompt_embeds(pipe, [PROMPT, PROMPT], None, ["a", "b", "c"])
    with pytest.raises(ParameterError):
        check_c(0.5)
    check_c(1.0)
