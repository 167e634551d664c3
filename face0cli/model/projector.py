"""The face projector: an MLP from a face embedding to context tokens (Face0 paper §2.1).

The paper's projector is a 4-layer MLP of hidden width 768 with ReLU after the hidden layers; it maps the
1792-d InceptionResnetV1 embedding to 3 tokens of the text encoder's width (3 x 768 for SD 1.x). Those tokens
overwrite the last three of the 77 CLIP context positions (see face0cli.model.conditioning).
"""

from __future__ import annotations

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn


def projector_param_count(
    embed_dim: int = 1792, hidden_dim: int = 768, n_tokens: int = 3, context_dim: int = 768, n_layers: int = 4
) -> int:
    """Number of parameters of FaceProjector for these sizes, by hand (paper §2.1): weights plus biases.

    First layer D*H + H, (n_layers - 2) hidden layers H*H + H, last layer H*(T*C) + T*C.
    For the paper's 1792 -> 3 x 768 with 4 layers of width 768 this is 4,329,984.
    """
    out = n_tokens * context_dim
    if n_layers == 1:
        return embed_dim * out + out
    first, hidden, last = (embed_dim + 1) * hidden_dim, (hidden_dim + 1) * hidden_dim, (hidden_dim + 1) * out
    return first + (n_layers - 2) * hidden + last


class FaceProjector(ModelMixin, ConfigMixin):  # type: ignore[misc]
    """Project face embeddings to context tokens with an MLP (paper §2.1).

    n_layers Linear layers: embed_dim -> hidden_dim -> ... -> hidden_dim -> n_tokens * context_dim, ReLU after
    every layer but the last. With the paper's sizes (1792 -> 3 x 768, hidden 768, 4 layers) it has
    4,329,984 parameters: (1792+1)*768 + 2*(768+1)*768 + (768+1)*2304.

    Args:
        embed_dim: D, the face embedder's output dimension (1792 for the paper's InceptionResnetV1).
        hidden_dim: H, width of the hidden layers.
        n_tokens: T, number of context tokens produced.
        context_dim: C, width of one context token (the text encoder's hidden size).
        n_layers: number of Linear layers (>= 1).
        normalize: False (the paper): the MLP takes the embedding as it is. True: the embedding is L2-normalised
            and scaled by sqrt(D) (unit variance per component) and each output token goes through a LayerNorm,
            so the face tokens have the text tokens' scale (as IP-Adapter's projection does); cross-attention
            then sees them from the first step. The default model uses it.
    """

    @register_to_config
    def __init__(
        self,
        embed_dim: int = 1792,
        hidden_dim: int = 768,
        n_tokens: int = 3,
        context_dim: int = 768,
        n_layers: int = 4,
        normalize: bool = False,
    ) -> None:
        super().__init__()
        if min(embed_dim, hidden_dim, n_tokens, context_dim, n_layers) < 1:
            raise ValueError("FaceProjector sizes must all be >= 1")
        widths = [embed_dim] + [hidden_dim] * (n_layers - 1) + [n_tokens * context_dim]
        layers: list[nn.Module] = []
        for i, (d_in, d_out) in enumerate(zip(widths[:-1], widths[1:])):
            layers.append(nn.Linear(d_in, d_out))
            if i < n_layers - 1:
                layers.append(nn.ReLU())
        self.mlp = nn.Sequential(*layers)
        self.token_norm = nn.LayerNorm(context_dim) if normalize else None

    def forward(self, embedding: torch.Tensor) -> torch.Tensor:
        """Map face embeddings to context tokens (paper §2.1).

        Args:
            embedding: (B, D) face embeddings.

        Returns:
            (B, n_tokens, context_dim) tokens, in the projector's dtype.
        """
        cfg = self.config
        if embedding.ndim != 2 or embedding.shape[1] != cfg["embed_dim"]:
            raise ValueError(f"expected (B, {cfg['embed_dim']}) embeddings, got {list(embedding.shape)}")
        x = embedding.to(dtype=self.dtype)
        if self.token_norm is not None:
            x = torch.nn.functional.normalize(x, dim=1) * (cfg["embed_dim"] ** 0.5)
        tokens = self.mlp(x).view(embedding.shape[0], cfg["n_tokens"], cfg["context_dim"])
        return tokens if self.token_norm is None else self.token_norm(tokens)
