"""Face tokens for any diffusers SD 1.x pipeline: prompt_embeds with the face inside (Face0 paper §2.1-2.2).

With c = 1 the paper's guidance is plain classifier-free guidance between two conditions (§2.2):

    eps = eps_u + w * (eps_df - eps_u)

where df is the prompt's context with the projected face tokens at positions 74..76 and u is the negative
(by default empty) prompt's context with those positions zeroed (the null face, what the 10% face dropout
shows the model in training, §2.3). Every diffusers SD 1.x pipeline (StableDiffusionPipeline,
StableDiffusionImg2ImgPipeline, StableDiffusionInpaintPipeline, StableDiffusionControlNetPipeline, ...)
takes those two contexts as `prompt_embeds` and `negative_prompt_embeds` and computes exactly that
guidance, so a face0 model's UNet drives them with its face (guidance_scale = w). Other values of c need
the four-branch guidance of face0's own sampler (face0cli.model.pipeline.Face0Pipeline).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from face0cli.errors import ParameterError
from face0cli.model.conditioning import encode_prompts, insert_face_tokens


@dataclass
class FaceEmbeds:
    """The two contexts a diffusers SD pipeline takes, with the face inside (paper §2.2 at c = 1).

    Attributes:
        prompt_embeds: (B, 77, C) the prompts' contexts with the face tokens (branch df).
        negative_prompt_embeds: (B, 77, C) the negative prompts' contexts with the null face (branch u).

    Pass as `pipe(prompt_embeds=..., negative_prompt_embeds=..., guidance_scale=w)`, or `**as_kwargs()`.
    """

    prompt_embeds: torch.Tensor
    negative_prompt_embeds: torch.Tensor

    def as_kwargs(self) -> dict[str, torch.Tensor]:
        """{"prompt_embeds": ..., "negative_prompt_embeds": ...}, for `sd_pipe(**embeds.as_kwargs(), ...)`."""
        return {"prompt_embeds": self.prompt_embeds, "negative_prompt_embeds": self.negative_prompt_embeds}


@torch.no_grad()
def face_prompt_embeds(
    pipe: Any,
    prompt: str | Sequence[str],
    face: np.ndarray | torch.Tensor | None,
    negative_prompt: str | Sequence[str] = "",
    *,
    num_images_per_prompt: int = 1,
    variety: float = 0.0,
    generator: torch.Generator | list[torch.Generator] | None = None,
) -> FaceEmbeds:
    """Contexts with the face tokens for a diffusers SD 1.x pipeline, c = 1 guidance (paper §2.1-2.2).

    The text goes through the face0 model's frozen CLIP encoder, the face through its projector, and the
    face tokens overwrite the model's token positions (face0.json, 74..76 of 77) in the prompts' contexts;
    the negative contexts get zeros there (the null face), exactly as Face0Pipeline(..., c=1) builds its u
    and df branches. A diffusers pipeline over the same UNet, VAE and scheduler with
    `guidance_scale=w` then samples what Face0Pipeline(..., w=w, c=1) samples.

    Args:
        pipe: a Face0Pipeline (its tokenizer, text_encoder, projector and face0_config are used).
        prompt: one prompt or P prompts.
        face: (D,) one face for all prompts, (P, D) one per prompt, or None for the null face everywhere.
        negative_prompt: the "no text" condition, one or P strings (default: the empty prompt).
        num_images_per_prompt: N, each context repeated N times (prompt-major); a diffusers pipeline given
            these contexts then takes num_images_per_prompt=1 (or N = 1 here and N there: the same).
        variety: noise on the embedding in units of its rms (Face0Pipeline.project_faces); > 0 draws from
            the generator before the diffusers pipeline does, so the images differ from face0's sampler.
        generator: for the variety noise only.

    Returns:
        FaceEmbeds with (P * N, 77, C) prompt_embeds and negative_prompt_embeds in the UNet's dtype, on
        the pipeline's execution device, prompt-major.

    Raises:
        ParameterError: bad prompts, negative prompts, counts or variety.
        ModelError: the face's dimension is not the model's.
    """
    prompts = [prompt] if isinstance(prompt, str) else list(prompt)
    negatives = [negative_prompt] * len(prompts) if isinstance(negative_prompt, str) else list(negative_prompt)
    embedding = None if face is None else torch.as_tensor(np.asarray(face, dtype=np.float32))
    cfg = pipe.face0_config
    pipe.check_inputs(prompts, negatives, embedding, 7.5, 1.0, 0.0, variety, 1, 8, 8, num_images_per_prompt)
    if embedding is not None:
        embedding = embedding.reshape(-1, embedding.shape[-1]).expand(len(prompts), -1)
    device = pipe._execution_device
    dtype = pipe.unet.dtype
    # 1. Encode prompts and negatives in one text-encoder call, as the sampler does
    contexts = encode_prompts(pipe.tokenizer, pipe.text_encoder, prompts + negatives, device).to(dtype)
    text = contexts[: len(prompts)].repeat_interleave(num_images_per_prompt, dim=0)
    null = contexts[len(prompts) :].repeat_interleave(num_images_per_prompt, dim=0)
    # 2. Project the faces (with variety noise if asked)
    tokens = pipe.project_faces(embedding, num_images_per_prompt, variety, generator)
    # 3. df = text + face, u = no text + no face
    positions = cfg.token_positions
    return FaceEmbeds(
        prompt_embeds=insert_face_tokens(text, tokens, positions),
        negative_prompt_embeds=insert_face_tokens(null, None, positions),
    )


def check_c(c: float) -> None:
    """ParameterError unless c == 1: only then is Face0's guidance the two-branch CFG of diffusers (§2.2)."""
    if c != 1.0:
        raise ParameterError(
            f"a diffusers pipeline guides between two conditions, which is Face0's guidance with c = 1 only "
            f"(got c = {c}); use face0's own sampler for other values."
        )


__all__ = ["FaceEmbeds", "check_c", "face_prompt_embeds"]
