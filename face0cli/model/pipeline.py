"""Face0Pipeline: a face0 model directory and sampling with face-and-text guidance (Face0 paper §2).

A face0 model is Stable Diffusion 1.x (VAE, CLIP text encoder and tokenizer, UNet, scheduler) plus a
FaceProjector, whose three output tokens overwrite the last three of the 77 text tokens (paper §2.1). Sampling
mixes up to four UNet predictions ({no text, text} x {no face, face}, paper §2.2); only the branches with a
non-zero weight are evaluated, as one batched UNet call a step. docs/model-format.md describes the directory.

This module composes diffusers' DiffusionPipeline for loading, saving and device/dtype handling; the guidance
arithmetic is face0cli.model.guidance and the conditions are built in face0cli.model.conditioning.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import math
import os
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import PIL.Image
import torch
from diffusers.image_processor import PipelineImageInput, VaeImageProcessor
from diffusers.models.autoencoders.autoencoder_kl import AutoencoderKL
from diffusers.models.unets.unet_2d_condition import UNet2DConditionModel
from diffusers.pipelines.pipeline_utils import DiffusionPipeline, StableDiffusionMixin
from diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion import StableDiffusionPipeline
from diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion_img2img import retrieve_latents
from diffusers.schedulers.scheduling_ddim import DDIMScheduler
from diffusers.schedulers.scheduling_dpmsolver_multistep import DPMSolverMultistepScheduler
from diffusers.schedulers.scheduling_euler_ancestral_discrete import EulerAncestralDiscreteScheduler
from diffusers.schedulers.scheduling_euler_discrete import EulerDiscreteScheduler
from diffusers.schedulers.scheduling_pndm import PNDMScheduler
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from diffusers.utils import BaseOutput
from diffusers.utils.torch_utils import randn_tensor
from transformers import CLIPTextModel, CLIPTokenizer

import face0cli.projector  # noqa: F401  (model directories of face0 0.1 name this module; diffusers needs it imported)
from face0cli.config import SAMPLE_DEFAULTS, SampleConfig
from face0cli.errors import ModelError, NewerFormat, ParameterError, one_line
from face0cli.library.face_space import FaceGMM
from face0cli.model import guidance
from face0cli.model.conditioning import build_conditions, encode_prompts, last_positions
from face0cli.model.projector import FaceProjector

FACE0_JSON = "face0.json"
GMM_DIR = "gmm"
FORMAT_VERSION = 1
COMPONENTS = ("vae", "text_encoder", "tokenizer", "unet", "scheduler", "projector")
SD_COMPONENTS = COMPONENTS[:-1]
StrPath = str | os.PathLike[str]
Generators = torch.Generator | list[torch.Generator] | None
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}

# Sampler name -> (scheduler class, overrides of the model's own scheduler config).
SCHEDULERS: dict[str, tuple[Any, dict[str, Any]]] = {
    "ddim": (DDIMScheduler, {}),
    "dpm++": (DPMSolverMultistepScheduler, {"algorithm_type": "dpmsolver++"}),
    "euler": (EulerDiscreteScheduler, {}),
    "euler-a": (EulerAncestralDiscreteScheduler, {}),
    "pndm": (PNDMScheduler, {"skip_prk_steps": True}),  # as SD 1.x ships it
}


def make_scheduler(name: str, config: Mapping[str, Any]) -> Any:
    """Build the sampler NAME over a model's own noise schedule (its scheduler config); the paper uses DDIM.

    Returns:
        a diffusers scheduler (SchedulerMixin) with the model's betas and timestep settings.

    Raises:
        ParameterError: NAME is not one of SCHEDULERS.
    """
    if name not in SCHEDULERS:
        raise ParameterError(f"unknown scheduler {name!r}; choose one of {', '.join(SCHEDULERS)}.")
    cls, overrides = SCHEDULERS[name]
    return cls.from_config(config, **overrides)


def parse_dtype(name: str | torch.dtype) -> torch.dtype:
    """fp32 / fp16 / bf16 (or a torch.dtype) -> torch.dtype; ParameterError for anything else."""
    if isinstance(name, torch.dtype):
        return name
    if name not in DTYPES:
        raise ParameterError(f"unknown dtype {name!r}; choose one of {', '.join(DTYPES)}.")
    return DTYPES[name]


# ----------------------------------------------------------------------------------------------- face0.json


@dataclass(frozen=True)
class Face0Config:
    """What face0 adds to a diffusers directory (paper §2.1): which embedder, where the face tokens go.

    Attributes:
        embedder_id: identifies the face embedder whose vectors the projector was trained on.
        embed_dim: D, the embedding dimension the projector takes.
        n_tokens: T, face tokens per face (3 in the paper).
        token_positions: the T context positions the face tokens overwrite (74, 75, 76 of 77).
        null_face: how "no face" is written into those positions: "zeros" (the only rule so far).
        context_dim: C, width of a context token (UNet cross-attention width).
        format_version: version of this file's format.
        steps: the sampling steps the model was measured at, which the CLI samples with when none are asked
            (None: face0's default, SampleConfig.steps); older face0 versions ignore it.
    """

    embedder_id: str
    embed_dim: int
    n_tokens: int = 3
    token_positions: tuple[int, ...] = (74, 75, 76)
    null_face: str = "zeros"
    context_dim: int = 768
    format_version: int = FORMAT_VERSION
    steps: int | None = None

    @classmethod
    def for_components(cls, pipe: Face0Pipeline, embedder_id: str = "") -> Face0Config:
        """The config that matches a pipeline's projector and tokenizer: face tokens at the last positions."""
        p = pipe.projector.config
        return cls(
            embedder_id=embedder_id,
            embed_dim=int(p.embed_dim),
            n_tokens=int(p.n_tokens),
            token_positions=last_positions(int(p.n_tokens), int(pipe.tokenizer.model_max_length)),
            context_dim=int(p.context_dim),
        )

    def to_json(self) -> str:
        data = dataclasses.asdict(self)
        data["token_positions"] = list(self.token_positions)
        if self.steps is None:
            del data["steps"]  # the file face0 wrote before it knew the field
        return json.dumps(data, indent=2, sort_keys=True) + "\n"

    @classmethod
    def load(cls, path: Path) -> Face0Config:
        """Read face0.json; ModelError if it is malformed, NewerFormat if a newer face0 wrote it."""
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            if not isinstance(data, dict):
                raise ValueError("not a JSON object")
            version = int(data["format_version"])
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise ModelError(f"{path} is not a face0 model description ({e}).") from e
        if version > FORMAT_VERSION:
            raise NewerFormat(
                f"{path} was written by a newer face0 (format {version}, this face0 reads up to "
                f"{FORMAT_VERSION}); upgrade face0."
            )
        try:
            cfg = cls(
                embedder_id=str(data["embedder_id"]),
                embed_dim=int(data["embed_dim"]),
                n_tokens=int(data["n_tokens"]),
                token_positions=tuple(int(i) for i in data["token_positions"]),
                null_face=str(data["null_face"]),
                context_dim=int(data["context_dim"]),
                format_version=version,
                steps=None if data.get("steps") is None else int(data["steps"]),
            )
            if cfg.steps is not None and (isinstance(data["steps"], bool) or cfg.steps < 1):
                raise ValueError(f"steps must be a whole number >= 1, got {data['steps']!r}")
        except (KeyError, ValueError, TypeError) as e:
            raise ModelError(f"{path} is missing or has a malformed field ({e}).") from e
        return cfg

    def check(self, pipe: Face0Pipeline) -> None:
        """ModelError unless the components fit this description (dimensions, positions, null-face rule)."""
        p = pipe.projector.config
        seq_len = int(pipe.tokenizer.model_max_length)
        problems = []
        if self.null_face != "zeros":
            problems.append(f"null_face {self.null_face!r} is not known (only 'zeros')")
        if (p.embed_dim, p.n_tokens, p.context_dim) != (self.embed_dim, self.n_tokens, self.context_dim):
            problems.append(
                f"the projector maps {p.embed_dim} -> {p.n_tokens} x {p.context_dim}, face0.json says "
                f"{self.embed_dim} -> {self.n_tokens} x {self.context_dim}"
            )
        if pipe.unet.config.cross_attention_dim != self.context_dim:
            width = pipe.unet.config.cross_attention_dim
            problems.append(f"the UNet attends to width {width}, not {self.context_dim}")
        positions = self.token_positions
        if len(positions) != self.n_tokens or len(set(positions)) != len(positions):
            problems.append(f"token_positions {list(positions)} are not {self.n_tokens} distinct positions")
        elif not all(0 <= i < seq_len for i in positions):
            problems.append(f"token_positions {list(positions)} fall outside the {seq_len}-token context")
        if problems:
            raise ModelError(f"the model's parts do not fit together: {'; '.join(problems)}.")


# -------------------------------------------------------------------------------------------------- output


@dataclass
class Face0PipelineOutput(BaseOutput):
    """Images of one request and what they cost.

    Attributes:
        images: PIL images, a (B, H, W, 3) array, a (B, 3, H, W) tensor, or latents, per output_type.
        unet_calls_per_step: UNet evaluations (guidance branches) per denoising step, per image.
        unet_calls: UNet evaluations of the whole request, per image (steps x branches).
        plan: the evaluated branches, in batch order (face0cli.model.guidance.plan).
    """

    images: list[PIL.Image.Image] | np.ndarray | torch.Tensor
    unet_calls_per_step: int
    unet_calls: int
    plan: tuple[str, ...]


# ------------------------------------------------------------------------------------------------ pipeline


class Face0Pipeline(DiffusionPipeline, StableDiffusionMixin):
    """Text-to-image with a face as a second condition (Face0 paper §2).

    Args:
        vae: AutoencoderKL, image <-> latents.
        text_encoder: frozen CLIPTextModel, prompt -> (B, 77, C) context.
        tokenizer: CLIPTokenizer with model_max_length 77.
        unet: UNet2DConditionModel with cross_attention_dim C.
        scheduler: the default sampler (the paper samples with DDIM).
        projector: FaceProjector, (B, D) embedding -> (B, 3, C) face tokens.

    Attributes:
        face0_config: Face0Config, the face0.json of the model.
        gmm: FaceGMM of the training set's embeddings (paper §3.1), or None if the model has none.
    """

    model_cpu_offload_seq = "text_encoder->projector->unet->vae"  # type: ignore[assignment]
    _callback_tensor_inputs = ["latents", "prompt_embeds"]  # what callback_on_step_end may read and replace

    def __init__(
        self,
        vae: AutoencoderKL,
        text_encoder: CLIPTextModel,
        tokenizer: CLIPTokenizer,
        unet: UNet2DConditionModel,
        scheduler: SchedulerMixin,
        projector: FaceProjector,
    ) -> None:
        super().__init__()
        self.register_modules(
            vae=vae,
            text_encoder=text_encoder,
            tokenizer=tokenizer,
            unet=unet,
            scheduler=scheduler,
            projector=projector,
        )
        self.vae_scale_factor = 2 ** (len(vae.config["block_out_channels"]) - 1)
        self.image_processor = VaeImageProcessor(vae_scale_factor=self.vae_scale_factor)
        self.mask_processor = VaeImageProcessor(  # as diffusers' inpainting: white = regenerate, binarised
            vae_scale_factor=self.vae_scale_factor, do_normalize=False, do_binarize=True, do_convert_grayscale=True
        )
        self.control_image_processor = VaeImageProcessor(  # as diffusers' ControlNet pipelines: RGB in [0, 1]
            vae_scale_factor=self.vae_scale_factor, do_convert_rgb=True, do_normalize=False
        )
        self.face0_config = Face0Config.for_components(self)
        self.gmm: FaceGMM | None = None
        self.set_progress_bar_config(disable=True)  # the CLI shows its own progress through `callback`

    # ------------------------------------------------------------------------------------------ loading

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: StrPath, **kwargs: Any) -> Face0Pipeline:
        """Load a face0 model directory, local or a hub id (paper §2; layout in docs/model-format.md).

        A hub id is fetched (or read from the cache) with huggingface_hub, then loaded like a local directory.
        Keyword arguments go to DiffusionPipeline.from_pretrained (torch_dtype, variant, ...); a component
        passed in them need not be in the directory.

        Raises:
            ModelError: a part is missing or malformed, the parts do not fit, or a hub id cannot be fetched.
            NewerFormat: face0.json (or the GMM) was written by a newer face0.
        """
        path = _model_dir(str(pretrained_model_name_or_path), kwargs)
        _check_parts(path, skip=[k for k in COMPONENTS if k in kwargs])
        cfg = Face0Config.load(path / FACE0_JSON)
        try:
            pipe = super().from_pretrained(str(path), **{"use_safetensors": True, **kwargs})
        except (OSError, ValueError, KeyError, TypeError, RuntimeError) as e:
            raise ModelError(f"cannot load the model in {path}: {one_line(e)}.") from e
        cfg.check(pipe)
        pipe.face0_config = cfg
        if (path / GMM_DIR).is_dir():
            pipe.gmm = FaceGMM.load(path / GMM_DIR)
            _check_gmm(pipe.gmm, cfg)
        return pipe

    @classmethod
    def load(cls, model: StrPath, device: str = "cpu", dtype: str | torch.dtype = "fp32") -> Face0Pipeline:
        """Load a model (directory or hub id) onto DEVICE in DTYPE (fp32, fp16, bf16), for the CLI.

        Raises:
            ParameterError: unknown dtype, or a device that does not exist here.
        """
        torch_dtype = parse_dtype(dtype)
        try:
            dev = torch.device(device)
        except RuntimeError as e:
            raise ParameterError(f"unknown device {device!r} ({e}).") from e
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise ParameterError(f"device {device!r} was asked for, but this machine has no usable CUDA GPU.")
        return cls.from_pretrained(model, **_dtype_kwarg(torch_dtype)).to(dev)

    @classmethod
    def from_sd(
        cls,
        base: StrPath | DiffusionPipeline,
        embedder_id: str,
        embed_dim: int,
        seed: int = 0,
        *,
        hidden_dim: int = 768,
        n_tokens: int = 3,
        n_layers: int = 4,
        normalize: bool = False,
        **load_kwargs: Any,
    ) -> Face0Pipeline:
        """Build an untrained face0 model from an SD 1.x base, to train from (paper §2.3: from SD 1.4).

        The base's VAE, text encoder, tokenizer and UNet are reused; the sampler becomes DDIM over the base's
        noise schedule; a new FaceProjector (embed_dim -> n_tokens x the text width) is initialised from SEED.

        Args:
            base: a diffusers SD directory, a hub id, or a loaded pipeline with those components.
            embedder_id: the face embedder the model will be trained with.
            embed_dim: D of that embedder.
            seed: seeds the projector's initialisation (the global RNG is left as it was).
            hidden_dim, n_tokens, n_layers: projector sizes (paper: 768, 3, 4).
            normalize: the projector's unit-variance input and token LayerNorm (FaceProjector; paper: off).
            load_kwargs: passed to StableDiffusionPipeline.from_pretrained (torch_dtype, ...).

        Raises:
            ModelError: the base cannot be loaded or is not SD 1.x-shaped.
        """
        if isinstance(base, DiffusionPipeline):
            comps = dict(base.components)
            where = type(base).__name__
        else:
            where = str(base)
            try:
                comps = StableDiffusionPipeline.from_pretrained(
                    where,
                    safety_checker=None,
                    feature_extractor=None,
                    requires_safety_checker=False,
                    **load_kwargs,
                ).components
            except (OSError, ValueError, KeyError, TypeError, RuntimeError) as e:
                raise ModelError(f"cannot load the Stable Diffusion base {where}: {one_line(e)}.") from e
        missing = [k for k in SD_COMPONENTS if comps.get(k) is None]
        if missing:
            raise ModelError(f"the base {where} has no {', '.join(missing)}.")
        unet, text_encoder, tokenizer = comps["unet"], comps["text_encoder"], comps["tokenizer"]
        width = int(getattr(text_encoder.config, "hidden_size", -1))
        if unet.config.cross_attention_dim != width:
            raise ModelError(
                f"the base {where} is not SD 1.x-shaped: its UNet attends to width "
                f"{unet.config.cross_attention_dim}, its text encoder gives {width}."
            )
        if getattr(tokenizer, "model_max_length", None) != 77:
            raise ModelError(f"the base {where} is not SD 1.x-shaped: its tokenizer does not give 77 tokens.")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            projector = FaceProjector(embed_dim, hidden_dim, n_tokens, width, n_layers, normalize)
        projector.to(device=unet.device, dtype=unet.dtype)
        pipe = cls(
            vae=comps["vae"],
            text_encoder=text_encoder,
            tokenizer=tokenizer,
            unet=unet,
            scheduler=make_scheduler("ddim", comps["scheduler"].config),
            projector=projector,
        )
        pipe.face0_config = Face0Config.for_components(pipe, embedder_id)
        return pipe

    def save_pretrained(self, save_directory: StrPath, **kwargs: Any) -> None:  # type: ignore[override]
        """Write the model directory: the diffusers parts, projector/, face0.json and gmm/ (safetensors)."""
        self.face0_config.check(self)
        if self.gmm is not None:
            _check_gmm(self.gmm, self.face0_config)
        kwargs.setdefault("safe_serialization", True)
        super().save_pretrained(save_directory, **kwargs)
        out = Path(save_directory)
        (out / FACE0_JSON).write_text(self.face0_config.to_json(), encoding="utf-8")
        if self.gmm is not None:
            self.gmm.save(out / GMM_DIR)
        elif (out / GMM_DIR).is_dir():  # a GMM left by an earlier save would not belong to this model
            shutil.rmtree(out / GMM_DIR)

    # ----------------------------------------------------------------------------------------- sampling

    @property
    def guidance_scale(self) -> float:
        """w of the running (or last) call, as diffusers' callbacks read it."""
        return float(getattr(self, "_guidance_scale", SAMPLE_DEFAULTS.w))

    @property
    def num_timesteps(self) -> int:
        return int(getattr(self, "_num_timesteps", 0))

    def check_inputs(
        self,
        prompts: Sequence[str],
        negatives: Sequence[str],
        face: torch.Tensor | None,
        w: float,
        c: float,
        a: float,
        variety: float,
        num_inference_steps: int,
        height: int,
        width: int,
        num_images_per_prompt: int,
        scheduler: str | None = None,
    ) -> None:
        """Raise ParameterError / ModelError for a request the model cannot run (paper §2.2 ranges, through
        SampleConfig)."""
        if not prompts or not all(isinstance(p, str) for p in prompts):
            raise ParameterError("prompt must be a string or a non-empty list of strings.")
        if len(negatives) != len(prompts) or not all(isinstance(n, str) for n in negatives):
            raise ParameterError(f"give one negative prompt or {len(prompts)} (one per prompt), as strings.")
        # the sampler's settings: SampleConfig's checks, the same as generate's and eval's
        steps = int(num_inference_steps) if isinstance(num_inference_steps, np.integer) else num_inference_steps
        SampleConfig(w, c, a, variety, steps, scheduler or SAMPLE_DEFAULTS.scheduler, height, width)
        n = num_images_per_prompt
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
            raise ParameterError(f"num_images_per_prompt must be a whole number >= 1, got {n!r}.")
        if face is not None:
            expected = self.face0_config.embed_dim
            if face.ndim not in (1, 2) or face.shape[-1] != expected:
                got = face.shape[-1] if face.ndim in (1, 2) else tuple(face.shape)
                raise ModelError(f"the face embedding has dimension {got}, the model expects {expected}.")
            if face.ndim == 2 and face.shape[0] not in (1, len(prompts)):
                raise ParameterError(f"give one face or one per prompt ({len(prompts)}), not {len(face)}.")
            if not torch.isfinite(face).all():
                raise ParameterError("the face embedding contains NaN or infinite values.")

    def project_faces(
        self,
        embedding: torch.Tensor | None,
        num_images_per_prompt: int,
        variety: float,
        generator: Generators,
    ) -> torch.Tensor | None:
        """Project the request's faces in one projector call (paper §2.1), with variety noise (§2.2).

        With variety v > 0 every image's embedding e gets its own Gaussian noise of standard deviation
        v * rms(e) (rms = |e| / sqrt(D)), drawn from the generator, before projection: a small v keeps the
        person and varies the picture.

        Args:
            embedding: (P, D) one face per prompt, or None for the null face.
            num_images_per_prompt: N images per prompt.
            variety: v >= 0.

        Returns:
            (P * N, T, C) face tokens in prompt-major order, or None.
        """
        if embedding is None:
            return None
        device = self._execution_device
        emb = embedding.to(device=device, dtype=torch.float32)
        if variety > 0:
            emb = emb.repeat_interleave(num_images_per_prompt, dim=0)
            rms = emb.norm(dim=1, keepdim=True) / math.sqrt(emb.shape[1])
            noise = randn_tensor(tuple(emb.shape), generator=generator, device=device, dtype=torch.float32)
            return self.projector(emb + variety * rms * noise)
        return self.projector(emb).repeat_interleave(num_images_per_prompt, dim=0)

    def check_ecosystem_inputs(
        self,
        image: PipelineImageInput | None,
        strength: float,
        mask_image: PipelineImageInput | None,
        controlnet: Any,
        control_image: PipelineImageInput | None,
        controlnet_conditioning_scale: float,
    ) -> None:
        """ParameterError for an image-to-image, inpainting or ControlNet request that cannot run."""
        if isinstance(strength, bool) or not isinstance(strength, (int, float)) or not 0.0 <= strength <= 1.0:
            raise ParameterError(f"strength must be a number in [0, 1], got {strength!r}.")
        if mask_image is not None and image is None:
            raise ParameterError("a mask needs the image it masks (give image= with mask_image=).")
        if (controlnet is None) != (control_image is None):
            raise ParameterError("a ControlNet needs a control image and a control image needs a ControlNet.")
        scale = controlnet_conditioning_scale
        if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not math.isfinite(scale):
            raise ParameterError(f"controlnet_conditioning_scale must be a finite number, got {scale!r}.")
        if controlnet is not None:
            width = getattr(controlnet.config, "cross_attention_dim", None)
            if width != self.unet.config.cross_attention_dim:
                raise ModelError(
                    f"the ControlNet attends to width {width}, the model's UNet to "
                    f"{self.unet.config.cross_attention_dim}: it was made for another base model."
                )

    def prepare_image_latents(
        self, pixels: torch.Tensor, n_prompts: int, num_images_per_prompt: int, generator: Generators
    ) -> torch.Tensor:
        """Encode the init image(s) with the VAE, sampling its latent distribution, as diffusers' img2img does.

        Args:
            pixels: (1 or P, 3, H, W) init images in [-1, 1] (VaeImageProcessor.preprocess), at the request size.

        Returns:
            (P * N, 4, h, w) scaled latents, prompt-major.
        """
        pixels = pixels.to(self._execution_device, self.vae.dtype)
        if pixels.shape[0] not in (1, n_prompts):
            raise ParameterError(f"give one init image or one per prompt ({n_prompts}), not {pixels.shape[0]}.")
        batch = n_prompts * num_images_per_prompt
        if isinstance(generator, list):  # one generator per image, as diffusers does
            rows = pixels.expand(n_prompts, -1, -1, -1).repeat_interleave(num_images_per_prompt, dim=0)
            latents = torch.cat(
                [retrieve_latents(self.vae.encode(rows[i : i + 1]), generator=generator[i]) for i in range(batch)]
            )
        else:
            latents = retrieve_latents(self.vae.encode(pixels), generator=generator)
            latents = latents.expand(n_prompts, -1, -1, -1).repeat_interleave(num_images_per_prompt, dim=0)
        return self.vae.config.scaling_factor * latents.to(self.unet.dtype)

    @torch.no_grad()
    def __call__(
        self,
        prompt: str | list[str],
        face: np.ndarray | torch.Tensor | None = None,
        *,
        negative_prompt: str | list[str] = "",
        w: float | None = None,
        c: float = SAMPLE_DEFAULTS.c,
        a: float = SAMPLE_DEFAULTS.a,
        variety: float = SAMPLE_DEFAULTS.variety,
        num_inference_steps: int = SAMPLE_DEFAULTS.steps,
        height: int | None = SAMPLE_DEFAULTS.height,
        width: int | None = SAMPLE_DEFAULTS.width,
        generator: Generators = None,
        num_images_per_prompt: int = 1,
        scheduler: str | None = None,
        eta: float = 0.0,
        output_type: str = "pil",
        callback: Callable[[int, torch.Tensor, torch.Tensor], None] | None = None,
        image: PipelineImageInput | None = None,
        strength: float = 0.8,
        mask_image: PipelineImageInput | None = None,
        controlnet: Any = None,
        control_image: PipelineImageInput | None = None,
        controlnet_conditioning_scale: float = 1.0,
        guidance_scale: float | None = None,
        latents: torch.Tensor | None = None,
        return_dict: bool = True,
        callback_on_step_end: Callable[[Any, int, torch.Tensor, dict[str, Any]], dict[str, Any]] | Any = None,
        callback_on_step_end_tensor_inputs: Sequence[str] = ("latents",),
    ) -> Face0PipelineOutput:
        """Generate images of the prompt with the face (paper §2.2 guidance, §3 uses).

        Image-to-image, inpainting and ControlNet compose with the guidance: every planned branch goes through
        one batched UNet call a step (and one batched ControlNet call before it, whose residuals it takes).

        Args:
            prompt: one prompt or P prompts.
            face: (D,) one face for all prompts, (P, D) one per prompt, or None for no face (zero tokens).
            negative_prompt: the "no text" condition, one or P strings (default: the empty prompt).
            w: guidance scale (default SampleConfig's, 7.5); `guidance_scale` is the same, by diffusers' name.
            c: weight of text-and-face in the conditional part (1 = photo-real, plain CFG cost).
            a: weight of face-only against text-only in the rest (0 or 1 keeps 3 evaluations at most).
            variety: noise on the embedding, in units of its rms (see project_faces); no face, no noise.
            num_inference_steps: sampler steps (with an init image, only the last strength * steps run).
            height, width: image size, multiples of 8 (default: the init image's size, else the UNet's).
            generator: seeds the init image's latents, the latents, then the variety noise, then the sampler's.
            num_images_per_prompt: N images for each prompt.
            scheduler: a SCHEDULERS name for this call over the model's noise schedule; None = the model's.
            eta: DDIM eta (ignored by samplers without it).
            output_type: "pil", "np", "pt" or "latent".
            callback: called as callback(step, timestep, latents) after each step that runs.
            image: init image(s) for image-to-image (one, or one per prompt), as diffusers' img2img takes.
            strength: with an init image, how much of the schedule runs from its noised latents (0..1; 1 =
                start from almost pure noise), diffusers' img2img timesteps rule.
            mask_image: with an init image, where to regenerate (white) and keep (black); the kept region's
                latents are put back, noised to the next timestep, after every step (diffusers' inpainting
                with a non-inpainting UNet).
            controlnet: a diffusers ControlNetModel for the model's base (e.g. an OpenPose ControlNet).
            control_image: its condition image (e.g. a pose skeleton), one or one per prompt.
            controlnet_conditioning_scale: multiplies the ControlNet's residuals.
            guidance_scale: w, by diffusers' name (give one of the two, or both equal).
            latents: (P * N, C, H / 8, W / 8) initial noise in place of noise drawn from the generator.
            return_dict: False returns a tuple (images, unet_calls_per_step, unet_calls, plan).
            callback_on_step_end: diffusers' step callback, called after every sampler step as
                callback_on_step_end(pipe, step, timestep, callback_kwargs) -> dict; callback_kwargs holds the
                tensors named in callback_on_step_end_tensor_inputs ("latents", "prompt_embeds": the guidance
                branches' contexts), and the tensors in the returned dict replace them. A diffusers
                PipelineCallback or MultiPipelineCallbacks names its own tensor inputs.
            callback_on_step_end_tensor_inputs: the tensors given to callback_on_step_end.

        Defaults of the sampler's settings come from SampleConfig, and SampleConfig checks them.

        Returns:
            Face0PipelineOutput with P * N images (prompt-major) and the UNet evaluations they cost, or its
            fields as a tuple (return_dict=False).
        """
        # 0. Check inputs
        if w is not None and guidance_scale is not None and w != guidance_scale:
            raise ParameterError(
                f"w and guidance_scale are one setting; got w={w} and guidance_scale={guidance_scale}."
            )
        w = w if w is not None else guidance_scale if guidance_scale is not None else SAMPLE_DEFAULTS.w
        tensor_inputs = list(getattr(callback_on_step_end, "tensor_inputs", None) or callback_on_step_end_tensor_inputs)
        unknown = [k for k in tensor_inputs if k not in self._callback_tensor_inputs]
        if unknown:
            raise ParameterError(
                f"callback_on_step_end_tensor_inputs takes {', '.join(self._callback_tensor_inputs)}; got {unknown}."
            )
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        neg = negative_prompt
        negatives = [neg] * len(prompts) if isinstance(neg, str) else list(neg)
        self.check_ecosystem_inputs(
            image, strength, mask_image, controlnet, control_image, controlnet_conditioning_scale
        )
        init_pixels = None
        if image is not None:  # the init image sets the default size, as in diffusers' img2img
            init_pixels = self.image_processor.preprocess(image, height=height, width=width)
            height, width = int(init_pixels.shape[-2]), int(init_pixels.shape[-1])
        default_size = self.unet.config.sample_size * self.vae_scale_factor
        height = default_size if height is None else height
        width = default_size if width is None else width
        if (height, width) != (default_size, default_size):
            from face0cli.console import warn

            warn(
                f"this model was trained at {default_size}x{default_size} px; at {width}x{height} expect repeated "
                "or broken shapes (leave the size out to get the trained one)."
            )
        # a copy: the caller's array may be read-only (an h5py or GMM buffer), and torch warns on those
        embedding = None if face is None else torch.from_numpy(np.array(face, dtype=np.float32))
        self.check_inputs(
            prompts,
            negatives,
            embedding,
            w,
            c,
            a,
            variety,
            num_inference_steps,
            height,
            width,
            num_images_per_prompt,
            scheduler,
        )
        if output_type not in ("pil", "np", "pt", "latent"):
            raise ParameterError(f"output_type must be pil, np, pt or latent, got {output_type!r}.")
        if embedding is not None:
            embedding = embedding.reshape(-1, embedding.shape[-1]).expand(len(prompts), -1)
        own = self.scheduler
        sampler: Any = own if scheduler is None else make_scheduler(scheduler, own.config)
        branches = guidance.plan(w, c, a)
        device = self._execution_device
        dtype = self.unet.dtype
        batch = len(prompts) * num_images_per_prompt

        # 1. Encode the prompts and the "no text" prompts once, in one text-encoder call
        contexts = encode_prompts(self.tokenizer, self.text_encoder, prompts + negatives, device).to(dtype)
        text_context = contexts[: len(prompts)].repeat_interleave(num_images_per_prompt, dim=0)
        null_context = contexts[len(prompts) :].repeat_interleave(num_images_per_prompt, dim=0)

        # 2. Prepare the timesteps and the initial latents (drawn first, so variety does not move them):
        #    noise for text-to-image; the init image's latents noised to the first timestep for img2img
        shape = (
            batch,
            self.unet.config.in_channels,
            height // self.vae_scale_factor,
            width // self.vae_scale_factor,
        )
        sampler.set_timesteps(num_inference_steps, device=device)
        timesteps, steps_run = sampler.timesteps, num_inference_steps
        image_latents = None
        if init_pixels is not None:
            timesteps, steps_run = img2img_timesteps(sampler, num_inference_steps, strength)
            image_latents = self.prepare_image_latents(init_pixels, len(prompts), num_images_per_prompt, generator)
        if latents is None:
            noise = randn_tensor(shape, generator=generator, device=device, dtype=dtype)
        elif tuple(latents.shape) != shape:
            raise ParameterError(f"latents must have the shape {shape}, got {tuple(latents.shape)}.")
        else:
            noise = latents.to(device=device, dtype=dtype)
        if image_latents is None or (mask_image is not None and strength == 1.0):
            latents = noise * sampler.init_noise_sigma  # as diffusers' inpainting at full strength
        else:
            latents = sampler.add_noise(image_latents, noise, timesteps[:1].repeat(batch))

        # 3. Project the face once for the whole request
        face_tokens = self.project_faces(embedding, num_images_per_prompt, variety, generator)

        # 4. Build the contexts of the planned branches as one batch, in plan order
        positions = self.face0_config.token_positions
        context = build_conditions(text_context, null_context, face_tokens, branches, positions)
        k = len(branches)

        # 4b. Prepare the inpainting mask (latent size) and the control image (every branch)
        mask = None
        if mask_image is not None:
            mask_pixels = self.mask_processor.preprocess(mask_image, height=height, width=width)
            mask = torch.nn.functional.interpolate(mask_pixels, size=shape[-2:]).to(device=device, dtype=dtype)
            mask = _to_batch(mask, len(prompts), num_images_per_prompt, "mask")
        control = None
        if controlnet is not None:
            control = self.control_image_processor.preprocess(control_image, height=height, width=width)
            control = _to_batch(control, len(prompts), num_images_per_prompt, "control image")
            control = torch.cat([control] * k).to(device=device, dtype=controlnet.dtype)

        # 5. Denoise: one batched (ControlNet and) UNet call over the branches, combine (paper §2.2), step,
        #    then put the kept region back (inpainting)
        step_kwargs = _step_kwargs(sampler, generator, eta)
        warmup = len(timesteps) - steps_run * sampler.order
        unet_calls = done = 0
        self._guidance_scale, self._num_timesteps = w, len(timesteps)
        with self.progress_bar(total=steps_run) as bar:
            for i, t in enumerate(timesteps):
                model_input = sampler.scale_model_input(torch.cat([latents] * k) if k > 1 else latents, t)
                residuals: dict[str, Any] = {}
                if controlnet is not None:
                    down, mid = controlnet(
                        model_input.to(controlnet.dtype),
                        t,
                        encoder_hidden_states=context.to(controlnet.dtype),
                        controlnet_cond=control,
                        conditioning_scale=float(controlnet_conditioning_scale),
                        return_dict=False,
                    )
                    residuals = {
                        "down_block_additional_residuals": [r.to(dtype) for r in down],
                        "mid_block_additional_residual": mid.to(dtype),
                    }
                eps_all = self.unet(model_input, t, encoder_hidden_states=context, return_dict=False, **residuals)[0]
                unet_calls += k
                eps = guidance.combine(dict(zip(branches, eps_all.chunk(k))), w, c, a)
                latents = sampler.step(eps, t, latents, **step_kwargs, return_dict=False)[0]
                if mask is not None and image_latents is not None:
                    known = image_latents
                    if i < len(timesteps) - 1:
                        known = sampler.add_noise(image_latents, noise, timesteps[i + 1 : i + 2].repeat(batch))
                    latents = (1 - mask) * known + mask * latents
                if callback_on_step_end is not None:
                    tensors = {"latents": latents, "prompt_embeds": context}
                    returned = callback_on_step_end(self, i, t, {k: tensors[k] for k in tensor_inputs}) or {}
                    latents = returned.get("latents", latents)
                    context = returned.get("prompt_embeds", context)
                if i == len(timesteps) - 1 or (i + 1 > warmup and (i + 1) % sampler.order == 0):
                    bar.update()
                    if callback is not None:
                        callback(done, t, latents)
                    done += 1

        # 6. Decode the latents to images
        if output_type == "latent":
            images: Any = latents
        else:
            scaled = latents.to(self.vae.dtype) / self.vae.config.scaling_factor
            decoded = self.vae.decode(scaled, return_dict=False)[0]
            images = self.image_processor.postprocess(decoded, output_type=output_type)
        self.maybe_free_model_hooks()
        output = Face0PipelineOutput(images=images, unet_calls_per_step=k, unet_calls=unet_calls, plan=branches)
        return output if return_dict else (images, k, unet_calls, branches)  # type: ignore[return-value]


# ------------------------------------------------------------------------------------------------- helpers


def img2img_timesteps(sampler: Any, num_inference_steps: int, strength: float) -> tuple[torch.Tensor, int]:
    """The timesteps an init image at STRENGTH runs through, and how many steps that is (diffusers' img2img rule).

    The last int(num_inference_steps * strength) steps of the sampler's schedule run; the sampler is told
    where it starts (set_begin_index) when it keeps a step index.

    Raises:
        ParameterError: strength * steps leaves no step to run.
    """
    init = min(int(num_inference_steps * strength), num_inference_steps)
    start = max(num_inference_steps - init, 0)
    if init < 1:
        raise ParameterError(
            f"strength {strength} of {num_inference_steps} steps runs no step; raise --strength or --steps."
        )
    timesteps = sampler.timesteps[start * sampler.order :]
    if hasattr(sampler, "set_begin_index"):
        sampler.set_begin_index(start * sampler.order)
    return timesteps, num_inference_steps - start


def _to_batch(x: torch.Tensor, n_prompts: int, num_images_per_prompt: int, what: str) -> torch.Tensor:
    """(1 or P, ...) per-prompt tensors -> (P * N, ...) prompt-major; ParameterError for another count."""
    if x.shape[0] not in (1, n_prompts):
        raise ParameterError(f"give one {what} or one per prompt ({n_prompts}), not {x.shape[0]}.")
    return x.expand(n_prompts, *x.shape[1:]).repeat_interleave(num_images_per_prompt, dim=0)


def _step_kwargs(sampler: Any, generator: Generators, eta: float) -> dict[str, Any]:
    """The optional arguments this sampler's step() takes: eta (DDIM) and generator (stochastic samplers)."""
    accepted = inspect.signature(sampler.step).parameters
    kwargs: dict[str, Any] = {}
    if "eta" in accepted:
        kwargs["eta"] = eta
    if "generator" in accepted:
        kwargs["generator"] = generator
    return kwargs


def _dtype_kwarg(dtype: torch.dtype) -> dict[str, torch.dtype]:
    """The dtype keyword of from_pretrained: `dtype` where diffusers has it, else `torch_dtype`."""
    from diffusers.utils import deprecation_utils

    return {"dtype" if hasattr(deprecation_utils, "_resolve_dtype") else "torch_dtype": dtype}


def _model_dir(name: str, kwargs: dict[str, Any]) -> Path:
    """A local model directory for NAME: the directory itself, or a hub id's snapshot (fetched or cached)."""
    path = Path(name).expanduser()
    if path.is_dir():
        return path
    if path.exists():
        raise ModelError(f"{path} is a file, not a face0 model directory.")
    if name.startswith(("/", ".", "~")) or name.count("/") > 1 or "\\" in name:  # a path, not an org/name id
        raise ModelError(f"there is no model directory at {path}.")
    from huggingface_hub import snapshot_download

    try:
        snapshot = snapshot_download(
            name,
            revision=kwargs.get("revision"),
            cache_dir=kwargs.get("cache_dir"),
            token=kwargs.get("token"),
            local_files_only=bool(kwargs.get("local_files_only", False)),
            allow_patterns=["*.json", "*.txt", "*.safetensors", f"{GMM_DIR}/*"],
            # variants (unet/diffusion_pytorch_model.fp16.safetensors) only when one is asked for
            ignore_patterns=None if kwargs.get("variant") else ["*.*.safetensors"],
        )
    except (OSError, ValueError) as e:
        raise ModelError(
            f"'{name}' is not a local directory and could not be fetched from the Hugging Face Hub "
            f"(offline and not cached, or no such model: {type(e).__name__})."
        ) from e
    return Path(snapshot)


def _check_parts(path: Path, skip: Sequence[str] = ()) -> None:
    """ModelError naming the first missing part of a model directory (docs/model-format.md)."""
    for name in ("model_index.json", FACE0_JSON):
        if not (path / name).is_file():
            raise ModelError(f"{path} is not a complete face0 model: {name} is missing.")
    try:
        index = json.loads((path / "model_index.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ModelError(f"{path / 'model_index.json'} is not valid JSON ({e}).") from e
    for part in COMPONENTS:
        if part in skip:
            continue
        entry = index.get(part)
        if not isinstance(entry, list) or len(entry) != 2 or entry[0] is None:
            raise ModelError(f"{path} is not a complete face0 model: model_index.json lists no {part}.")
        if not (path / part).is_dir():
            raise ModelError(f"{path} is not a complete face0 model: {part}/ is missing.")
        _refuse_pickles(path / part)


PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")


def _refuse_pickles(folder: Path) -> None:
    """ModelError for a part whose weights are pickles: unpickling a file can run any code it carries."""
    pickles = sorted(p.name for p in folder.iterdir() if p.suffix in PICKLE_SUFFIXES)
    if pickles and not any(folder.glob("*.safetensors")):
        raise ModelError(
            f"face0 loads safetensors only, and {folder} holds pickled weights ({', '.join(pickles)}); "
            "convert them to .safetensors (e.g. load and save_pretrained with safe_serialization=True)."
        )


def _check_gmm(gmm: FaceGMM, cfg: Face0Config) -> None:
    other_embedder = gmm.embedder_id and cfg.embedder_id and gmm.embedder_id != cfg.embedder_id
    if gmm.dim != cfg.embed_dim or other_embedder:
        raise ModelError(
            f"the model's face GMM is over {gmm.dim}-d vectors of embedder {gmm.embedder_id!r}, "
            f"but the model takes {cfg.embed_dim}-d vectors of {cfg.embedder_id!r}."
        )
