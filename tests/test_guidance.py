"""Guidance (paper §2.2): coefficients and combination against hand-worked numbers, the plan, conditions."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from face0cli.errors import ParameterError
from face0cli.model.conditioning import build_conditions
from face0cli.model.guidance import BRANCHES, coefficients, combine, plan, validate

# Scalar predictions, so the formula can be worked by hand: u = 1, d = 2, f = 3, df = 5.
EPS = {"u": torch.tensor(1.0), "d": torch.tensor(2.0), "f": torch.tensor(3.0), "df": torch.tensor(5.0)}


@pytest.mark.parametrize(
    "w,c,a,expected",
    [
        (7.5, 1.0, 0.0, {"u": -6.5, "d": 0.0, "f": 0.0, "df": 7.5}),
        (7.5, 0.5, 0.0, {"u": -6.5, "d": 3.75, "f": 0.0, "df": 3.75}),
        (7.5, 1.4, 1.0, {"u": -6.5, "d": 0.0, "f": -3.0, "df": 10.5}),
        (4.0, 0.5, 0.5, {"u": -3.0, "d": 1.0, "f": 1.0, "df": 2.0}),
        (3.0, 0.0, 1.0, {"u": -2.0, "d": 0.0, "f": 3.0, "df": 0.0}),
    ],
)
def test_coefficients_by_hand(w: float, c: float, a: float, expected: dict[str, float]) -> None:
    got = coefficients(w, c, a)
    assert tuple(got) == BRANCHES
    for b in BRANCHES:
        assert got[b] == pytest.approx(expected[b], abs=1e-12)
    assert sum(got.values()) == pytest.approx(1.0)


@pytest.mark.parametrize(
    "w,c,a,expected",
    [
        (7.5, 1.0, 0.0, 31.0),  # 1 + 7.5 * (5 - 1)
        (7.5, 0.0, 0.0, 8.5),  # 1 + 7.5 * (2 - 1): plain CFG on text
        (7.5, 0.5, 0.0, 19.75),  # 1 + 7.5 * (2.5 + 0.5 * 2 - 1)
        (7.5, 1.4, 1.0, 37.0),  # 1 + 7.5 * (1.4 * 5 - 0.4 * 3 - 1)
        (3.0, 0.5, 0.5, 9.25),  # 1 + 3 * (2.5 + 0.5 * (1.5 + 1) - 1)
        (1.0, 0.0, 1.0, 3.0),  # w = 1: the face-only prediction itself
        (0.0, 0.7, 0.3, 1.0),  # w = 0: unconditional
    ],
)
def test_combine_by_hand(w: float, c: float, a: float, expected: float) -> None:
    only_planned = {b: EPS[b] for b in plan(w, c, a)}
    assert combine(only_planned, w, c, a).item() == pytest.approx(expected)
    assert combine(EPS, w, c, a).item() == pytest.approx(expected)  # extra branches are ignored


@pytest.mark.parametrize(
    "w,c,a", [(7.5, 1.0, 0.0), (7.5, 0.5, 0.0), (7.5, 1.4, 1.0), (5.0, 0.3, 0.6), (-2.0, 2.0, -1.0)]
)
def test_combine_matches_the_paper_formula_on_tensors(w: float, c: float, a: float) -> None:
    g = torch.Generator().manual_seed(0)
    eps = {b: torch.randn(2, 4, 8, 8, generator=g) for b in BRANCHES}
    before = {b: t.clone() for b, t in eps.items()}
    formula = eps["u"] + w * (c * eps["df"] + (1 - c) * (a * eps["f"] + (1 - a) * eps["d"]) - eps["u"])
    by_coeffs = sum(k * eps[b] for b, k in coefficients(w, c, a).items())
    out = combine({b: eps[b] for b in plan(w, c, a)}, w, c, a)
    torch.testing.assert_close(out, formula, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out, by_coeffs, rtol=1e-5, atol=1e-5)
    assert all(torch.equal(eps[b], before[b]) for b in BRANCHES)  # pure: inputs untouched


def test_c0_a0_is_exactly_diffusers_cfg() -> None:
    g = torch.Generator().manual_seed(1)
    u, d = torch.randn(3, 4, generator=g), torch.randn(3, 4, generator=g)
    assert torch.equal(combine({"u": u, "d": d}, 7.5, 0.0, 0.0), u + 7.5 * (d - u))
    assert torch.equal(combine({"u": u, "df": d}, 7.5, 1.0, 0.0), u + 7.5 * (d - u))


def test_combine_needs_the_planned_branches() -> None:
    with pytest.raises(KeyError, match="d"):
        combine({"u": EPS["u"], "df": EPS["df"]}, 7.5, 0.5, 0.0)


@pytest.mark.parametrize(
    "w,c,a,expected",
    [
        (7.5, 1.0, 0.0, ("u", "df")),
        (7.5, 1.0, 1.0, ("u", "df")),
        (7.5, 0.0, 0.0, ("u", "d")),
        (7.5, 0.5, 0.0, ("u", "d", "df")),
        (7.5, 0.5, 1.0, ("u", "f", "df")),
        (7.5, 1.4, 1.0, ("u", "f", "df")),
        (7.5, 0.5, 0.5, ("u", "d", "f", "df")),
        (1.0, 1.0, 0.0, ("df",)),
        (0.0, 0.5, 0.5, ("u",)),
    ],
)
def test_plan(w: float, c: float, a: float, expected: tuple[str, ...]) -> None:
    assert plan(w, c, a) == expected


def test_plan_is_minimal_and_at_most_three_for_a_in_0_1() -> None:
    for w, c, a in itertools.product([0.0, 1.0, 2.5, 7.5], [0.0, 0.4, 0.7, 1.0, 1.4], [0.0, 0.3, 1.0]):
        p = plan(w, c, a)
        k = coefficients(w, c, a)
        assert p == tuple(b for b in BRANCHES if k[b] != 0)
        if a in (0.0, 1.0):
            assert len(p) <= 3
        if c == 1.0:
            assert len(p) <= 2


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -math.inf, "7.5", None, True])
def test_validate_refuses_non_finite(bad: object) -> None:
    for args in ((bad, 1.0, 0.0), (7.5, bad, 0.0), (7.5, 1.0, bad)):
        with pytest.raises(ParameterError, match="finite"):
            validate(*args)  # type: ignore[arg-type]
        with pytest.raises(ParameterError):
            plan(*args)  # type: ignore[arg-type]
    validate(7.5, 1.4, 1)


# ------------------------------------------------------------------------------------ conditions of branches


def test_build_conditions_order_and_content() -> None:
    text = torch.randn(2, 77, 4)
    null = torch.randn(2, 77, 4)
    face = torch.randn(2, 3, 4)
    out = build_conditions(text, null, face, BRANCHES)
    assert out.shape == (8, 77, 4)
    u, d, f, df = out.chunk(4)
    for ctx, base, tokens in ((u, null, None), (d, text, None), (f, null, face), (df, text, face)):
        torch.testing.assert_close(ctx[:, :74], base[:, :74])
        if tokens is None:
            assert torch.count_nonzero(ctx[:, 74:]) == 0
        else:
            torch.testing.assert_close(ctx[:, 74:], tokens)
    two = build_conditions(text, null, face, ("u", "df"))
    torch.testing.assert_close(two, torch.cat([u, df]))
    no_face = build_conditions(text, null, None, ("d", "df"))
    torch.testing.assert_close(no_face[:2], no_face[2:])  # the null face: df = d
    with pytest.raises(ValueError, match="subsequence"):
        build_conditions(text, null, face, ("df", "u"))
    with pytest.raises(ValueError):
        build_conditions(text, null, face, ())
