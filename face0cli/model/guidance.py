"""Three-way classifier-free guidance over text and face (Face0 paper §2.2), as pure functions.

With eps_u unconditional (no text, no face), eps_d text only, eps_f face only and eps_df both:

    eps = eps_u + w * (c * eps_df + (1 - c) * (a * eps_f + (1 - a) * eps_d) - eps_u)

Expanded, each branch has one coefficient (they sum to 1):

    u: 1 - w    df: w * c    f: w * (1 - c) * a    d: w * (1 - c) * (1 - a)

A branch whose coefficient is 0 need not be evaluated: plan() lists the others in canonical order, which
is also the order the pipeline batches them in. c = 1 gives (u, df): plain CFG cost. Coefficients may be
negative: c = 1.4, a = 1 gives f the weight -0.4 w, pushing away from the face-only prediction (more text,
more style).
Nothing here touches a UNet or a scheduler.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch

from face0cli.errors import ParameterError

BRANCHES: tuple[str, ...] = ("u", "d", "f", "df")
"""Canonical branch order: unconditional, text only, face only, text and face."""


def validate(w: float, c: float, a: float) -> None:
    """Check the guidance weights are finite numbers (paper §2.2); ParameterError names the first bad one."""
    for name, value in (("w", w), ("c", c), ("a", a)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ParameterError(f"{name} must be a finite number, got {value!r}.")


def coefficients(w: float, c: float, a: float) -> dict[str, float]:
    """The weight of each branch's prediction in the combined one (paper §2.2); they sum to 1.

    Args:
        w: guidance scale.
        c: share of the text-and-face prediction in the conditional part.
        a: share of the face-only prediction in the rest of the conditional part.

    Returns:
        {"u": 1 - w, "d": w (1-c)(1-a), "f": w (1-c) a, "df": w c}, keys in BRANCHES order.
    """
    validate(w, c, a)
    return {
        "u": 1.0 - w,
        "d": w * (1.0 - c) * (1.0 - a),
        "f": w * (1.0 - c) * a,
        "df": w * c,
    }


def plan(w: float, c: float, a: float) -> tuple[str, ...]:
    """The branches that must be evaluated for (w, c, a), in canonical order (paper §2.2).

    A branch with coefficient exactly 0 is left out, so c = 1 -> ("u", "df") (2 UNet evaluations, as plain
    CFG), a = 0 -> no "f", a = 1 -> no "d", w = 1 -> no "u".
    """
    return tuple(b for b, k in coefficients(w, c, a).items() if k != 0.0)


def combine(eps: Mapping[str, torch.Tensor], w: float, c: float, a: float) -> torch.Tensor:
    """Combine the branch predictions into the guided one (paper §2.2, the formula above).

    Only the branches of plan(w, c, a) are read; others may be absent. The formula is evaluated in the paper's
    form, eps_u + w * (inner - eps_u), so c = 0, a = 0 is exactly diffusers' CFG on (u, d) and c = 1 exactly
    CFG on (u, df).

    Args:
        eps: branch name -> (B, C, H, W) noise prediction, all of one shape.
        w, c, a: the guidance weights.

    Returns:
        (B, C, H, W) guided prediction.

    Raises:
        ParameterError: a weight is not finite.
        KeyError: a branch of the plan is missing from eps.
    """
    needed = plan(w, c, a)
    missing = [b for b in needed if b not in eps]
    if missing:
        raise KeyError(f"guidance needs branches {missing} for w={w}, c={c}, a={a}")
    inner_weight = {"d": (1.0 - c) * (1.0 - a), "f": (1.0 - c) * a, "df": c}
    inner: torch.Tensor | None = None
    for b in needed:
        if b == "u":
            continue
        term = eps[b] if inner_weight[b] == 1.0 else inner_weight[b] * eps[b]
        inner = term if inner is None else inner + term
    if "u" not in needed:  # w == 1: the unconditional prediction cancels
        assert inner is not None  # the coefficients sum to 1, so some branch is planned
        return inner
    eps_u = eps["u"]
    if inner is None:  # w == 0: unconditional sampling
        return eps_u
    return eps_u + w * (inner - eps_u)
