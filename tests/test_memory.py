"""The memory components (error feedback, EF21/EF21-P estimates, DIANA shifts, LoCoDL control variates)."""

from __future__ import annotations

import io

import pytest
import torch

from lit_commeff import sim
from lit_commeff.algorithms.memory import (
    ControlVariates,
    DianaShift,
    EF21Estimate,
    EF21PDownlink,
    ErrorFeedback,
    Memory,
)
from lit_commeff.compression import build
from lit_commeff.problems import synthetic_ridge
from lit_commeff.transport import SimulatorTransport


def _t(*values):
    return torch.tensor(values, dtype=torch.float64)


# ------------------------------------------------------------------------------- update rules, by hand


def test_error_feedback_keeps_what_the_compressor_dropped():
    topk = build("topk", k=1)
    ef = ErrorFeedback()
    ef.reset(torch.zeros(1, 3, dtype=torch.float64))
    v = ef.compensate(_t(3.0, -1.0, 0.5)[None])
    sent = topk.roundtrip(v)
    assert torch.equal(sent, _t(3.0, 0.0, 0.0)[None])
    ef.update(v, sent)
    assert torch.equal(ef.rows, _t(0.0, -1.0, 0.5)[None])
    # the residual enters the next message: e + x = (0.5, -0.5, 1.0), of which TopK-1 sends the 1.0
    v = ef.compensate(_t(0.5, 0.5, 0.5)[None])
    assert torch.equal(v, _t(0.5, -0.5, 1.0)[None])
    ef.update(v, topk.roundtrip(v))
    assert torch.equal(ef.rows, _t(0.5, -0.5, 0.0)[None])
    ef.reset(ef.rows)  # a new epoch: zero residuals of the same shape
    assert torch.equal(ef.rows, torch.zeros(1, 3, dtype=torch.float64))


def test_diana_shift_moves_by_alpha_times_the_message():
    shift = DianaShift(alpha=0.5, aggregate=torch.zeros(2, dtype=torch.float64))
    assert shift.rows is None
    g = _t(2.0, 4.0)[None]
    message = shift.compensate(g)  # h starts at zero, shaped like the first vector
    assert torch.equal(message, g) and torch.equal(shift.rows, torch.zeros(1, 2, dtype=torch.float64))
    shift.update(message)
    assert torch.equal(shift.rows, _t(1.0, 2.0)[None])
    assert torch.equal(shift.compensate(_t(3.0, 3.0)[None]), _t(2.0, 1.0)[None])
    shift.update_aggregate(_t(2.0, 4.0))
    shift.update_aggregate(_t(2.0, -2.0))
    assert torch.equal(shift.aggregate, _t(2.0, 1.0))


def test_ef21_estimate_adds_the_message_as_it_is():
    est = EF21Estimate(rows=torch.zeros(2, 2, dtype=torch.float64), aggregate=torch.zeros(2, 2, dtype=torch.float64))
    grads = torch.tensor([[1.0, -2.0], [3.0, 0.5]], dtype=torch.float64)
    message = est.compensate(grads)
    assert torch.equal(message, grads)
    decoded = torch.tensor([[1.0, 0.0], [3.0, 0.0]], dtype=torch.float64)  # TopK-1 of each row
    est.update(decoded)
    est.update_aggregate(decoded)
    assert torch.equal(est.rows, decoded) and torch.equal(est.aggregate, decoded)
    assert torch.equal(est.compensate(grads), torch.tensor([[0.0, -2.0], [0.0, 0.5]], dtype=torch.float64))
    est.reset(grads, grads.mean(dim=0))  # a dense round: the estimates are the gradients
    assert torch.equal(est.rows, grads) and torch.equal(est.aggregate, _t(2.0, -0.75))


def test_ef21p_downlink_tracks_the_hubs_point_and_gradient():
    down = EF21PDownlink(_t(1.0, 1.0))
    assert torch.equal(down.point, _t(1.0, 1.0)) and torch.equal(down.grad, _t(0.0, 0.0))
    assert down.exact_grad is None
    down.reset(_t(0.0, 2.0), _t(1.0, 1.0), _t(1.0, 1.0))
    assert torch.equal(down.point_message(_t(3.0, 2.5)), _t(3.0, 0.5))
    assert torch.equal(down.grad_message(_t(4.0, 0.0)), _t(3.0, -1.0))
    assert torch.equal(down.exact_grad, _t(4.0, 0.0))
    down.apply(_t(3.0, 0.0), _t(3.0, 0.0))  # TopK-1 of both messages
    assert torch.equal(down.point, _t(3.0, 2.0)) and torch.equal(down.grad, _t(4.0, 1.0))
    assert torch.equal(down.hub_error(), _t(0.0, -1.0))


def test_control_variates_update_and_keep_their_mean_at_zero():
    cv = ControlVariates(torch.zeros(2, dtype=torch.float64))
    cv.reset(torch.ones(2, 2, dtype=torch.float64))
    sent = torch.tensor([[2.0, 0.0], [0.0, 4.0]], dtype=torch.float64)
    mean = sent.sum(dim=0) / 4  # LoCoDL's d̄ = Σ d_m / (2n), n = 2
    cv.update(sent, mean, 0.5)
    assert torch.equal(cv.rows, torch.tensor([[-0.75, 0.5], [0.25, -1.5]], dtype=torch.float64))
    assert torch.equal(cv.shared, _t(0.25, 0.5))
    assert torch.equal(cv.rows.mean(dim=0) + cv.shared, torch.zeros(2, dtype=torch.float64))


# ------------------------------------------------------------------------------- state_dict


def _filled() -> list[Memory]:
    ef = ErrorFeedback()
    ef.reset(torch.zeros(2, 3))
    ef.update(torch.ones(2, 3), torch.zeros(2, 3))
    ef.aggregate = torch.full((3,), 0.5)
    shift = DianaShift(alpha=0.25, aggregate=torch.zeros(3))
    shift.update(shift.compensate(torch.arange(6.0).reshape(2, 3)))
    est = EF21Estimate()
    est.reset(torch.arange(6.0).reshape(2, 3), torch.ones(3))
    down = EF21PDownlink(torch.ones(3))
    down.reset(torch.ones(3), torch.full((3,), 2.0), None)
    cv = ControlVariates(torch.ones(3))
    cv.reset(torch.ones(2, 3))
    return [ef, shift, est, down, cv]


@pytest.mark.parametrize("memory", _filled(), ids=lambda m: type(m).__name__)
def test_state_dict_round_trip_through_a_checkpoint(memory):
    state = memory.state_dict()
    assert list(state) == list(memory._fields)
    for name, value in state.items():
        assert value is getattr(memory, name)  # by reference: updates rebind, never write in place
    buffer = io.BytesIO()
    torch.save(state, buffer)
    loaded = torch.load(io.BytesIO(buffer.getvalue()), weights_only=True)
    fresh = type(memory).__new__(type(memory))
    fresh.load_state_dict(loaded)
    for name, value in state.items():
        restored = getattr(fresh, name)
        if value is None:
            assert restored is None
        else:
            assert torch.equal(restored, value) and restored is not loaded[name]  # a copy is kept


@pytest.mark.parametrize("memory", _filled(), ids=lambda m: type(m).__name__)
def test_load_state_dict_names_missing_and_unexpected_fields(memory):
    state = dict(memory.state_dict())
    dropped = next(iter(state))
    del state[dropped]
    state["h"] = torch.zeros(3)
    with pytest.raises(ValueError, match=rf"missing \['{dropped}'\], unexpected \['h'\]"):
        memory.load_state_dict(state)


def test_updates_never_change_a_held_tensor_in_place():
    for memory in _filled():
        before = {k: v.clone() for k, v in memory.state_dict().items() if v is not None}
        refs = memory.state_dict()
        if isinstance(memory, ErrorFeedback):
            memory.update(memory.compensate(torch.ones(2, 3)), torch.zeros(2, 3))
        elif isinstance(memory, DianaShift | EF21Estimate):
            memory.update(memory.compensate(torch.ones(2, 3)))
            memory.update_aggregate(torch.ones(3))
        elif isinstance(memory, EF21PDownlink):
            memory.grad_message(torch.ones(3))
            memory.apply(torch.ones(3), torch.ones(3))
        else:
            memory.update(torch.ones(2, 3), torch.ones(3), 0.5)
        for name, value in before.items():
            assert torch.equal(refs[name], value), (type(memory).__name__, name)
        assert any(getattr(memory, name) is not refs[name] for name in before), type(memory).__name__  # it moved


# ------------------------------------------------------------------------------- in the algorithms


@pytest.fixture(scope="module")
def problem():
    return synthetic_ridge(workers=6, n=30, dim=8, similarity=0.3, lam=0.1, seed=4)


METHODS = [
    ("olga", ("randk", {"k": 2}), {"p": 0.3, "dense_compressor": ("topk", {"k": 3})}, ("grad_estimate",)),
    ("olga", ("randk", {"k": 2}), {"p": 0.3, "downlink_compressor": ("topk", {"k": 3})}, ("downlink_estimate",)),
    (
        "ef_olga",
        ("topk", {"k": 2}),
        {"p": 0.3, "dense_compressor": ("topk", {"k": 3}), "downlink_compressor": ("topk", {"k": 3})},
        ("error_memory", "grad_estimate", "downlink_estimate"),
    ),
    ("diana", ("randk", {"k": 2}), {}, ("shift",)),
    ("ef21", ("topk", {"k": 2}), {}, ("estimate",)),
    ("adiana", ("randk", {"k": 2}), {}, ("shift",)),
    ("locodl", ("randk", {"k": 2}), {}, ("control",)),
]


def _make(problem, name, compressor, params, seed=3):
    params = {k: sim.resolve_compressor(v) if isinstance(v, tuple) else v for k, v in params.items()}
    transport = SimulatorTransport(num_workers=problem.num_workers, dim=problem.dim, dtype=problem.dtype)
    return sim.make_algorithm(
        problem,
        name,
        transport,
        compressor=sim.resolve_compressor(compressor),
        x0=torch.zeros(problem.dim, dtype=problem.dtype),
        seed=seed,
        params=params,
    )


@pytest.mark.parametrize(("name", "compressor", "params", "memories"), METHODS, ids=lambda v: str(v)[:40])
def test_algorithm_state_nests_its_memories_and_resumes_bitwise(problem, name, compressor, params, memories):
    alg = _make(problem, name, compressor, params)
    for _ in range(17):  # mid-epoch for the OLGA family (p = 0.3)
        alg.step()
    state = alg.state_dict()
    for key in memories:
        memory = getattr(alg, key)
        assert isinstance(memory, Memory)
        assert set(state[key]) == set(memory._fields)
        for field, value in state[key].items():
            held = getattr(memory, field)
            assert (value is None) == (held is None)
            if value is not None:
                assert torch.equal(value, held) and value is not held  # state_dict copies
    buffer = io.BytesIO()
    torch.save(state, buffer)  # the strategy checkpoints each rank's state this way
    resumed = _make(problem, name, compressor, params)
    resumed.load_state_dict(torch.load(io.BytesIO(buffer.getvalue()), weights_only=True))
    resumed.transport.ledger.load_state_dict(alg.transport.ledger.state_dict())
    for _ in range(25):
        alg.step()
        resumed.step()
        assert torch.equal(resumed.output(), alg.output())
    for key in memories:
        for field, value in getattr(alg, key).state_dict().items():
            other = getattr(getattr(resumed, key), field)
            assert (value is None and other is None) or torch.equal(value, other), (key, field)
    assert resumed.transport.ledger.summary() == alg.transport.ledger.summary()


@pytest.mark.parametrize(("name", "compressor"), [("diana", ("randk", {"k": 2})), ("ef21", ("topk", {"k": 2}))])
def test_the_hubs_aggregate_is_the_mean_of_the_workers_estimates(problem, name, compressor):
    alg = _make(problem, name, compressor, {})
    memory = alg.shift if name == "diana" else alg.estimate
    for _ in range(30):
        alg.step()
        # one process holds every worker: the hub's aggregate moves by the mean of the rows' moves
        torch.testing.assert_close(memory.aggregate, memory.rows.mean(dim=0), rtol=0, atol=1e-12)


def test_ef_olga_error_round_gathers_the_mean_residual(problem):
    alg = _make(problem, "ef_olga", ("topk", {"k": 2}), {"p": 0.3})
    seen = 0
    for _ in range(60):
        phase = alg.phase
        rows = alg.error_memory.rows
        alg.step()
        if phase == "error":
            assert torch.equal(alg.error_memory.aggregate, rows.mean(dim=0))
            seen += 1
        if alg.phase == "inner" and alg.inner_k == 0:  # an epoch began: the residuals start from zero
            assert torch.equal(alg.error_memory.rows, torch.zeros_like(alg.error_memory.rows))
    assert seen > 0


def test_a_checkpoint_without_a_memory_the_run_keeps_is_refused(problem):
    alg = _make(problem, "diana", ("randk", {"k": 2}), {})
    alg.step()
    state = {**alg.state_dict(), "shift": None}
    with pytest.raises(ValueError, match="shift: the checkpoint has no shift state but this diana run keeps one"):
        _make(problem, "diana", ("randk", {"k": 2}), {}).load_state_dict(state)
    legacy = {k: v for k, v in alg.state_dict().items() if k != "shift"}
    with pytest.raises(ValueError, match=r"checkpoint lacks state \['shift'\]"):
        _make(problem, "diana", ("randk", {"k": 2}), {}).load_state_dict(legacy)
