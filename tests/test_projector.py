"""FaceProjector (paper §2.1): shapes, the paper's parameter count by hand, save/load; tokens in context."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from face0cli.model.conditioning import FACE_TOKEN_POSITIONS, drop_faces, insert_face_tokens, last_positions
from face0cli.model.projector import FaceProjector, projector_param_count


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_paper_projector_shape_and_parameter_count() -> None:
    proj = FaceProjector()  # the paper's defaults: 1792 -> 3 x 768, 4 layers of width 768
    out = proj(torch.randn(5, 1792))
    assert out.shape == (5, 3, 768)
    by_hand = (1792 * 768 + 768) + 2 * (768 * 768 + 768) + (768 * 2304 + 2304)
    assert by_hand == 4_329_984
    assert n_params(proj) == by_hand == projector_param_count()


@pytest.mark.parametrize("n_layers", [1, 2, 3, 5])
def test_parameter_count_formula_other_depths(n_layers: int) -> None:
    proj = FaceProjector(embed_dim=20, hidden_dim=12, n_tokens=2, context_dim=7, n_layers=n_layers)
    assert n_params(proj) == projector_param_count(20, 12, 2, 7, n_layers)
    assert sum(isinstance(m, nn.Linear) for m in proj.modules()) == n_layers


def test_relu_after_hidden_layers_only() -> None:
    proj = FaceProjector(embed_dim=16, hidden_dim=8, n_tokens=3, context_dim=4, n_layers=4)
    kinds = [type(m).__name__ for m in proj.mlp]
    assert kinds == ["Linear", "ReLU", "Linear", "ReLU", "Linear", "ReLU", "Linear"]
    torch.manual_seed(0)
    out = proj(torch.randn(64, 16))
    assert (out < 0).any() and (out > 0).any()  # no activation on the output tokens


def test_rows_are_independent_and_token_layout() -> None:
    torch.manual_seed(0)
    proj = FaceProjector(embed_dim=16, hidden_dim=8, n_tokens=3, context_dim=4)
    x = torch.randn(4, 16)
    batched = proj(x)
    single = proj(x[2:3])
    torch.testing.assert_close(batched[2:3], single)
    flat = proj.mlp(x)  # token t is the t-th block of C outputs
    torch.testing.assert_close(batched[:, 1], flat[:, 4:8])


def test_wrong_embedding_shape_is_refused() -> None:
    proj = FaceProjector(embed_dim=16, hidden_dim=8, n_tokens=3, context_dim=4)
    with pytest.raises(ValueError, match=r"\(B, 16\)"):
        proj(torch.randn(2, 15))
    with pytest.raises(ValueError):
        proj(torch.randn(16))


def test_save_load_round_trip(tmp_path: Path) -> None:
    torch.manual_seed(3)
    proj = FaceProjector(embed_dim=16, hidden_dim=8, n_tokens=3, context_dim=4)
    proj.save_pretrained(tmp_path / "projector")
    assert (tmp_path / "projector" / "diffusion_pytorch_model.safetensors").is_file()
    again = FaceProjector.from_pretrained(tmp_path / "projector")
    sizes = ("embed_dim", "hidden_dim", "n_tokens", "context_dim", "n_layers")
    assert [again.config[k] for k in sizes] == [16, 8, 3, 4, 4]
    x = torch.randn(3, 16)
    torch.testing.assert_close(again(x), proj(x), rtol=0, atol=0)


# ------------------------------------------------------------------------------------- face tokens in context


def test_positions() -> None:
    assert FACE_TOKEN_POSITIONS == (74, 75, 76) == last_positions(3, 77)
    assert last_positions(2, 10) == (8, 9)


def test_insert_face_tokens_overwrites_only_the_positions() -> None:
    context = torch.randn(2, 77, 4)
    tokens = torch.randn(2, 3, 4)
    out = insert_face_tokens(context, tokens)
    torch.testing.assert_close(out[:, :74], context[:, :74])
    torch.testing.assert_close(out[:, 74:], tokens)
    assert not torch.equal(context[:, 74:], tokens)  # the input is left alone
    null = insert_face_tokens(context, None)
    assert torch.count_nonzero(null[:, 74:]) == 0
    torch.testing.assert_close(null[:, :74], context[:, :74])
    custom = insert_face_tokens(context, tokens, positions=(0, 5, 9))
    torch.testing.assert_close(custom[:, [0, 5, 9]], tokens)
    torch.testing.assert_close(custom[:, 74:], context[:, 74:])
    with pytest.raises(ValueError, match="do not fit"):
        insert_face_tokens(context, torch.randn(2, 2, 4))


def test_insert_face_tokens_passes_gradients() -> None:
    context = torch.randn(1, 77, 4, requires_grad=True)
    tokens = torch.randn(1, 3, 4, requires_grad=True)
    insert_face_tokens(context, tokens).sum().backward()
    assert tokens.grad is not None and torch.equal(tokens.grad, torch.ones_like(tokens))
    assert context.grad is not None
    assert torch.count_nonzero(context.grad[:, 74:]) == 0 and torch.all(context.grad[:, :74] == 1)


def test_drop_faces_zeroes_whole_rows_at_rate_p() -> None:
    tokens = torch.randn(4000, 3, 4) + 5.0  # no row is zero by chance
    out = drop_faces(tokens, p=0.1, generator=torch.Generator().manual_seed(0))
    zero_rows = (out == 0).flatten(1).all(dim=1)
    kept = ~zero_rows
    assert torch.equal(out[kept], tokens[kept])  # rows are dropped whole, kept rows untouched
    assert ((out == 0).flatten(1).any(dim=1) == zero_rows).all()
    assert 0.08 < zero_rows.float().mean().item() < 0.12
    again = drop_faces(tokens, p=0.1, generator=torch.Generator().manual_seed(0))
    assert torch.equal(out, again)
    assert torch.equal(drop_faces(tokens, p=0.0), tokens)
    assert torch.count_nonzero(drop_faces(tokens, p=1.0)) == 0
    with pytest.raises(ValueError):
        drop_faces(tokens, p=1.5)
