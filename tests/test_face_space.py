"""face_space: mixing arithmetic against hand-computed values, CLI weight parsing, the GMM (fit/sample/save)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from face0cli.config import GMMConfig
from face0cli.errors import EmbedderMismatch, ModelError, NewerFormat, ParameterError
from face0cli.library.face_space import (
    FaceGMM,
    check_compatible,
    direction_edit,
    lerp,
    parse_weighted,
    weighted_mean,
)
from face0cli.library.store import Character

REPO = Path(__file__).resolve().parents[1]


def ch(name: str, dim: int = 3, embedder: str = "emb/a") -> Character:
    return Character.new(name, np.arange(dim, dtype=np.float32), embedder, "photo", {})


# ------------------------------------------------------------------------------------------------- mixing


def test_check_compatible() -> None:
    assert check_compatible([ch("a"), ch("b"), ch("c")]) == ("emb/a", 3)
    with pytest.raises(EmbedderMismatch, match="'a'.*emb/a.*'x'.*emb/b"):
        check_compatible([ch("a"), ch("b"), ch("x", embedder="emb/b")])
    with pytest.raises(EmbedderMismatch, match="3-d.*'y'.*4-d"):
        check_compatible([ch("a"), ch("y", dim=4)])
    with pytest.raises(ParameterError):
        check_compatible([])


def test_weighted_mean_hand_values() -> None:
    v = np.array([[1.0, 2.0], [3.0, 6.0]], dtype=np.float32)
    out = weighted_mean(v, np.array([1.0, 3.0]))  # (1*[1,2] + 3*[3,6]) / 4
    assert out.dtype == np.float32 and out.shape == (2,)
    np.testing.assert_allclose(out, [2.5, 5.0])
    np.testing.assert_allclose(weighted_mean(v, [0.7, 0.3]), [1.6, 3.2], rtol=1e-6)
    np.testing.assert_allclose(weighted_mean(v, [7.0, 3.0]), [1.6, 3.2], rtol=1e-6)  # normalised by the sum
    np.testing.assert_allclose(weighted_mean(v, [2.0, -1.0]), [-1.0, -2.0])  # 2a - b: extrapolation
    np.testing.assert_allclose(weighted_mean(v[:1], [5.0]), [1.0, 2.0])


@pytest.mark.parametrize(
    "weights,needle",
    [
        ([1.0, float("nan")], "finite"),
        ([float("inf"), 1.0], "finite"),
        ([1.0, -1.0], "zero"),
        ([0.0, 0.0], "zero"),
    ],
)
def test_weighted_mean_bad_weights(weights: list[float], needle: str) -> None:
    with pytest.raises(ParameterError, match=needle):
        weighted_mean(np.ones((2, 3)), np.array(weights))


def test_weighted_mean_bad_shapes() -> None:
    with pytest.raises(ParameterError):
        weighted_mean(np.ones((2, 3)), [1.0, 2.0, 3.0])
    with pytest.raises(ParameterError):
        weighted_mean(np.ones(3), [1.0])
    with pytest.raises(ParameterError):
        weighted_mean(np.ones((0, 3)), [])


def test_lerp_hand_values() -> None:
    a, b = np.array([0.0, 10.0], np.float32), np.array([4.0, -10.0], np.float32)
    np.testing.assert_allclose(lerp(a, b, 0.25), [1.0, 5.0])
    np.testing.assert_array_equal(lerp(a, b, 0.0), a)
    np.testing.assert_array_equal(lerp(a, b, 1.0), b)
    np.testing.assert_allclose(lerp(a, b, 1.5), [6.0, -20.0])
    assert lerp(a, b, 0.5).dtype == np.float32
    for t in (float("nan"), float("inf")):
        with pytest.raises(ParameterError, match="finite"):
            lerp(a, b, t)
    with pytest.raises(EmbedderMismatch):
        lerp(a, np.ones(3), 0.5)


def test_direction_edit_hand_values() -> None:
    base, towards, origin = np.array([1.0, 1.0]), np.array([3.0, 5.0]), np.array([2.0, 2.0])
    np.testing.assert_allclose(direction_edit(base, towards, 0.5, origin), [1.5, 2.5])  # base + .5*([3,5]-[2,2])
    np.testing.assert_allclose(direction_edit(base, towards, 0.5), [2.0, 3.0])  # base + .5*([3,5]-[1,1])
    np.testing.assert_allclose(direction_edit(base, towards, -1.0, origin), [0.0, -2.0])
    np.testing.assert_array_equal(direction_edit(base, towards, 0.0, origin), base)
    with pytest.raises(ParameterError, match="finite"):
        direction_edit(base, towards, float("inf"))
    with pytest.raises(EmbedderMismatch):
        direction_edit(base, towards, 0.5, np.ones(3))


def test_parse_weighted() -> None:
    assert parse_weighted(["alice=0.7", "bob=0.3", "carl"]) == [("alice", 0.7), ("bob", 0.3), ("carl", 1.0)]
    assert parse_weighted(["x=-2", "y=1e-3", " z = 4 "]) == [("x", -2.0), ("y", 0.001), ("z", 4.0)]
    assert parse_weighted([]) == []


@pytest.mark.parametrize(
    "spec,needle",
    [
        ("=0.3", "name"),
        ("alice=", "not a number"),
        ("alice=abc", "not a number"),
        ("alice=1=2", "not a number"),
        ("alice=nan", "finite"),
        ("alice=inf", "finite"),
        ("alice=-inf", "finite"),
        ("", "name"),
    ],
)
def test_parse_weighted_bad(spec: str, needle: str) -> None:
    with pytest.raises(ParameterError, match=needle):
        parse_weighted(["bob=1", spec])


def test_parse_weighted_duplicate() -> None:
    with pytest.raises(ParameterError, match="twice"):
        parse_weighted(["alice=0.5", "bob", "alice=0.5"])


# ---------------------------------------------------------------------------------------------------- GMM


def clusters(k: int = 3, per: int = 150, dim: int = 6, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """K clearly separated spherical clusters: centres 10 apart, standard deviation 0.5."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((k, dim)) * 10.0
    x = np.concatenate([c + 0.5 * rng.standard_normal((per, dim)) for c in centres])
    return x.astype(np.float32), centres


@pytest.fixture(scope="module")
def gmm() -> FaceGMM:
    x, _ = clusters()
    return FaceGMM.fit(x, GMMConfig(min_components=1, max_components=6, seed=0), embedder_id="emb/test")


def test_bic_picks_the_true_number_of_components(gmm: FaceGMM) -> None:
    assert gmm.n_components == 3 and gmm.dim == 6 and gmm.n_train == 450
    assert sorted(gmm.bic) == [1, 2, 3, 4, 5, 6]
    assert min(gmm.bic, key=gmm.bic.get) == 3
    assert gmm.embedder_id == "emb/test" and gmm.converged


@pytest.mark.parametrize("k", [1, 5])
def test_bic_on_other_cluster_counts(k: int) -> None:
    x, centres = clusters(k=k, per=80, dim=4, seed=k)
    g = FaceGMM.fit(x, GMMConfig(max_components=6))
    assert g.n_components == k
    # each true centre has a fitted mean next to it
    dist = np.linalg.norm(centres[:, None, :] - g.means[None, :, :], axis=2)
    assert dist.min(axis=1).max() < 0.5


def test_fit_caps_components_by_n_and_validates() -> None:
    x = np.random.default_rng(0).standard_normal((3, 2))
    assert sorted(FaceGMM.fit(x, GMMConfig(max_components=8)).bic) == [1, 2, 3]
    with pytest.raises(ParameterError, match="too few"):
        FaceGMM.fit(x, GMMConfig(min_components=4, max_components=8))
    with pytest.raises(ParameterError):
        FaceGMM.fit(x, GMMConfig(min_components=3, max_components=2))
    with pytest.raises(ParameterError):
        FaceGMM.fit(np.array([[1.0, np.nan], [0.0, 1.0]]))
    with pytest.raises(ParameterError):
        FaceGMM.fit(np.ones(5))
    with pytest.raises(ParameterError, match="covariance_type"):
        FaceGMM.fit(x, GMMConfig(covariance_type="banana"))


def test_fit_is_reproducible_from_the_seed() -> None:
    x, _ = clusters(k=4, per=60, dim=3, seed=7)
    a = FaceGMM.fit(x, GMMConfig(max_components=5, seed=11))
    b = FaceGMM.fit(x, GMMConfig(max_components=5, seed=11))
    assert a.identity == b.identity and a.bic == b.bic


def test_sample_reproducible_and_seed_dependent(gmm: FaceGMM) -> None:
    s = gmm.sample(10, seed=42)
    assert s.shape == (10, 6) and s.dtype == np.float32
    np.testing.assert_array_equal(s, gmm.sample(10, seed=42))
    assert not np.allclose(s, gmm.sample(10, seed=43))
    one = gmm.sample(1, seed=5)
    gmm.sample(1000, seed=99)  # drawing other samples in between changes nothing
    np.testing.assert_array_equal(gmm.sample(1, seed=5), one)
    np.testing.assert_array_equal(gmm.sample(50, seed=5)[:1], one)  # more samples extend, never reshuffle
    np.testing.assert_array_equal(gmm.sample(50, seed=5)[:10], gmm.sample(10, seed=5))
    assert gmm.sample(0, seed=1).shape == (0, 6)


@pytest.mark.parametrize("n,seed", [(-1, 0), (1.5, 0), (1, -1), (1, 2.5), (True, 0)])
def test_sample_bad_arguments(gmm: FaceGMM, n, seed) -> None:
    with pytest.raises(ParameterError):
        gmm.sample(n, seed)


def test_samples_follow_the_mixture(gmm: FaceGMM) -> None:
    """Component frequencies match the weights, and per-component mean and variance match the parameters."""
    x = gmm.sample(20000, seed=0).astype(np.float64)
    nearest = np.argmin(np.linalg.norm(x[:, None, :] - gmm.means[None], axis=2), axis=1)
    freq = np.bincount(nearest, minlength=gmm.n_components) / len(x)
    np.testing.assert_allclose(freq, gmm.weights, atol=0.015)
    for k in range(gmm.n_components):
        xk = x[nearest == k]
        np.testing.assert_allclose(xk.mean(0), gmm.means[k], atol=0.05)
        np.testing.assert_allclose(xk.var(0), gmm.covariances[k], rtol=0.1)


@pytest.mark.parametrize("cov", ["full", "tied", "diag", "spherical"])
def test_every_covariance_type_matches_sklearn(cov: str) -> None:
    """log_likelihood equals scikit-learn's score_samples for one fit; samples have the fitted covariance."""
    from sklearn.mixture import GaussianMixture

    x, _ = clusters(k=2, per=200, dim=3, seed=3)
    x = x.astype(np.float64) @ np.array([[1.0, 0.5, 0.0], [0.0, 1.0, 0.3], [0.0, 0.0, 1.0]])  # correlated dims
    cfg = GMMConfig(min_components=2, max_components=2, covariance_type=cov, seed=1)
    g = FaceGMM.fit(x, cfg)
    ref = GaussianMixture(2, covariance_type=cov, random_state=1, max_iter=cfg.max_iter).fit(x)
    np.testing.assert_allclose(g.log_likelihood(x[:50]), ref.score_samples(x[:50]), rtol=1e-9, atol=1e-9)
    assert np.ndim(g.log_likelihood(x[0])) == 0
    s = g.sample(40000, seed=2).astype(np.float64)
    nearest = np.argmin(np.linalg.norm(s[:, None, :] - g.means[None], axis=2), axis=1)
    if cov == "full":
        full = g.covariances
    elif cov == "tied":
        full = np.stack([g.covariances] * 2)
    elif cov == "diag":
        full = np.stack([np.diag(c) for c in g.covariances])
    else:
        full = np.stack([np.eye(3) * c for c in g.covariances])
    for k in range(2):
        np.testing.assert_allclose(np.cov(s[nearest == k].T), full[k], atol=0.03)
    with pytest.raises(EmbedderMismatch):
        g.log_likelihood(np.ones((2, 4)))


def test_save_load_round_trip(gmm: FaceGMM, tmp_path: Path) -> None:
    d = tmp_path / "model" / "gmm"
    assert gmm.save(d) == d
    assert sorted(p.name for p in d.iterdir()) == ["gmm.json", "gmm.safetensors"]
    meta = json.loads((d / "gmm.json").read_text())
    assert meta["format_version"] == 1 and meta["n_components"] == 3 and meta["dim"] == 6
    assert meta["embedder_id"] == "emb/test" and meta["n_train"] == 450 and meta["covariance_type"] == "diag"
    assert meta["config"]["max_components"] == 6 and set(meta["bic"]) == {"1", "2", "3", "4", "5", "6"}
    from safetensors.numpy import load_file

    assert sorted(load_file(str(d / "gmm.safetensors"))) == ["covariances", "means", "weights"]

    back = FaceGMM.load(d)
    assert back.identity == gmm.identity and len(gmm.identity) == 12
    int(gmm.identity, 16)
    np.testing.assert_array_equal(back.sample(100, seed=3), gmm.sample(100, seed=3))
    assert back.bic == gmm.bic and back.config == gmm.config and back.n_train == 450
    assert back.embedder_id == "emb/test" and back.covariance_type == "diag"
    np.testing.assert_allclose(back.log_likelihood(gmm.means), gmm.log_likelihood(gmm.means))


def test_constructor_validates_and_copies() -> None:
    w, m, c = np.array([0.5, 0.5]), np.zeros((2, 3)), np.ones((2, 3))
    g = FaceGMM(w, m, c, "diag")
    w[0] = 0.9  # the caller's arrays stay theirs and writable; the model keeps its own frozen copy
    assert g.weights[0] == 0.5 and not g.weights.flags.writeable
    for bad in (
        dict(covariance_type="banana"),
        dict(weights=np.array([0.5, 0.6])),
        dict(weights=np.array([1.5, -0.5])),
        dict(covariances=np.ones((2, 4))),
        dict(covariances=np.zeros((2, 3))),
        dict(means=np.full((2, 3), np.nan)),
        dict(covariances=-np.ones((3, 3)), covariance_type="tied"),
    ):
        args = dict(weights=w * 0 + 0.5, means=m, covariances=c, covariance_type="diag") | bad
        with pytest.raises(ParameterError):
            FaceGMM(**args)


def test_identity_depends_on_parameters(gmm: FaceGMM) -> None:
    other = FaceGMM(gmm.weights, gmm.means + 1e-9, gmm.covariances, "diag")
    assert other.identity != gmm.identity
    same = FaceGMM(gmm.weights.copy(), gmm.means.copy(), gmm.covariances.copy(), "diag", embedder_id="x")
    assert same.identity == gmm.identity


def test_load_errors(gmm: FaceGMM, tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="missing"):
        FaceGMM.load(tmp_path / "nowhere")
    d = gmm.save(tmp_path / "g")
    (d / "gmm.safetensors").unlink()
    with pytest.raises(ModelError, match="gmm.safetensors"):
        FaceGMM.load(d)

    d = gmm.save(tmp_path / "corrupt")
    (d / "gmm.safetensors").write_bytes(b"\x00" * 64)
    with pytest.raises(ModelError, match="corrupt"):
        FaceGMM.load(d)

    d = gmm.save(tmp_path / "badjson")
    (d / "gmm.json").write_text("{not json")
    with pytest.raises(ModelError, match="gmm.json"):
        FaceGMM.load(d)

    d = gmm.save(tmp_path / "newer")
    meta = json.loads((d / "gmm.json").read_text())
    (d / "gmm.json").write_text(json.dumps(meta | {"format_version": 2}))
    with pytest.raises(NewerFormat, match="newer face0"):
        FaceGMM.load(d)

    d = gmm.save(tmp_path / "mixed")
    FaceGMM(gmm.weights, gmm.means * 2, gmm.covariances, "diag").save(tmp_path / "other")
    (d / "gmm.safetensors").write_bytes((tmp_path / "other" / "gmm.safetensors").read_bytes())
    with pytest.raises(ModelError, match="identity"):
        FaceGMM.load(d)

    d = gmm.save(tmp_path / "shape")
    meta = json.loads((d / "gmm.json").read_text())
    (d / "gmm.json").write_text(json.dumps(meta | {"covariance_type": "full"}))
    with pytest.raises(ModelError, match="malformed"):
        FaceGMM.load(d)


@pytest.mark.slow
def test_load_and_sample_need_neither_sklearn_nor_torch(gmm: FaceGMM, tmp_path: Path) -> None:
    d = gmm.save(tmp_path / "g")
    code = (
        "import sys\n"
        "from face0cli.library.face_space import FaceGMM\n"
        f"g = FaceGMM.load({str(d)!r})\n"
        "g.sample(3, seed=1)\n"
        "print(sorted(m for m in ('torch', 'sklearn') if m in sys.modules))\n"
    )
    env = {"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"}
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == "[]"
