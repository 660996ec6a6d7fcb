"""OLGA, EF-OLGA and the baselines on small synthetic ridge problems (simulator transport)."""

from __future__ import annotations

import math

import pytest
import torch

from lit_commeff import sim
from lit_commeff.algorithms import EFOLGA, OLGA, AccExtraGradient, ProblemOracle
from lit_commeff.compression import build
from lit_commeff.problems import synthetic_ridge
from lit_commeff.transport import SimulatorTransport


@pytest.fixture(scope="module")
def problem():
    # M = 8, d = 10, strongly convex, similar shards (delta well below L).
    p = synthetic_ridge(workers=8, n=40, dim=10, similarity=0.3, lam=0.1, seed=3)
    assert 0 < p.delta < p.L
    return p


CONVERGENCE = [
    ("gd", {}, 3000),
    ("acc_extragradient", {}, 400),
    ("accsvrs", {}, 3000),
    ("olga", {"compressor": ("randk", {"k": 2}), "preset": "theory"}, 3000),
    ("olga", {"compressor": ("randk", {"k": 2}), "preset": "similarity"}, 400),
    ("olga", {"compressor": ("randk", {"k": 2}), "preset": "auto"}, 400),
    ("olga", {"compressor": ("qsgd", {"s": 2}), "preset": "similarity"}, 400),
    ("ef_olga", {"compressor": ("topk", {"k": 2}), "preset": "similarity"}, 600),
    ("ef_olga", {"compressor": ("topk", {"k": 5}), "preset": "theory"}, 6000),
    ("diana", {"compressor": ("randk", {"k": 2})}, 3000),
    ("ef21", {"compressor": ("topk", {"k": 2})}, 6000),
]


@pytest.mark.parametrize(("name", "options", "budget"), CONVERGENCE, ids=lambda v: str(v))
def test_converges_linearly_to_high_accuracy(problem, name, options, budget):
    history = sim.run(problem, name, cc3_budget=budget, tol=1e-10, seed=1, **options)
    assert history.final["rel_subopt"] <= 1e-10, (name, history.final, history.meta["hyperparameters"])
    # Linear rate: the last three decades cost about what the three before them did (an O(1/k) method
    # would pay 1000x more for them). Slack covers random epoch lengths.
    c4, c7, c10 = (history.cc3_to(eps) for eps in (1e-4, 1e-7, 1e-10))
    assert c10 - c7 <= 3 * (c7 - c4) + 10
    assert history.final["grad_norm_sq"] < 1e-8


def _olga(problem, compressor, cls=OLGA, **kw):
    transport = SimulatorTransport(num_workers=problem.num_workers, dim=problem.dim)
    oracle = ProblemOracle(problem, transport.workers)
    x0 = torch.zeros(problem.dim, dtype=torch.float64)
    return cls(
        transport=transport, oracle=oracle, x0=x0, compressor=compressor, mu=problem.mu, delta=problem.delta, **kw
    )


def test_olga_with_identity_is_full_participation_gradient_sliding(problem):
    """Reduction: with Q = identity, mean ĝ − ∇f_1(x_0) + ∇f(x_0) = ∇(f − f_1)(x_k), so every inner step is
    x_{k+1} = prox_θ(x_k, ∇(f − f_1)(x_k)) (AccSVRS's inner step without client sampling), and each outer
    step is the Katyusha-X update with full gradients. We replay both from the problem and compare."""
    alg = _olga(problem, build("identity"), p=0.3)
    hub = 0
    while alg.outer < 4:
        phase, xk, y_prev, z_prev = alg.phase, alg.xk.clone(), alg.y.clone(), alg.z.clone()
        alg.step()
        if phase == "inner":
            grad_diff = problem.grad(xk) - problem.worker_grads(xk, torch.tensor([hub]))[0]
            expected = problem.hub_prox(xk, grad_diff, alg.theta)
            assert torch.allclose(alg.xk, expected, atol=1e-12)
        if phase == "y":
            x, y = alg.x, alg.y

            def d1f(v):
                return problem.worker_grads(v, torch.tensor([hub]))[0] - problem.grad(v)

            big_g = alg.p * (d1f(x) - d1f(y) + (x - y) / alg.theta)
            am = alg.alpha * problem.mu
            assert torch.allclose(alg.z, (z_prev + am * y - alg.alpha * big_g) / (1 + am), atol=1e-12)
            assert not torch.equal(y, y_prev)


@pytest.mark.parametrize("cls", [OLGA, EFOLGA])
def test_ledger_counts_one_outer_iteration(problem, cls):
    m, d = problem.num_workers, problem.dim
    compressor = build("randk", k=3) if cls is OLGA else build("topk", k=3)
    alg = _olga(problem, compressor, cls=cls, p=0.25, seed=5)
    ledger = alg.transport.ledger
    alg.step()  # anchor round: draws N
    n = alg.inner_n
    while alg.outer < 1:
        alg.step()
    dense_rounds = 3 if cls is EFOLGA else 2
    assert ledger.cc1 == dense_rounds + n
    assert ledger.cc2 == (dense_rounds + n) * (m - 1)
    dense_bytes = d * 8
    message = compressor.wire_nbytes(d, torch.float64)
    assert ledger.uplink_bytes == (m - 1) * (dense_rounds * dense_bytes + n * message)
    assert ledger.cc3 == pytest.approx(dense_rounds + n * message / dense_bytes)
    # Downlink per worker: (x, ∇f_1(x)), then (x_k, ∇f_1(x_k)) for k = 1..N-1, then y.
    assert ledger.downlink_bytes_per_worker()[1] == (2 + 2 * (n - 1) + 1) * dense_bytes
    assert ledger.gamma("compressed") == pytest.approx(dense_bytes / message)


def test_same_seed_same_run_different_seed_different_run(problem):
    kw = {"compressor": ("randk", {"k": 2}), "preset": "similarity", "rounds": 60}
    a = sim.run(problem, "olga", seed=7, **kw)
    b = sim.run(problem, "olga", seed=7, **kw)
    c = sim.run(problem, "olga", seed=8, **kw)
    assert a.rows == b.rows
    assert a.rows != c.rows


def test_resume_from_state_dict_continues_identically(problem):
    full = _olga(problem, build("randk", k=2), seed=4)
    for _ in range(50):
        full.step()
    part = _olga(problem, build("randk", k=2), seed=4)
    for _ in range(23):  # stop mid-epoch
        part.step()
    state, ledger_state = part.state_dict(), part.transport.ledger.state_dict()
    resumed = _olga(problem, build("randk", k=2), seed=4)
    resumed.load_state_dict(state)
    resumed.transport.ledger.load_state_dict(ledger_state)
    for _ in range(27):
        resumed.step()
    assert torch.equal(resumed.output(), full.output())
    assert resumed.transport.ledger.summary() == full.transport.ledger.summary()


def test_history_exports(problem, tmp_path):
    h = sim.run(problem, "olga", compressor="identity", rounds=20)
    frame = h.to_pandas()
    assert list(frame.columns) == [
        "round",
        "cc1",
        "cc2",
        "cc3",
        "uplink_bytes",
        "downlink_bytes",
        "rel_subopt",
        "grad_norm_sq",
    ]
    assert len(frame) == 20 and frame["cc1"].tolist() == list(range(1, 21))
    path = tmp_path / "h.json"
    h.to_json(path)
    assert '"algorithm": "olga"' in path.read_text()
    assert math.isinf(h.cc3_to(1e-300))


BAD = [
    (dict(p=0.0), r"p: p=0\.0 is out of range; it must be in \(0, 1\.0\]"),
    (dict(p=1.5), r"p: p=1\.5 is out of range"),
    (dict(theta=-1.0), r"theta: theta=-1\.0 is out of range"),
    (dict(theta=0), r"theta: theta=0 is out of range"),
    (dict(preset="fast"), r"preset: preset='fast' is unknown; use one of \['theory', 'similarity', 'auto'\]"),
]


@pytest.mark.parametrize(("kw", "message"), BAD)
def test_bad_olga_parameters(problem, kw, message):
    with pytest.raises(ValueError, match=message):
        _olga(problem, build("randk", k=2), **kw)


def test_compressor_family_mismatch(problem):
    with pytest.raises(ValueError, match=r"OLGA needs an unbiased compressor .* use EF-OLGA"):
        _olga(problem, build("topk", k=2))
    with pytest.raises(ValueError, match=r"EF-OLGA needs a biased contractive compressor .* use OLGA"):
        _olga(problem, build("randk", k=2), cls=EFOLGA)
    with pytest.raises(ValueError, match=r"DIANA needs an unbiased compressor"):
        sim.run(problem, "diana", compressor=("topk", {"k": 1}), rounds=1)
    with pytest.raises(ValueError, match=r"EF21 needs a biased contractive compressor"):
        sim.run(problem, "ef21", compressor=("randk", {"k": 1}), rounds=1)


def test_too_few_workers():
    with pytest.raises(ValueError, match=r"workers: M=1 is too small"):
        SimulatorTransport(num_workers=1, dim=3)


def test_sim_run_errors(problem):
    with pytest.raises(ValueError, match=r"unknown name 'olgaa'; known methods: .*olga"):
        sim.run(problem, "olgaa", rounds=1)
    with pytest.raises(ValueError, match=r"olga: unknown option\(s\) \['thetaa'\]"):
        sim.run(problem, "olga", compressor="identity", rounds=1, thetaa=1.0)
    with pytest.raises(ValueError, match=r"compressor: olga compresses its messages; pass compressor="):
        sim.run(problem, "olga", rounds=1)
    with pytest.raises(ValueError, match=r"give a stopping budget"):
        sim.run(problem, "gd")
    with pytest.raises(ValueError, match=r"delta: preset='similarity' needs the similarity constant"):
        transport = SimulatorTransport(num_workers=problem.num_workers, dim=problem.dim)
        OLGA(
            transport=transport,
            oracle=ProblemOracle(problem, transport.workers),
            x0=torch.zeros(problem.dim, dtype=torch.float64),
            compressor=build("identity"),
            mu=problem.mu,
        )


def test_acc_extragradient_two_dense_rounds_per_iteration(problem):
    transport = SimulatorTransport(num_workers=problem.num_workers, dim=problem.dim)
    alg = AccExtraGradient(
        transport=transport,
        oracle=ProblemOracle(problem, transport.workers),
        x0=torch.zeros(problem.dim, dtype=torch.float64),
        mu=problem.mu,
        delta=problem.delta,
    )
    for _ in range(10):
        alg.step()
    assert transport.ledger.cc3 == pytest.approx(10.0)
    assert transport.ledger.cc2 == 10 * (problem.num_workers - 1)


def test_accsvrs_sends_one_dense_message_per_inner_round(problem):
    from lit_commeff.algorithms import AccSVRS

    transport = SimulatorTransport(num_workers=problem.num_workers, dim=problem.dim)
    alg = AccSVRS(
        transport=transport,
        oracle=ProblemOracle(problem, transport.workers),
        x0=torch.zeros(problem.dim, dtype=torch.float64),
        mu=problem.mu,
        delta=problem.delta,
        seed=2,
    )
    alg.step()  # anchor
    ledger = transport.ledger
    while alg.phase == "inner":
        before = ledger.cc2
        hub_drawn = alg.sampled_worker(alg.round) == 0
        alg.step()
        assert ledger.cc2 - before == (0 if hub_drawn else 1)
        assert ledger.rounds[-1].cc3 == (0.0 if hub_drawn else 1.0)
    assert alg.p == pytest.approx(1 / problem.num_workers)


def test_state_dict_carries_compressor_warm_start(problem):
    alg = _olga(problem, build("powersgd", rank=1, reshape="square"), cls=EFOLGA, seed=1, p=0.2)
    for _ in range(12):  # (the first inner round of an epoch sends zeros, which leave no warm start)
        alg.step()
    state = alg.state_dict()
    assert state["compressor"]["warm_start"]  # PowerSGD's Q matrices per worker
    fresh = _olga(problem, build("powersgd", rank=1, reshape="square"), cls=EFOLGA, seed=1, p=0.2)
    fresh.load_state_dict(state)
    for _ in range(10):
        alg.step()
        fresh.step()
    assert torch.equal(alg.xk, fresh.xk)


def test_auto_preset_estimates_a_lower_bound_of_delta(problem):
    alg = _olga(problem, build("randk", k=2), preset="auto", delta0=problem.L, seed=0)
    while alg.outer < 3:
        alg.step()
    # δ̂ is measured along one direction per outer iteration: positive, and never above the true δ.
    assert 0 < alg.delta_hat <= problem.delta * (1 + 1e-9)
    assert alg.theta == pytest.approx(1 / (2 * alg.delta_hat))


def test_olga_on_logistic_regression_converges():
    from lit_commeff.problems import Logistic

    g = torch.Generator().manual_seed(0)
    a = torch.randn(240, 6, generator=g, dtype=torch.float64)
    b = torch.where(a @ torch.randn(6, generator=g, dtype=torch.float64) > 0, 1.0, -1.0)
    problem = Logistic.from_data(a, b, workers=4, seed=0)
    h = sim.run(problem, "olga", compressor=("randk", {"k": 2}), preset="similarity", cc3_budget=400, tol=1e-9)
    assert h.final["rel_subopt"] <= 1e-9


def test_similarity_gate_shortens_epochs_and_still_converges():
    problem = synthetic_ridge(workers=4, n=40, dim=8, similarity=0.3, seed=2)
    kw = {"compressor": ("randk", {"k": 2}), "preset": "similarity", "p": 0.05, "rounds": 400, "seed": 1}
    plain = sim.run(problem, "olga", **kw)
    gated = sim.run(problem, "olga", gate=1e-3, **kw)
    assert gated.final["cc1"] == plain.final["cc1"] == 400
    # a tight gate ends epochs sooner: more dense rounds for the same number of rounds
    assert gated.final["cc3"] > plain.final["cc3"]
    assert gated.final["rel_subopt"] < 1e-3


@pytest.mark.parametrize("cls, compressor", [(OLGA, ("randk", {"k": 2})), (EFOLGA, ("topk", {"k": 2}))])
def test_same_batch_differences_leave_full_batch_iterates_unchanged(cls, compressor):
    problem = synthetic_ridge(workers=4, n=30, dim=8, similarity=0.3, seed=3)
    kw = {"compressor": compressor, "preset": "similarity", "p": 0.2, "rounds": 60, "seed": 2}
    plain = sim.run(problem, cls, **kw)
    same = sim.run(problem, cls, same_batch=True, **kw)
    assert same.final["rel_subopt"] == pytest.approx(plain.final["rel_subopt"], rel=1e-6, abs=1e-14)
    assert same.final["uplink_bytes"] == plain.final["uplink_bytes"]


@pytest.mark.parametrize("cls, compressor", [(OLGA, ("randk", {"k": 2})), (EFOLGA, ("topk", {"k": 2}))])
def test_without_acceleration_one_dense_round_per_outer_iteration(problem, cls, compressor):
    """accelerate=False: x = y, and the y round's dense gradients anchor the next epoch (no anchor/error round)."""
    alg = _olga(problem, build(compressor[0], **compressor[1]), cls=cls, p=0.25, seed=5, accelerate=False)
    ledger = alg.transport.ledger
    alg.step()  # the first anchor round
    lengths = [alg.inner_n]
    for outer in range(1, 4):
        while alg.outer < outer:
            alg.step()
        assert alg.phase == "inner" and torch.equal(alg.x0, alg.y)  # the y round started the next epoch
        lengths.append(alg.inner_n)
    dense = sum(
        1 for r in ledger.rounds if r.uplink_messages and r.uplink_bytes == (problem.num_workers - 1) * problem.dim * 8
    )
    assert ledger.cc1 == 1 + sum(lengths[:3]) + 3  # first anchor + inner rounds + one y round per outer iteration
    assert dense == 4


def test_without_acceleration_olga_still_converges(problem):
    for name, compressor in (("olga", ("randk", {"k": 2})), ("ef_olga", ("topk", {"k": 2}))):
        history = sim.run(
            problem,
            name,
            compressor=compressor,
            preset="similarity",
            accelerate=False,
            cc3_budget=3000,
            tol=1e-10,
            seed=1,
        )
        assert history.final["rel_subopt"] <= 1e-10, (name, history.final)


def test_output_last_follows_every_broadcast_iterate(problem):
    """output='last': the newest point every process holds (x_k each inner round, y at the y round)."""
    y_out = _olga(problem, build("randk", k=2), p=0.25, seed=5)
    last = _olga(problem, build("randk", k=2), p=0.25, seed=5, output="last")
    changes_y = changes_last = 0
    previous_y, previous_last = y_out.output().clone(), last.output().clone()
    for _ in range(40):
        y_out.step()
        last.step()
        if last.phase == "anchor":  # just after a y round both outputs are y
            assert torch.equal(last.output(), last.y) and torch.equal(y_out.output(), y_out.y)
        changes_y += not torch.equal(y_out.output(), previous_y)
        changes_last += not torch.equal(last.output(), previous_last)
        previous_y, previous_last = y_out.output().clone(), last.output().clone()
    assert changes_last > 3 * changes_y > 0  # y moves once per outer iteration, 'last' every round
    assert torch.equal(y_out.y, last.y)  # the same run: only what is shown differs
    with pytest.raises(ValueError, match="output: output='z' is unknown"):
        _olga(problem, build("randk", k=2), output="z")


@pytest.mark.parametrize("option", ["dense_compressor", "downlink_compressor"])
@pytest.mark.parametrize("accelerate", [True, False])
@pytest.mark.parametrize("name, compressor", [("olga", ("randk", {"k": 2})), ("ef_olga", ("topk", {"k": 2}))])
def test_extra_compressors_still_converge(problem, name, compressor, accelerate, option):
    """EF21-style estimates in the anchor/y rounds (``dense_compressor``) or EF21-P-style compressed broadcasts in
    the inner rounds (``downlink_compressor``): still linear convergence to high accuracy on ridge."""
    history = sim.run(
        problem,
        name,
        compressor=compressor,
        **{option: build("topk", k=3)},
        preset="similarity",
        accelerate=accelerate,
        cc3_budget=6000,
        tol=1e-10,
        seed=1,
    )
    assert history.final["rel_subopt"] <= 1e-10, (name, accelerate, option, history.final)


@pytest.mark.parametrize("cls, compressor", [(OLGA, ("randk", {"k": 2})), (EFOLGA, ("topk", {"k": 2}))])
def test_dense_compressor_replaces_the_dense_gradient_gathers(problem, cls, compressor):
    dense_compressor = build("topk", k=3)
    alg = _olga(
        problem, build(compressor[0], **compressor[1]), cls=cls, p=0.25, seed=5, dense_compressor=dense_compressor
    )
    for _ in range(60):
        alg.step()
        if alg.transport.is_hub and alg.phase == "inner" and alg.inner_k == 0:
            # the hub's estimates are what the workers hold, and its own row is exact
            assert torch.equal(alg.grad_estimate.aggregate, alg.grad_estimate.rows)
    ledger = alg.transport.ledger
    wire = dense_compressor.wire_nbytes((problem.dim,), torch.float64)
    assert ledger.gamma("dense_compressed") == pytest.approx(problem.dim * 8 / wire)
    if cls is OLGA:  # no dense gradient gather is left (EF-OLGA's error round stays dense)
        assert math.isnan(ledger.gamma("dense"))
    state = alg.state_dict()
    resumed = _olga(
        problem, build(compressor[0], **compressor[1]), cls=cls, p=0.25, seed=5, dense_compressor=dense_compressor
    )
    resumed.load_state_dict(state)
    for _ in range(10):
        alg.step()
        resumed.step()
    assert torch.equal(alg.output(), resumed.output())
    plain = _olga(problem, build(compressor[0], **compressor[1]), cls=cls, p=0.25, seed=5)
    with pytest.raises(ValueError, match="dense_compressor: the checkpoint was written with dense_compressor on"):
        plain.load_state_dict(state)


@pytest.mark.parametrize("cls, compressor", [(OLGA, ("randk", {"k": 2})), (EFOLGA, ("topk", {"k": 2}))])
def test_downlink_compressor_replaces_the_inner_broadcasts(problem, cls, compressor):
    down = build("topk", k=3)
    make = lambda **kw: _olga(problem, build(compressor[0], **compressor[1]), cls=cls, p=0.25, seed=5, **kw)  # noqa: E731
    alg, dense = make(downlink_compressor=down, output="last"), make(output="last")
    lagging = 0
    for _ in range(60):
        alg.step()
        dense.step()
        if alg.phase == "inner" and alg.inner_k > 1:  # a round with a broadcast is done (round 0 sends none)
            # the model holds the point every process shares; the hub's exact x_k is ahead of it
            w = alg.downlink_estimate.point
            assert torch.equal(alg.output(), w)
            lagging += not torch.equal(w, alg.xk)
            assert torch.equal(
                alg.downlink_estimate.exact_grad, ProblemOracle(problem, alg.transport.workers).hub_grad(w)
            )
    assert lagging > 0  # a 3-of-10 TopK cannot carry every move of x_k
    ledger, plain = alg.transport.ledger, dense.transport.ledger
    assert ledger.cc1 == plain.cc1  # the same rounds (epoch lengths are seeded): only the broadcasts differ
    assert ledger.uplink_bytes == plain.uplink_bytes
    wire = down.wire_nbytes((problem.dim,), torch.float64)
    receivers = problem.num_workers - 1
    compressed = sum(1 for r in ledger.rounds if r.downlink_bytes == 2 * wire * receivers)
    assert compressed > 0
    # each of those rounds sent two compressed messages where the plain run sent x_k and ∇f_1(x_k) dense
    assert plain.downlink_bytes - ledger.downlink_bytes == compressed * 2 * (problem.dim * 8 - wire) * receivers
    state = alg.state_dict()
    resumed = make(downlink_compressor=down, output="last")
    resumed.load_state_dict(state)
    for _ in range(10):
        alg.step()
        resumed.step()
    assert torch.equal(alg.output(), resumed.output())
    with pytest.raises(ValueError, match="downlink_compressor: the checkpoint was written with downlink_compressor on"):
        make().load_state_dict(state)


def test_downlink_compressor_rejects_what_it_cannot_serve(problem):
    with pytest.raises(ValueError, match="downlink_compressor: local_steps=2"):
        _olga(problem, build("randk", k=2), downlink_compressor=build("topk", k=3), local_steps=2)
    with pytest.raises(ValueError, match="downlink_compressor: same_batch"):
        _olga(problem, build("randk", k=2), downlink_compressor=build("topk", k=3), same_batch=True)
    with pytest.raises(ValueError, match="downlink_compressor"):
        _olga(problem, build("randk", k=2), downlink_compressor=build("randk", k=3))  # unbiased: no contraction


STEP_CONTRACT = [
    ("olga", {"compressor": ("randk", {"k": 2}), "preset": "similarity", "p": 0.3}),
    ("olga", {"compressor": ("randk", {"k": 2}), "preset": "auto", "delta0": 10.0, "gate": 0.5, "p": 0.3}),
    ("olga", {"compressor": ("randk", {"k": 2}), "preset": "similarity", "same_batch": True, "accelerate": False}),
    ("ef_olga", {"compressor": ("topk", {"k": 2}), "preset": "similarity", "p": 0.3}),
    ("ef_olga", {"compressor": ("topk", {"k": 2}), "preset": "similarity", "dense_compressor": ("topk", {"k": 3})}),
    ("olga", {"compressor": ("randk", {"k": 2}), "preset": "similarity", "downlink_compressor": ("topk", {"k": 3})}),
    *[(name, {}) for name in ("gd", "accsvrs", "acc_extragradient")],
    ("diana", {"compressor": ("randk", {"k": 2})}),
    ("ef21", {"compressor": ("topk", {"k": 2})}),
    ("adiana", {"compressor": ("randk", {"k": 2})}),
    ("locodl", {"compressor": ("randk", {"k": 2})}),
    ("gated_dane", {"compressor": ("topk", {"k": 2}), "delta": None, "theta": 1.0, "beta": 0.5, "inner_steps": 4}),
    (
        "gated_dane",
        {
            "compressor": ("randk", {"k": 2}),
            "grad_compressor": ("topk", {"k": 3}),
            "downlink_compressor": ("topk", {"k": 3}),
            "outer": "nesterov",
            "sync": "fixed",
            "inner_steps": 3,
        },
    ),
    ("gated_dane", {"compressor": ("identity", {}), "correction": "lagged", "delta": None, "theta": 1.0, "beta": 0.5}),
    ("gated_dane", {"compressor": ("identity", {}), "correction": "averaged", "outer": "nesterov", "inner_steps": 3}),
    (
        "gated_dane",
        {
            "compressor": ("topk", {"k": 2}),
            "grad_compressor": ("topk", {"k": 3}),
            "correction": "lagged",
            "downlink_compressor": ("topk", {"k": 3}),
            "outer": "nesterov",
            "inner_steps": 4,
        },
    ),
]


def _tensors(state):
    """The state's tensors by key, a memory's (a nested dict) as ``name.field``."""
    out = {}
    for key, value in state.items():
        if isinstance(value, torch.Tensor):
            out[key] = value
        elif isinstance(value, dict) and key != "compressor":
            out.update({f"{key}.{k}": v for k, v in value.items() if isinstance(v, torch.Tensor)})
    return out


@pytest.mark.parametrize(("name", "options"), STEP_CONTRACT, ids=lambda v: str(v))
def test_a_step_never_changes_a_state_tensor_in_place(problem, name, options):
    """The contract behind the non-finite guard's cheap undo point (``Algorithm.state_refs``)."""
    from lit_commeff.algorithms import ALGORITHMS

    options = dict(options)
    for field in ("compressor", "dense_compressor", "downlink_compressor", "grad_compressor"):
        if field in options:
            options[field] = build(options[field][0], **options[field][1])
    cls = ALGORITHMS[name]
    constants = {"mu": problem.mu, "delta": problem.delta, "L": problem.L}
    accepted = cls.__init__.__code__.co_varnames + getattr(getattr(cls, "options_cls", None), "names", tuple)()
    transport = SimulatorTransport(num_workers=problem.num_workers, dim=problem.dim)
    alg = cls(
        transport=transport,
        oracle=ProblemOracle(problem, transport.workers),
        x0=torch.zeros(problem.dim, dtype=torch.float64),
        seed=2,
        **options,
        **{k: v for k, v in constants.items() if k in accepted and k not in options},
    )
    for _ in range(40):
        refs = alg.state_refs()
        copies = {k: v.clone() for k, v in _tensors(refs).items()}
        alg.step()
        for key, before in copies.items():
            assert torch.equal(_tensors(refs)[key], before), f"{name}: step {alg.round} changed {key!r} in place"
    undo = alg.state_refs()
    expected = alg.state_dict()
    for _ in range(5):
        alg.step()
    alg.load_state_dict(undo)  # the guard's restore
    restored = _tensors(alg.state_dict())
    assert restored.keys() == _tensors(expected).keys()
    for key, value in _tensors(expected).items():
        assert torch.equal(restored[key], value), key
