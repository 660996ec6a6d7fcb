"""Gated DANE's shared Adam second moment (after Mime): Adam's own step on ĝ, linear in g within a round."""

from __future__ import annotations

import pytest
import torch

from lit_commeff.algorithms.preconditioner import SharedAdamRule
from lit_commeff.options import GatedDANEOptions, OptionError

OPTIMIZERS = {
    "adam": lambda p: torch.optim.Adam(p, lr=0.05, betas=(0.8, 0.99), eps=1e-6),
    "adam_l2": lambda p: torch.optim.Adam(p, lr=0.05, weight_decay=0.1),
    "adamw": lambda p: torch.optim.AdamW(p, lr=0.05, weight_decay=0.1),
}


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_one_step_rounds_along_ghat_are_the_optimizers_own_steps(name):
    """Rounds of one step whose gradient is ĝ (one rank): the shared rule walks exactly where torch's walks."""
    torch.manual_seed(0)
    x = torch.nn.Parameter(torch.randn(7, dtype=torch.float64))
    optimizer = OPTIMIZERS[name]([x])
    rule = SharedAdamRule.of(optimizer)
    assert rule is not None
    y = x.detach().clone()
    m = u = v = None
    for t in range(1, 9):
        ghat = torch.randn(7, dtype=torch.float64)
        v = rule.observe(v, ghat.square(), ghat, y, steps=1)
        y, m, u = rule.step(y, ghat, lr=optimizer.param_groups[0]["lr"], m=m, u=u, v=v, t=t)
        x.grad = ghat.clone()
        optimizer.step()
        torch.testing.assert_close(y, x.detach(), rtol=1e-12, atol=1e-12, msg=f"{name}, step {t}")


def test_corrections_cancel_under_the_shared_second_moment_and_not_under_local_adam():
    """Two ranks take 3 steps along a + c and a − c: with the shared v the mean iterate is that of steps along a
    (exactly, where v is at least Adam's floor); each rank's own Adam normalises c away."""
    torch.manual_seed(1)
    x0 = torch.randn(50, dtype=torch.float64)
    a, c = torch.randn(50, dtype=torch.float64), 0.3 * torch.randn(50, dtype=torch.float64)
    rule = SharedAdamRule.of(torch.optim.Adam([torch.nn.Parameter(x0.clone())], lr=0.1))
    v = rule.observe(None, a.square() + 1.0, a, x0, steps=20)

    def shared(g):
        y, m, u = x0, None, None
        for t in range(1, 4):
            y, m, u = rule.step(y, g, lr=0.1, m=m, u=u, v=v, t=20 + t)
        return y

    torch.testing.assert_close((shared(a + c) + shared(a - c)) / 2, shared(a))

    def local_adam(g):
        x = torch.nn.Parameter(x0.clone())
        opt = torch.optim.Adam([x], lr=0.1)
        for _ in range(3):
            x.grad = g.clone()
            opt.step()
        return x.detach()

    assert torch.linalg.vector_norm((local_adam(a + c) + local_adam(a - c)) / 2 - local_adam(a)) > 0.05


def test_no_step_is_larger_than_local_adams_where_the_shared_second_moment_is_small():
    """A coordinate silent at the anchors (v = 0), active later with a large gradient, then a small one: the
    rank's own second moment bounds the steps as in Adam, not lr/ε or the momentum over a small g."""
    rule = SharedAdamRule.of(torch.optim.Adam([torch.nn.Parameter(torch.zeros(2))], lr=0.1))
    v = rule.observe(None, torch.tensor([1.0, 0.0]), torch.tensor([1.0, 0.0]), torch.zeros(2), steps=10)
    x = torch.nn.Parameter(torch.zeros(2))
    adam = torch.optim.Adam([x], lr=0.1)
    y, m, u = torch.zeros(2), None, None
    for t, g in enumerate([torch.tensor([1.0, 5.0]), torch.tensor([1.0, 1e-4]), torch.tensor([1.0, 1e-4])], start=1):
        previous = y
        y, m, u = rule.step(y, g, lr=0.1, m=m, u=u, v=v, t=t)
        before = x.detach().clone()
        x.grad = g
        adam.step()
        assert float((y - previous)[1].abs()) <= float((x.detach() - before)[1].abs()) + 1e-7, t


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda p: torch.optim.RMSprop(p), "follows torch.optim.Adam and AdamW .* not RMSprop"),
        (lambda p: torch.optim.Adam(p, amsgrad=True), "amsgrad"),
        (
            lambda p: torch.optim.Adam([{"params": p[:1], "lr": 0.1}, {"params": p[1:], "lr": 0.2}]),
            "parameter groups of Adam differ",
        ),
    ],
)
def test_optimizers_it_cannot_follow_are_named_with_the_fix(make, match):
    params = [torch.nn.Parameter(torch.zeros(2)), torch.nn.Parameter(torch.zeros(3))]
    with pytest.raises(ValueError, match=match) as info:
        SharedAdamRule.of(make(params))
    assert "preconditioner='local'" in str(info.value)
    assert SharedAdamRule.of(torch.optim.SGD(params, lr=0.1, momentum=0.9)) is None  # linear: the user's SGD steps


def test_the_option_is_checked_and_needs_an_optimizer():
    with pytest.raises(OptionError) as info:
        GatedDANEOptions(preconditioner="global")
    assert info.value.field == "preconditioner"

    from lit_commeff import sim
    from lit_commeff.problems import synthetic_ridge

    problem = synthetic_ridge(workers=4, dim=6, similarity=0.3)
    with pytest.raises(ValueError, match="plain gradient steps"):
        sim.run(problem, "gated_dane", compressor=("randk", {"k": 2}), preconditioner="shared", cc3_budget=5)
