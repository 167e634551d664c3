"""Text context plus face tokens: the conditions the UNet sees (Face0 paper §2.1-2.2), and training dropout.

The frozen CLIP text encoder gives a (B, 77, C) context. The projected face tokens overwrite its last three
positions (0-based 74, 75, 76). "No face" is the same context with those positions zeroed, which is what the
model sees for the 10% of training examples whose face is dropped; "no text" is the context of the negative
prompt (the empty prompt by default). The four conditions of the guidance (face0cli.model.guidance) are built here,
in one place, batched in the canonical branch order.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from face0cli.model.guidance import BRANCHES

FACE_TOKEN_POSITIONS: tuple[int, ...] = (74, 75, 76)
"""Where the paper's three face tokens go in the 77-token CLIP context (positions 75-77, 1-based)."""


def last_positions(n_tokens: int, seq_len: int = 77) -> tuple[int, ...]:
    """The last n_tokens positions of a context of seq_len tokens (paper §2.1): (74, 75, 76) for 3 of 77."""
    return tuple(range(seq_len - n_tokens, seq_len))


@torch.no_grad()
def encode_prompts(
    tokenizer: object, text_encoder: torch.nn.Module, prompts: Sequence[str], device: torch.device | str
) -> torch.Tensor:
    """Encode prompts with the frozen CLIP text encoder into contexts (paper §2.1).

    Prompts are padded / truncated to the tokenizer's model_max_length (77), as Stable Diffusion does; the
    encoder's last hidden state is the context.

    Args:
        tokenizer: a CLIPTokenizer.
        text_encoder: a CLIPTextModel.
        prompts: B strings.
        device: where the encoder runs.

    Returns:
        (B, 77, C) contexts in the text encoder's dtype.
    """
    tokens = tokenizer(  # type: ignore[operator]
        list(prompts),
        padding="max_length",
        max_length=tokenizer.model_max_length,  # type: ignore[attr-defined]
        truncation=True,
        return_tensors="pt",
    )
    mask = None
    if getattr(text_encoder.config, "use_attention_mask", False):
        mask = tokens.attention_mask.to(device)
    return text_encoder(tokens.input_ids.to(device), attention_mask=mask)[0]


def insert_face_tokens(
    context: torch.Tensor, face_tokens: torch.Tensor | None, positions: Sequence[int] = FACE_TOKEN_POSITIONS
) -> torch.Tensor:
    """Overwrite context positions with face tokens, or with zeros for the null face (paper §2.1).

    Returns a new tensor (the input is not modified); gradients flow to both inputs where they are kept.

    Args:
        context: (B, L, C) text contexts.
        face_tokens: (B, T, C) projected face tokens with T == len(positions), or None for the null face.
        positions: T distinct positions in [0, L).

    Returns:
        (B, L, C) contexts.
    """
    pos = list(positions)
    if face_tokens is not None and face_tokens.shape != (context.shape[0], len(pos), context.shape[2]):
        shapes = f"face tokens {tuple(face_tokens.shape)}, context {tuple(context.shape)}"
        raise ValueError(f"face tokens do not fit {len(pos)} positions of the context ({shapes})")
    out = context.clone()
    out[:, pos] = 0.0 if face_tokens is None else face_tokens.to(dtype=context.dtype, device=context.device)
    return out


def build_conditions(
    text_context: torch.Tensor,
    null_text_context: torch.Tensor,
    face_tokens: torch.Tensor | None,
    branches: Sequence[str],
    positions: Sequence[int] = FACE_TOKEN_POSITIONS,
) -> torch.Tensor:
    """Build the contexts of the planned guidance branches as one batch (paper §2.2).

    u = no text + no face, d = text + no face, f = no text + face, df = text + face, where "no text" is the
    negative prompt's context and "no face" zeroes the face positions.

    Args:
        text_context: (B, L, C) contexts of the prompts.
        null_text_context: (B, L, C) contexts of the negative (by default empty) prompt.
        face_tokens: (B, T, C) projected face tokens, or None for the null face.
        branches: a subsequence of BRANCHES in canonical order (face0cli.model.guidance.plan).
        positions: the T face-token positions.

    Returns:
        (K * B, L, C): the K branches' contexts stacked in the order given, branch k in rows [k*B, (k+1)*B).
    """
    order = [b for b in BRANCHES if b in branches]
    if list(branches) != order or not branches:
        raise ValueError(f"branches must be a non-empty subsequence of {BRANCHES}, got {tuple(branches)}")
    parts = {
        "u": (null_text_context, None),
        "d": (text_context, None),
        "f": (null_text_context, face_tokens),
        "df": (text_context, face_tokens),
    }
    return torch.cat([insert_face_tokens(*parts[b], positions) for b in branches])


def drop_faces(face_tokens: Tensor, p: float = 0.1, generator: torch.Generator | None = None) -> Tensor:
    """Zero whole examples' face tokens with probability p, for training (paper §2.3: p = 0.1).

    This is what teaches the model the null face that the guidance's u and d branches use.

    Args:
        face_tokens: (B, T, C) projected face tokens.
        p: probability of dropping each example's tokens, in [0, 1].
        generator: a torch.Generator on face_tokens' device, for reproducible drops.

    Returns:
        (B, T, C): face_tokens with the dropped rows zero (a new tensor; kept rows keep their gradients).
    """
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"drop probability must be in [0, 1], got {p}")
    keep = torch.rand(face_tokens.shape[0], generator=generator, device=face_tokens.device) >= p
    return face_tokens * keep.to(face_tokens.dtype)[:, None, None]
