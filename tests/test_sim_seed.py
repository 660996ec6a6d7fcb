"""``sim.run(seed=...)`` drives every random choice, the compressor's draws included (issue 20)."""

from __future__ import annotations

import pytest

from lit_commeff import sim
from lit_commeff.compression import build, randk
from lit_commeff.compression.registry import accepts
from lit_commeff.problems import synthetic_ridge

# DIANA has no randomness of its own (only RandK's draws); LoCoDL (epoch lengths) and OLGA (epoch lengths) do.
METHODS = {
    "diana": {},
    "locodl": {"p": 0.5},
    "olga": {"preset": "similarity"},
}


@pytest.fixture(scope="module")
def problem():
    return synthetic_ridge(workers=6, n=30, dim=12, similarity=0.3, lam=0.1, seed=3)


def _run(problem, name, seed, compressor=("randk", {"k": 2}), rounds=40):
    return sim.run(problem, name, compressor=compressor, rounds=rounds, seed=seed, **METHODS[name])


@pytest.fixture
def base_seeds(monkeypatch):
    """The base seeds RandK derives its index sets from, as the run draws them."""
    seen: set[int] = set()
    derive = randk.derive_seeds

    def spy(seed, step, workers, key="", stream=0, device="cpu"):
        seen.add(seed)
        return derive(seed, step, workers, key, stream, device)

    monkeypatch.setattr(randk, "derive_seeds", spy)
    return seen


@pytest.mark.parametrize("name", sorted(METHODS))
@pytest.mark.parametrize("seed", [1, 2])
def test_run_seed_reaches_the_compressor_draws(problem, base_seeds, name, seed):
    history = _run(problem, name, seed)
    assert base_seeds == {seed}
    assert f"seed={seed}" in history.meta["compressor"]


@pytest.mark.parametrize("name", sorted(METHODS))
def test_two_seeds_two_histories_same_seed_same_history(problem, name):
    one, again, two = _run(problem, name, 1), _run(problem, name, 1), _run(problem, name, 2)
    assert one.rows == again.rows
    assert one.rows != two.rows
    # The run's seed is the compressor's: naming it explicitly changes nothing.
    assert _run(problem, name, 2, compressor=("randk", {"k": 2, "seed": 2})).rows == two.rows


@pytest.mark.parametrize("name", sorted(METHODS))
def test_explicit_compressor_seed_wins(problem, base_seeds, name):
    pinned = _run(problem, name, 1, compressor=("randk", {"k": 2, "seed": 5}))
    assert base_seeds == {5}
    assert pinned.rows != _run(problem, name, 1).rows
    if name == "diana":  # no randomness of its own: the compressor's seed alone fixes the run
        assert pinned.rows == _run(problem, name, 5).rows


def test_instance_keeps_its_seed_and_warns_when_it_differs(problem, base_seeds):
    with pytest.warns(UserWarning, match=r"compressor: the instance .* keeps its own seed 0, not sim.run's seed=3"):
        history = _run(problem, "diana", 3, compressor=build("randk", k=2))
    assert base_seeds == {0}
    assert history.rows == _run(problem, "diana", 0).rows
    base_seeds.clear()
    _run(problem, "diana", 3, compressor=build("randk", k=2, seed=3))  # same seed: no warning (errors would raise)
    assert base_seeds == {3}


def test_seed_zero_keeps_the_default_compressor_seed(problem):
    """Seed 0 (every committed result) draws what it drew before the fix."""
    for name in METHODS:
        assert _run(problem, name, 0).rows == _run(problem, name, 0, compressor=build("randk", k=2)).rows


def test_qsgd_draws_follow_the_run_seed(problem):
    kw = {"compressor": ("qsgd", {"s": 2}), "rounds": 30, "preset": "similarity"}
    one, two = sim.run(problem, "olga", seed=1, **kw), sim.run(problem, "olga", seed=2, **kw)
    assert one.rows != two.rows
    assert "seed=2" in two.meta["compressor"]
    pinned = sim.run(problem, "olga", seed=2, **{**kw, "compressor": ("qsgd", {"s": 2, "seed": 2})})
    assert pinned.rows == two.rows


def test_named_dense_compressor_option_gets_the_run_seed(problem):
    """OLGA's ``dense_compressor`` given by name is built with the run's seed unless its options set one."""
    kw = {"compressor": ("randk", {"k": 2}), "rounds": 30, "preset": "similarity", "dense_compressor": "lowrank"}
    run = sim.run(problem, "olga", seed=1, dense_compressor_options={"reshape": "square"}, **kw)
    same = sim.run(problem, "olga", seed=1, dense_compressor_options={"reshape": "square", "seed": 1}, **kw)
    pinned = sim.run(problem, "olga", seed=1, dense_compressor_options={"reshape": "square", "seed": 0}, **kw)
    assert run.rows == same.rows
    assert run.rows != pinned.rows


def test_resolve_compressor_seed_rules():
    assert sim.resolve_compressor("qsgd", seed=4).seed == 4
    assert sim.resolve_compressor(("randk", {"k": 1}), seed=4).seed == 4
    assert sim.resolve_compressor(("randk", {"k": 1, "seed": 9}), seed=4).seed == 9
    assert sim.resolve_compressor(("randk", {"k": 1})).seed == 0  # no seed given: the compressor's default
    assert sim.resolve_compressor(("topk", {"k": 1}), seed=4) is not None  # takes no seed: built without one
    assert accepts("randk", "seed") and accepts("qsgd", "seed") and accepts("rand-k", "seed")
    assert not accepts("topk", "seed")
    with pytest.raises(ValueError, match="unknown name 'nope'"):
        accepts("nope", "seed")
