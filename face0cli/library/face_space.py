"""Operations on face embeddings: mixing (paper §3.3) and a Gaussian mixture of embeddings (paper §3.1-3.2).

Mixing is plain vector arithmetic on embeddings of one embedder: weighted means (several photos of one person,
or a blend of people), linear interpolation, and direction edits ("with mustache" - "without"). The Gaussian
mixture of the training set's embeddings gives random but plausible faces: a seed picks one, so a random
character is reproducible from its seed and the mixture's identity.

Only numpy is imported at module level; scikit-learn is imported inside FaceGMM.fit.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from face0cli.config import COVARIANCE_TYPES, GMMConfig, to_dict
from face0cli.errors import EmbedderMismatch, ModelError, NewerFormat, ParameterError

if TYPE_CHECKING:
    from face0cli.library.store import Character


# ------------------------------------------------------------------------------------------------- mixing


def check_compatible(chars: Sequence[Character]) -> tuple[str, int]:
    """Check that characters come from one embedder with one dimension (paper §3.3); returns (embedder_id, D).

    Raises:
        EmbedderMismatch: naming the first character that differs from the first one.
        ParameterError: no characters given.
    """
    if not chars:
        raise ParameterError("no characters given to combine.")
    first = chars[0]
    for c in chars[1:]:
        if c.embedder_id != first.embedder_id or c.dim != first.dim:
            raise EmbedderMismatch(
                f"cannot combine '{first.name}' (embedder {first.embedder_id}, {first.dim}-d) "
                f"with '{c.name}' "
                f"(embedder {c.embedder_id}, {c.dim}-d): their vectors live in different embedding spaces."
            )
    return first.embedder_id, first.dim


def _finite(name: str, value: float) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError) as e:
        raise ParameterError(f"{name} must be a finite number, got {value!r}.") from e
    if not math.isfinite(v):
        raise ParameterError(f"{name} must be a finite number, got {value!r}.")
    return v


def _same_shape(**vectors: np.ndarray) -> list[np.ndarray]:
    arrays = [np.asarray(v, dtype=np.float64) for v in vectors.values()]
    shapes = {a.shape for a in arrays}
    if len(shapes) != 1 or arrays[0].ndim != 1:
        detail = ", ".join(f"{k} {np.shape(v)}" for k, v in vectors.items())
        raise EmbedderMismatch(f"face vectors must be 1-D of one dimension, got {detail}.")
    return arrays


def weighted_mean(vectors: np.ndarray, weights: np.ndarray | Sequence[float]) -> np.ndarray:
    """Weighted mean of face embeddings, normalised by the sum of the weights (paper §3.3).

    Weights may be negative (extrapolation) but must be finite and must not sum to zero.

    Args:
        vectors: (K, D) embeddings.
        weights: (K,) weights.

    Returns:
        (D,) float32: sum_k w_k v_k / sum_k w_k.
    """
    v = np.asarray(vectors, dtype=np.float64)
    w = np.asarray(weights, dtype=np.float64)
    if v.ndim != 2 or w.ndim != 1 or v.shape[0] != w.shape[0] or v.shape[0] == 0:
        raise ParameterError(f"weighted_mean needs (K, D) vectors and K weights, got {v.shape} and {w.shape}.")
    if not np.isfinite(w).all():
        raise ParameterError(f"mixing weights must be finite numbers, got {w.tolist()}.")
    total = w.sum()
    if abs(total) <= 1e-9 * np.abs(w).sum():
        raise ParameterError(f"mixing weights must not sum to zero, got {w.tolist()}.")
    return ((w / total) @ v).astype(np.float32)


def lerp(a: np.ndarray, b: np.ndarray, t: float) -> np.ndarray:
    """Interpolate linearly, (1 - t) * a + t * b, between two embeddings (paper §3.3); t may extrapolate.

    Args:
        a, b: (D,) embeddings.
        t: finite position (0 -> a, 1 -> b).

    Returns:
        (D,) float32.
    """
    t = _finite("t", t)
    a64, b64 = _same_shape(a=a, b=b)
    return (a64 + t * (b64 - a64)).astype(np.float32)


def direction_edit(
    base: np.ndarray, towards: np.ndarray, amount: float, origin: np.ndarray | None = None
) -> np.ndarray:
    """Move an embedding along a direction in face space (paper §3.3).

    With ORIGIN the direction is towards - origin, transferred onto base (e.g. "with mustache" minus
    "without"): base + amount * (towards - origin). Without it: base + amount * (towards - base).

    Args:
        base, towards: (D,) embeddings; origin: (D,) or None.
        amount: finite step along the direction.

    Returns:
        (D,) float32.
    """
    amount = _finite("amount", amount)
    if origin is None:
        b, t = _same_shape(base=base, towards=towards)
        return (b + amount * (t - b)).astype(np.float32)
    b, t, o = _same_shape(base=base, towards=towards, origin=origin)
    return (b + amount * (t - o)).astype(np.float32)


def parse_weighted(specs: Sequence[str]) -> list[tuple[str, float]]:
    """Parse CLI mixing arguments like ``alice=0.7 bob=0.3`` into (name, weight) pairs; a bare name weighs 1.

    Raises:
        ParameterError: empty name, a weight that is not a finite number, or a name given twice.
    """
    out: list[tuple[str, float]] = []
    for spec in specs:
        name, sep, value = spec.partition("=")
        name = name.strip()
        if not name:
            raise ParameterError(f"'{spec}' has no character name; write NAME or NAME=WEIGHT.")
        if sep:
            try:
                weight = float(value)
            except ValueError as e:
                raise ParameterError(f"the weight in '{spec}' is not a number; write NAME=WEIGHT.") from e
            if not math.isfinite(weight):
                raise ParameterError(f"the weight in '{spec}' must be a finite number.")
        else:
            weight = 1.0
        if any(n == name for n, _ in out):
            raise ParameterError(f"character '{name}' is given twice.")
        out.append((name, weight))
    return out


# ------------------------------------------------------------------------------------------- Gaussian mixture


class FaceGMM:
    """A Gaussian mixture over face embeddings, to draw random plausible faces (paper §3.1-3.2).

    Args:
        weights: (K,) mixture weights summing to 1.
        means: (K, D) component means.
        covariances: per covariance_type, as scikit-learn: full (K, D, D), tied (D, D), diag (K, D),
            spherical (K,).
        covariance_type: one of COVARIANCE_TYPES.
        embedder_id: the embedder whose vectors were fitted.
        config: the GMMConfig of the fit.
        n_train: number of embeddings fitted.
        bic: BIC per number of components tried.
        converged: whether EM converged for the chosen number of components.
    """

    FORMAT = "face0-gmm"
    FORMAT_VERSION = 1
    TENSORS = "gmm.safetensors"
    META = "gmm.json"

    def __init__(
        self,
        weights: np.ndarray,
        means: np.ndarray,
        covariances: np.ndarray,
        covariance_type: str = "diag",
        embedder_id: str = "",
        config: GMMConfig | None = None,
        n_train: int = 0,
        bic: dict[int, float] | None = None,
        converged: bool = True,
    ) -> None:
        self.weights = np.array(weights, dtype=np.float64, order="C")  # own copies, frozen below
        self.means = np.array(means, dtype=np.float64, order="C")
        self.covariances = np.array(covariances, dtype=np.float64, order="C")
        self.covariance_type = covariance_type
        self.embedder_id = embedder_id
        self.config = config if config is not None else GMMConfig()
        self.n_train = int(n_train)
        self.bic = dict(bic or {})
        self.converged = bool(converged)
        self._check()
        self._scale = self._sampling_factors()
        for a in (self.weights, self.means, self.covariances):
            a.setflags(write=False)

    def _check(self) -> None:
        """Validate shapes and values; ParameterError says what is wrong."""
        t = self.covariance_type
        if t not in COVARIANCE_TYPES:
            raise ParameterError(f"covariance_type must be one of {', '.join(COVARIANCE_TYPES)}, got {t!r}.")
        if self.means.ndim != 2 or self.weights.shape != (self.means.shape[0],) or self.means.shape[0] < 1:
            raise ParameterError(f"GMM weights {self.weights.shape} and means {self.means.shape} do not match.")
        k, d = self.means.shape
        expected = {"full": (k, d, d), "tied": (d, d), "diag": (k, d), "spherical": (k,)}[t]
        if self.covariances.shape != expected:
            raise ParameterError(f"{t} covariances must have shape {expected}, got {self.covariances.shape}.")
        for name in ("weights", "means", "covariances"):
            if not np.isfinite(getattr(self, name)).all():
                raise ParameterError(f"the GMM {name} are not all finite.")
        if (self.weights < 0).any() or not np.isclose(self.weights.sum(), 1.0, atol=1e-6):
            raise ParameterError("the GMM weights must be non-negative and sum to 1.")

    def _sampling_factors(self) -> np.ndarray:
        """Per-component factors L with x = mean + L z: Cholesky factors (full, tied) or standard deviations."""
        t = self.covariance_type
        if t in ("diag", "spherical"):
            if (self.covariances <= 0).any():
                raise ParameterError("the GMM variances must be positive.")
            return np.sqrt(self.covariances)
        try:
            return np.linalg.cholesky(self.covariances)
        except np.linalg.LinAlgError as e:
            raise ParameterError("the GMM covariances are not positive definite.") from e

    # ---------------------------------------------------------------------------------------------- fit

    @classmethod
    def fit(cls, embeddings: np.ndarray, cfg: GMMConfig = GMMConfig(), embedder_id: str = "") -> FaceGMM:
        """Fit a Gaussian mixture to face embeddings, choosing the number of components by BIC (paper §3.1).

        Every number of components in [cfg.min_components, min(cfg.max_components, N)] is fitted with
        scikit-learn's GaussianMixture (random_state=cfg.seed, so the fit is reproducible); the lowest BIC
        wins.

        Args:
            embeddings: (N, D) face embeddings of the training set.
            cfg: the component range, covariance type, seed and EM iterations.
            embedder_id: recorded with the mixture so samples can be checked against a model.
        """
        from sklearn.mixture import GaussianMixture

        x = np.asarray(embeddings, dtype=np.float64)
        if x.ndim != 2 or x.shape[0] < 2 or x.shape[1] < 1:
            raise ParameterError(f"a GMM needs (N, D) embeddings with N >= 2, got shape {x.shape}.")
        if not np.isfinite(x).all():
            raise ParameterError("the embeddings to fit contain NaN or infinite values.")
        if cfg.covariance_type not in COVARIANCE_TYPES:
            raise ParameterError(
                f"covariance_type must be one of {', '.join(COVARIANCE_TYPES)}, got {cfg.covariance_type!r}."
            )
        n = x.shape[0]
        lo, hi = int(cfg.min_components), min(int(cfg.max_components), n)
        if cfg.min_components < 1 or cfg.max_components < cfg.min_components:
            raise ParameterError(
                f"need 1 <= min_components <= max_components, got {cfg.min_components} and {cfg.max_components}."
            )
        if lo > hi:
            raise ParameterError(f"{n} embeddings are too few for a mixture of at least {lo} components.")
        best: Any = None
        bic: dict[int, float] = {}
        for k in range(lo, hi + 1):
            gm = GaussianMixture(
                n_components=k,
                covariance_type=cfg.covariance_type,
                random_state=cfg.seed,
                max_iter=cfg.max_iter,
            ).fit(x)
            bic[k] = float(gm.bic(x))
            if best is None or bic[k] < bic[best.n_components]:
                best = gm
        return cls(
            best.weights_,
            best.means_,
            best.covariances_,
            cfg.covariance_type,
            embedder_id,
            cfg,
            n,
            bic,
            bool(best.converged_),
        )

    # ------------------------------------------------------------------------------------------- sample

    @property
    def n_components(self) -> int:
        return int(self.means.shape[0])

    @property
    def dim(self) -> int:
        return int(self.means.shape[1])

    def sample(self, n: int, seed: int) -> np.ndarray:
        """Draw N random face embeddings, a pure function of (parameters, seed) (paper §3.1).

        Two independent numpy streams are spawned from the seed: one picks components, one gives the normal
        noise. Both are consumed row by row, so sample(m, s) is the first m rows of sample(n, s) for m <= n:
        sample(1, seed=s) is the face `character new --seed s` keeps.

        Args:
            n: number of vectors (>= 0).
            seed: non-negative integer.

        Returns:
            (n, D) float32.
        """
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
            raise ParameterError(f"the number of samples must be a whole number >= 0, got {n!r}.")
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ParameterError(f"a seed must be a whole number >= 0, got {seed!r}.")
        pick, noise = (np.random.default_rng(s) for s in np.random.SeedSequence(int(seed)).spawn(2))
        u = pick.random(int(n))
        comp = np.minimum(np.searchsorted(np.cumsum(self.weights), u, side="right"), self.n_components - 1)
        z = noise.standard_normal((int(n), self.dim))
        t = self.covariance_type
        if t == "diag":
            x = self.means[comp] + z * self._scale[comp]
        elif t == "spherical":
            x = self.means[comp] + z * self._scale[comp][:, None]
        elif t == "tied":
            x = self.means[comp] + z @ self._scale.T
        else:
            x = self.means[comp] + np.einsum("nij,nj->ni", self._scale[comp], z)
        return x.astype(np.float32)

    def log_likelihood(self, x: np.ndarray) -> np.ndarray:
        """Log density of each row under the mixture.

        Args:
            x: (N, D) or (D,) embeddings.

        Returns:
            (N,) float64 (a scalar array for a single vector).
        """
        x = np.asarray(x, dtype=np.float64)
        single = x.ndim == 1
        x2 = np.atleast_2d(x)
        if x2.ndim != 2 or x2.shape[1] != self.dim:
            raise EmbedderMismatch(f"the mixture is {self.dim}-d, got vectors of shape {x.shape}.")
        d, t = self.dim, self.covariance_type
        diff = x2[:, None, :] - self.means[None, :, :]  # (N, K, D)
        if t in ("diag", "spherical"):
            var = self.covariances if t == "diag" else self.covariances[:, None] * np.ones(d)
            maha = np.einsum("nkd,kd->nk", diff**2, 1.0 / var)
            logdet = np.log(var).sum(axis=1)
        else:
            chol = self._scale if t == "full" else np.broadcast_to(self._scale, (self.n_components, d, d))
            sol = np.stack([np.linalg.solve(chol[k], diff[:, k, :].T).T for k in range(self.n_components)], 1)
            maha = (sol**2).sum(axis=2)
            logdet = 2.0 * np.log(np.diagonal(chol, axis1=1, axis2=2)).sum(axis=1)
        with np.errstate(divide="ignore"):
            logw = np.log(self.weights)
        comp = logw[None, :] - 0.5 * (maha + logdet[None, :] + d * math.log(2.0 * math.pi))
        top = comp.max(axis=1, keepdims=True)
        out = (top + np.log(np.exp(comp - top).sum(axis=1, keepdims=True)))[:, 0]
        return out[0] if single else out

    # ------------------------------------------------------------------------------------- identity/save

    @property
    def identity(self) -> str:
        """A short stable hash of the mixture (sha256 of covariance type and parameters, 12 hex digits)."""
        h = hashlib.sha256()
        h.update(f"{self.FORMAT}/{self.covariance_type}/{self.n_components}/{self.dim}".encode())
        for a in (self.weights, self.means, self.covariances):
            h.update(np.ascontiguousarray(a, dtype="<f8").tobytes())
        return h.hexdigest()[:12]

    def _meta(self) -> dict[str, Any]:
        return {
            "format": self.FORMAT,
            "format_version": self.FORMAT_VERSION,
            "identity": self.identity,
            "config": to_dict(self.config),
            "n_components": self.n_components,
            "covariance_type": self.covariance_type,
            "embedder_id": self.embedder_id,
            "dim": self.dim,
            "n_train": self.n_train,
            "bic": {str(k): v for k, v in sorted(self.bic.items())},
            "converged": self.converged,
        }

    def save(self, directory: str | os.PathLike[str]) -> Path:
        """Write gmm.safetensors (weights, means, covariances) and gmm.json (everything else) into DIRECTORY.

        Each file is written to a temporary name and moved into place. Returns the directory.
        """
        from safetensors.numpy import save_file

        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        tensors = {"weights": self.weights, "means": self.means, "covariances": self.covariances}
        meta_text = json.dumps(self._meta(), indent=2, sort_keys=True) + "\n"

        def write(name: str, writer: Any) -> None:
            fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=out)
            os.close(fd)
            try:
                writer(tmp)
                os.replace(tmp, out / name)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise

        write(self.TENSORS, lambda p: save_file(tensors, p, metadata={"format": self.FORMAT}))
        write(self.META, lambda p: Path(p).write_text(meta_text, encoding="utf-8"))
        return out

    @classmethod
    def load(cls, directory: str | os.PathLike[str]) -> FaceGMM:
        """Read a mixture written by save(); ModelError naming the file if it is missing or malformed.

        Raises:
            ModelError: a file is missing, corrupt, or the parameters do not match gmm.json.
            NewerFormat: gmm.json was written by a newer face0.
        """
        from safetensors import SafetensorError
        from safetensors.numpy import load_file

        d = Path(directory)
        meta_path, tensor_path = d / cls.META, d / cls.TENSORS
        for p in (meta_path, tensor_path):
            if not p.is_file():
                raise ModelError(f"the face GMM is incomplete: {p} is missing.")
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
            if not isinstance(meta, dict) or meta.get("format") != cls.FORMAT:
                raise ValueError(f"no format '{cls.FORMAT}'")
            version = int(meta["format_version"])
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise ModelError(f"{meta_path} is not a face0 GMM description ({e}).") from e
        if version > cls.FORMAT_VERSION:
            raise NewerFormat(
                f"{meta_path} was written by a newer face0 (format {version}, this face0 reads up to "
                f"{cls.FORMAT_VERSION}); upgrade face0."
            )
        try:
            tensors = load_file(str(tensor_path))
        except (OSError, SafetensorError, ValueError) as e:
            raise ModelError(f"{tensor_path} is corrupt ({e}).") from e
        try:
            known = {f.name for f in dataclasses.fields(GMMConfig)}
            cfg = GMMConfig(**{k: v for k, v in meta.get("config", {}).items() if k in known})
            gmm = cls(
                tensors["weights"],
                tensors["means"],
                tensors["covariances"],
                str(meta["covariance_type"]),
                str(meta.get("embedder_id", "")),
                cfg,
                int(meta.get("n_train", 0)),
                {int(k): float(v) for k, v in meta.get("bic", {}).items()},
                bool(meta.get("converged", True)),
            )
        except (KeyError, ValueError, TypeError, ParameterError) as e:
            raise ModelError(f"the face GMM in {d} is malformed ({e})") from e
        if "identity" in meta and meta["identity"] != gmm.identity:
            raise ModelError(f"{tensor_path} does not match {meta_path} (identity differs); refit or re-save the GMM.")
        return gmm

    def __repr__(self) -> str:
        return (
            f"FaceGMM(n_components={self.n_components}, dim={self.dim}, "
            f"covariance_type={self.covariance_type!r}, "
            f"embedder_id={self.embedder_id!r}, identity={self.identity!r})"
        )


__all__ = [
    "COVARIANCE_TYPES",
    "FaceGMM",
    "check_compatible",
    "direction_edit",
    "lerp",
    "parse_weighted",
    "weighted_mean",
]
