"""The constants each compressor states: unbiasedness, variance ω, contraction β."""

from __future__ import annotations

import math

import pytest
import torch

from lit_commeff.compression import build

UNBIASED = [
    ("randk", {"ratio": 0.1}),
    ("randk", {"k": 1}),
    ("randk", {"ratio": 0.3, "shared_indices": True}),
    ("qsgd", {"s": 1}),
    ("qsgd", {"s": 4, "bucket_size": 8}),
    ("qsgd", {"s": 300}),
    ("identity", {}),
]
BIASED = [
    ("topk", {"ratio": 0.1}),
    ("topk", {"k": 1}),
    ("sign", {}),
    ("fp16", {}),
    ("bf16", {}),
]
DRAWS = 3000


def _vectors(d: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(11)
    one_hot = torch.zeros(d, dtype=torch.float64)
    one_hot[3] = 2.5
    return {
        "gaussian": torch.randn(d, generator=g, dtype=torch.float64),
        "heavy_tailed": torch.randn(d, generator=g, dtype=torch.float64)
        * torch.exp(2 * torch.randn(d, generator=g, dtype=torch.float64)),
        "one_hot": one_hot,
        "constant": torch.full((d,), -0.7, dtype=torch.float64),
    }


def _draws(name, options, x):
    c = build(name, **options)
    return c, torch.stack([c.roundtrip(x, step=s, worker=1) for s in range(DRAWS)])


@pytest.mark.parametrize(("name", "options"), UNBIASED, ids=lambda v: str(v))
@pytest.mark.parametrize("kind", ["gaussian", "heavy_tailed", "one_hot"])
def test_unbiased_mean_within_confidence_bound(name, options, kind):
    d = 48
    x = _vectors(d)[kind]
    c, q = _draws(name, options, x)
    assert c.unbiased
    mean = q.mean(dim=0)
    if kind != "heavy_tailed":
        # Per coordinate: |mean - x| <= 5 standard errors (two-sided p ~ 6e-7 per coordinate). Not for
        # heavy tails: a tiny coordinate quantised up with probability 1e-3 may never move in 3000
        # draws, and a sample standard deviation of 0 says nothing.
        stderr = q.std(dim=0) / math.sqrt(DRAWS)
        assert ((mean - x).abs() <= 5 * stderr + 1e-12).all()
    # Whole vector: E||mean - x||^2 = Var / N <= omega ||x||^2 / N; allow 10x (Markov: P(fail) <= 10%,
    # in practice the sum over coordinates concentrates). A biased variant (e.g. RandK without its
    # d/K scaling, error (1 - K/d)^2 ||x||^2) is orders of magnitude above this.
    assert float((mean - x).square().sum()) <= 10 * c.omega(d) * float(x.square().sum()) / DRAWS + 1e-20


@pytest.mark.parametrize(("name", "options"), UNBIASED, ids=lambda v: str(v))
@pytest.mark.parametrize("kind", ["gaussian", "heavy_tailed", "one_hot", "constant"])
def test_empirical_variance_below_omega(name, options, kind):
    d = 48
    x = _vectors(d)[kind]
    c, q = _draws(name, options, x)
    errors = (q - x).square().sum(dim=1)
    # Upper 5-standard-error confidence bound on the mean error must not be below omega ||x||^2
    # (RandK meets the bound with equality in expectation, so no fixed slack would be safe).
    lower = float(errors.mean() - 5 * errors.std() / math.sqrt(DRAWS))
    assert lower <= c.omega(d) * float(x.square().sum()) * (1 + 1e-9) + 1e-20


def test_randk_variance_is_tight():
    # For RandK the bound is attained: E||Q(x) - x||^2 = (d/K - 1) ||x||^2 exactly.
    d = 48
    x = _vectors(d)["gaussian"]
    c, q = _draws("randk", {"k": 6}, x)
    variance = float((q - x).square().sum(dim=1).mean())
    assert variance == pytest.approx(c.omega(d) * float(x.square().sum()), rel=0.05)


def test_unscaled_randk_would_fail_the_unbiasedness_check():
    # Guard that the check above can fail: drop the d/K scale and the mean is off by (1 - K/d).
    d = 48
    x = _vectors(d)["gaussian"]
    c, q = _draws("randk", {"ratio": 0.1}, x)
    k = c.k_for(d)
    mean = (q * (k / d)).mean(dim=0)
    assert float((mean - x).square().sum()) > 10 * c.omega(d) * float(x.square().sum()) / DRAWS


@pytest.mark.parametrize(("name", "options"), BIASED, ids=lambda v: str(v))
@pytest.mark.parametrize("kind", ["gaussian", "heavy_tailed", "one_hot", "constant"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_biased_contraction_bound(name, options, kind, dtype):
    d = 300
    x = _vectors(d)[kind].to(dtype)
    c = build(name, **options)
    assert not c.unbiased
    err = float((c.roundtrip(x).double() - x.double()).square().sum())
    bound = (1 - 1 / c.beta(d)) * float(x.double().square().sum())
    assert err <= bound * (1 + 1e-6) + 1e-30


def test_sign_contraction_is_exact_formula():
    x = _vectors(100)["heavy_tailed"]
    err = float((build("sign").roundtrip(x) - x).square().sum())
    expected = float(x.square().sum() - x.abs().sum() ** 2 / x.numel())
    assert err == pytest.approx(expected, rel=1e-6)


def test_powersgd_contraction_after_warm_up():
    # Gradient-like input: a slowly drifting matrix with decaying spectrum.
    g = torch.Generator().manual_seed(5)
    u, _ = torch.linalg.qr(torch.randn(80, 80, generator=g, dtype=torch.float64))
    v, _ = torch.linalg.qr(torch.randn(60, 60, generator=g, dtype=torch.float64))
    spectrum = torch.tensor([0.8**i for i in range(60)], dtype=torch.float64)
    base = u[:, :60] @ torch.diag(spectrum) @ v.T
    c = build("powersgd", rank=4)
    for step in range(6):
        a = base + 1e-3 * torch.randn(80, 60, generator=g, dtype=torch.float64)
        err = float((c.roundtrip(a, step=step) - a).square().sum())
        assert err <= float(a.square().sum())  # non-expansive on every message
    assert err <= (1 - 1 / c.beta((80, 60))) * float(a.square().sum())
    # and close to the best rank-4 error once warm
    s = torch.linalg.svdvals(a)
    assert err <= 1.05 * float(s[4:].square().sum())
