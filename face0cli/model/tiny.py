"""Tiny Stable-Diffusion-shaped components built in code: the one place that makes tiny configs (the synthetic world).

Everything here is random-initialised from a seed and needs no download: a byte-level CLIP tokenizer with a
few merges, a 2-layer CLIP text encoder of width 32, a small UNet and VAE, SD's DDIM noise schedule and a
FaceProjector (Face0 paper §2.1) of width 32. A 4-step 32x32 generation takes a fraction of a second on a CPU.
Tests and the synthetic world use it; the full world loads real directories through the same code.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from diffusers.models.autoencoders.autoencoder_kl import AutoencoderKL
from diffusers.models.unets.unet_2d_condition import UNet2DConditionModel
from diffusers.schedulers.scheduling_ddim import DDIMScheduler
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

from face0cli.model.projector import FaceProjector

CONTEXT_DIM = 32
SEQ_LEN = 77

# Stable Diffusion 1.x's training noise schedule (its scheduler/scheduler_config.json), sampled with DDIM.
SD_SCHEDULE: dict[str, Any] = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "clip_sample": False,
    "set_alpha_to_one": False,
    "steps_offset": 1,
    "prediction_type": "epsilon",
}

# Words of the synthetic world's captions; each gets the merges that spell it as one token.
_WORDS = (
    "a", "photo", "of", "person", "portrait", "face", "with", "the", "in", "and", "blue", "red", "green",
    "hair", "background", "painting", "style", "smiling", "man", "woman", "wearing", "shirt", "hat",
)  # fmt: skip


def _byte_alphabet() -> list[str]:
    """The 256 printable stand-ins for bytes that byte-level BPE (GPT-2, CLIP) uses, in byte order."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    keep += list(range(ord("®"), ord("ÿ") + 1))
    out: dict[int, str] = {b: chr(b) for b in keep}
    extra = 0
    for b in range(256):
        if b not in out:
            out[b] = chr(256 + extra)
            extra += 1
    return [out[b] for b in range(256)]


def _bpe(pieces: list[str], ranks: dict[tuple[str, str], int]) -> list[str]:
    """Byte-pair encoding of one word's pieces: merge the lowest-ranked adjacent pair until none applies."""
    while len(pieces) > 1:
        pairs = [(ranks.get((a, b), len(ranks)), i) for i, (a, b) in enumerate(zip(pieces[:-1], pieces[1:]))]
        rank, i = min(pairs)
        if rank == len(ranks):
            break
        pieces = pieces[:i] + [pieces[i] + pieces[i + 1]] + pieces[i + 2 :]
    return pieces


def _merges(words: Sequence[str] = _WORDS) -> list[tuple[str, str]]:
    """Merges that make each word (with CLIP's end-of-word mark) a single token.

    Each word is first encoded with the merges so far; the pieces left are chained left to right by new merges.
    New merges rank after all earlier ones, so the words already handled still encode as one token.
    """
    merges: list[tuple[str, str]] = []
    ranks: dict[tuple[str, str], int] = {}
    for word in dict.fromkeys(words):
        pieces = _bpe(list(word[:-1]) + [word[-1] + "</w>"], ranks)
        while len(pieces) > 1:
            pair = (pieces[0], pieces[1])
            ranks[pair] = len(merges)
            merges.append(pair)
            pieces = [pieces[0] + pieces[1]] + pieces[2:]
    return merges


def tiny_tokenizer(words: Sequence[str] = _WORDS) -> CLIPTokenizer:
    """A CLIP tokenizer over bytes plus merges that make each of `words` one token, built in code, padded and
    truncated to 77 tokens. Any other text still tokenizes (byte by byte where no merge applies)."""
    alphabet = _byte_alphabet()
    tokens = alphabet + [ch + "</w>" for ch in alphabet]
    merges = _merges(tuple(w.lower() for w in words if w))
    tokens += ["".join(m) for m in merges]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    vocab = {t: i for i, t in enumerate(dict.fromkeys(tokens))}
    # merges go in as pairs: tokenizers' BPE takes tuples (transformers annotates them as strings)
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=SEQ_LEN)  # type: ignore[arg-type]


def clip_text_encoder(tokenizer: Any, width: int, intermediate: int, heads: int, layers: int = 2) -> CLIPTextModel:
    """A random CLIP text transformer over TOKENIZER's vocabulary, 77 positions (SD 1.x's text encoder class)."""
    return CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(tokenizer),
            hidden_size=width,
            intermediate_size=intermediate,
            num_hidden_layers=layers,
            num_attention_heads=heads,
            max_position_embeddings=SEQ_LEN,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
    )


def tiny_components(seed: int = 0, embed_dim: int = 32, sample_size: int = 32) -> dict[str, Any]:
    """Random tiny SD-shaped components plus a FaceProjector, the same for the same seed.

    Args:
        seed: seeds every module's initialisation.
        embed_dim: D, the face embedding dimension the projector takes.
        sample_size: the default image size in pixels (a multiple of 8); the UNet works at sample_size / 4.

    Returns:
        {"vae", "text_encoder", "tokenizer", "unet", "scheduler", "projector"}, ready for Face0Pipeline(**it).
    """
    if sample_size % 8:
        raise ValueError(f"sample_size must be a multiple of 8, got {sample_size}")
    tokenizer = tiny_tokenizer()
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=sample_size // 4,
        in_channels=4,
        out_channels=4,
        block_out_channels=(32, 64),
        layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=CONTEXT_DIM,
        attention_head_dim=8,
        norm_num_groups=16,
    )
    torch.manual_seed(seed + 1)
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 3,
        up_block_types=("UpDecoderBlock2D",) * 3,
        block_out_channels=(16, 32, 32),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=16,
        sample_size=sample_size,
    )
    torch.manual_seed(seed + 2)
    text_encoder = clip_text_encoder(tokenizer, CONTEXT_DIM, 64, heads=4).eval()
    torch.manual_seed(seed + 3)
    projector = FaceProjector(embed_dim=embed_dim, hidden_dim=32, n_tokens=3, context_dim=CONTEXT_DIM)
    return {
        "vae": vae.eval(),
        "text_encoder": text_encoder,
        "tokenizer": tokenizer,
        "unet": unet.eval(),
        "scheduler": DDIMScheduler(**SD_SCHEDULE),
        "projector": projector.eval(),
    }


def tiny_pipeline(seed: int = 0, embed_dim: int = 32, sample_size: int = 32) -> Any:
    """A Face0Pipeline over tiny_components(seed, embed_dim, sample_size), embedder id "tiny/random"."""
    from face0cli.model.pipeline import Face0Config, Face0Pipeline

    pipe = Face0Pipeline(**tiny_components(seed, embed_dim, sample_size))
    pipe.face0_config = Face0Config.for_components(pipe, embedder_id="tiny/random")
    return pipe


# Stable Diffusion 1.x's UNet (its unet/config.json), for benchmarks with random weights.
SD1_UNET: dict[str, Any] = {
    "block_out_channels": (320, 640, 1280, 1280),
    "down_block_types": ("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
    "up_block_types": ("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
    "layers_per_block": 2,
    "attention_head_dim": 8,
    "cross_attention_dim": 768,
    "norm_num_groups": 32,
}


def sized_modules(
    size: int,
    channels: tuple[int, ...] | None = None,
    context_dim: int = 768,
    vae_channels: tuple[int, ...] = (32, 32, 64),
    vae_groups: int = 32,
    seed: int = 0,
) -> dict[str, Any]:
    """Random SD-shaped modules larger than the tiny ones, so the UNet dominates as it does in SD (benchmarks).

    Args:
        size: image size in pixels; the UNet's sample size is size / the VAE's factor.
        channels: the UNet's block widths (cross-attention in all but the last); None: SD 1.x's UNet config.
        context_dim: text width with `channels` (SD 1.x: 768).
        vae_channels, vae_groups: the VAE's block widths and group-norm groups (its factor is 2^(n-1)).

    Returns:
        {"vae", "text_encoder", "tokenizer", "unet"}, random from `seed`.
    """
    torch.manual_seed(seed)
    if channels is None:
        unet_cfg = dict(SD1_UNET)
    else:
        n = len(channels)
        unet_cfg = {
            "block_out_channels": channels,
            "down_block_types": ("CrossAttnDownBlock2D",) * (n - 1) + ("DownBlock2D",),
            "up_block_types": ("UpBlock2D",) + ("CrossAttnUpBlock2D",) * (n - 1),
            "layers_per_block": 2,
            "attention_head_dim": 8,
            "cross_attention_dim": context_dim,
            "norm_num_groups": 32,
        }
    width = int(unet_cfg["cross_attention_dim"])
    tokenizer = tiny_tokenizer()
    text_encoder = clip_text_encoder(tokenizer, width, 2 * width, heads=8)
    factor = 2 ** (len(vae_channels) - 1)
    unet = UNet2DConditionModel(sample_size=size // factor, in_channels=4, out_channels=4, **unet_cfg)
    vae = AutoencoderKL(
        block_out_channels=vae_channels,
        down_block_types=("DownEncoderBlock2D",) * len(vae_channels),
        up_block_types=("UpDecoderBlock2D",) * len(vae_channels),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=vae_groups,
    )
    return {"vae": vae, "text_encoder": text_encoder, "tokenizer": tokenizer, "unet": unet}
