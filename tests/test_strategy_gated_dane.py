"""``strategy="gated_dane"`` over real gloo processes: training, shared anchors, exact bytes, resume mid-round."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from test_strategy_baselines import EPOCH_OF_4, MLP, WORLD, assert_resumed_like_uninterrupted, dense_dim, falls, fit

from lit_commeff.algorithms import GatedDANE
from lit_commeff.options import OptionError
from lit_commeff.strategy import GatedDANEStrategy


@pytest.mark.parametrize("correction", ["fresh", "lagged", "averaged", "update"])
def test_every_rank_trains_and_the_model_is_the_shared_anchor(tmp_path, correction):
    h, steps = 3, 24
    _, ranks = fit(
        GatedDANEStrategy(
            start_method="fork", sync="fixed", inner_steps=h, nonfinite="off", correction=correction, overlap=False
        ),
        tmp_path,
        max_steps=steps,
    )
    d = dense_dim(MLP())
    rounds = steps // h
    for step in range(steps):  # the model Lightning sees is the anchor: the same on every rank after every step
        assert torch.equal(ranks[0]["step_params"][step], ranks[1]["step_params"][step]), step
    anchors = [ranks[0]["step_params"][s] for s in range(h - 1, steps, h)]
    assert all(not torch.equal(a, b) for a, b in itertools.pairwise(anchors))  # each sync moves it
    for r in ranks:
        assert falls(r["losses"]), r["losses"]
        s = r["summary"]
        if correction == "fresh":
            # per round: the anchor gradient and the model change up (d float32 each), both back down, dense
            assert s["worker_uplink_bytes"] == rounds * 2 * d * 4
            assert s["downlink_bytes_per_worker"][1] == d * 4 + rounds * 2 * d * 4  # + the setup broadcast
            assert s["cc1"] == 1 + 2 * rounds
            assert set(s["gamma_by_tag"]) == {"grad", "delta"}
        else:
            # per round one message each way: [Δ_m, ∇f_m(x_r), count] up (the values in bf16 by default over gloo,
            # the count's float32 bits beside them), [x_{r+1}, ĝ_r, (Δ̄,) next H] down, exact
            down = 3 * d + 1 if correction == "update" else 2 * d + 1
            assert s["worker_uplink_bytes"] == rounds * (2 * d * 2 + 4)
            assert s["downlink_bytes_per_worker"][1] == d * 4 + rounds * down * 4
            assert s["cc1"] == 1 + rounds
            assert set(s["gamma_by_tag"]) == {"sync"}


class _Rounds(pl.Callback):
    """Writes each rank's finished round lengths and whether it keeps error-feedback residuals."""

    def __init__(self, out: Path) -> None:
        self.out = out

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        algorithm = trainer.strategy.algorithm
        record = {"history_h": algorithm.history_h, "ef": algorithm.error_memory is not None}
        (self.out / f"rounds{trainer.global_rank}.json").write_text(json.dumps(record))


def test_compressed_gated_run_counts_compressed_bytes_and_adapts_h(tmp_path):
    steps = 30
    strategy = GatedDANEStrategy(
        start_method="fork", compressor="topk", compressor_options={"ratio": 0.1}, inner_steps=8, min_inner_steps=2
    )
    _, ranks = fit(strategy, tmp_path, max_steps=steps, callbacks=[_Rounds(tmp_path)])
    rounds = [json.loads((tmp_path / f"rounds{r}.json").read_text()) for r in range(WORLD)]
    for r, record in zip(ranks, rounds, strict=True):
        assert falls(r["losses"]), r["losses"]
        gamma = r["summary"]["gamma_by_tag"]
        assert gamma["grad"] == pytest.approx(1.0, rel=0.01)  # dense: the gradient and the gate count
        assert 3 < gamma["delta"] < 10  # TopK 10 %: about d/(values + indices) = 5-10 times smaller
        assert record["ef"]  # TopK is biased: error feedback on the model change
        assert record["history_h"] == rounds[0]["history_h"]  # the agreed lengths are the same everywhere
        assert record["history_h"][0] == 2 and all(2 <= h <= 8 for h in record["history_h"])
        assert sum(record["history_h"]) <= steps


@pytest.mark.parametrize("correction", ["fresh", "averaged", "overlap"])
def test_the_hubs_measured_sync_cost_sets_every_ranks_round_length(tmp_path, monkeypatch, correction):
    """``link_aware``: the hub's measured cost decides H on every rank (here 18 steps on the hub, 0.1 elsewhere)."""
    monkeypatch.setattr(GatedDANE, "sync_steps", property(lambda self: 18.0 if self.transport.is_hub else 0.1))
    overlap = correction == "overlap"
    options = {"correction": "averaged", "overlap": True} if overlap else {"correction": correction, "overlap": False}
    strategy = GatedDANEStrategy(start_method="fork", inner_steps=8, min_inner_steps=2, **options)
    fit(strategy, tmp_path, max_steps=30, callbacks=[_Rounds(tmp_path)])
    rounds = [json.loads((tmp_path / f"rounds{r}.json").read_text())["history_h"] for r in range(WORLD)]
    assert rounds[1] == rounds[0]
    if overlap:  # the first reply comes at the end of round 2
        assert rounds[0][:2] == [2, 2] and all(4 <= h <= 8 for h in rounds[0][2:]), rounds[0]
        return
    # √(H_drift·18) ≥ √18 > 4 for any count: the hub's cost; the others' would give √(H_drift·0.1) ≤ √1.6 → 2
    assert rounds[0][0] == 2 and all(4 <= h <= 8 for h in rounds[0][1:]), rounds[0]


_TOPK = {"compressor": "topk", "compressor_options": {"ratio": 0.2}}


@pytest.mark.parametrize(
    "options",
    [
        {**_TOPK, "correction": "fresh"},
        {**_TOPK, "correction": "lagged"},
        {**_TOPK, "correction": "lagged", "preconditioner": "shared"},
        {**_TOPK, "correction": "averaged", "preconditioner": "shared"},
        {**_TOPK, "correction": "update"},
        # overlap: round 1's exchange, sent at step 3, is in flight at the stop; the checkpoint keeps its message
        # and the resumed run sends it again where the straight run takes its reply (step 6)
        {"correction": "averaged", "overlap": True},
        {"correction": "averaged", "overlap": True, "message_dtype": "bf16"},  # and the shifts are state
        {"correction": "averaged", "message_dtype": "bf16", "overlap": False},  # synchronous: the shifts are state too
    ],
    ids=["fresh", "lagged", "lagged-shared", "averaged-shared", "update", "overlap", "overlap-bf16", "sync-bf16"],
)
def test_resume_mid_round_is_bitwise(tmp_path, options):
    """H=3, stop after step 4: ranks hold different local iterates, corrections and Adam states (or the shared one)."""
    strategy = lambda: GatedDANEStrategy(start_method="fork", sync="fixed", inner_steps=3, **options)  # noqa: E731
    model = lambda: MLP(adam=True, lr=0.01)  # noqa: E731
    _, full = fit(strategy(), tmp_path / "full", model=model, max_steps=8, n=EPOCH_OF_4)
    ckpt = tmp_path / "part.ckpt"
    _, _part = fit(strategy(), tmp_path / "part", model=model, max_steps=4, save=ckpt, n=EPOCH_OF_4)
    _, resumed = fit(strategy(), tmp_path / "resumed", model=model, max_steps=8, ckpt_path=ckpt, n=EPOCH_OF_4)
    assert_resumed_like_uninterrupted(resumed, full, stopped_at=4)


class _Shared(pl.Callback):
    """Writes each rank's shared second moment and step counts at the end (``preconditioner="shared"``)."""

    def __init__(self, out: Path) -> None:
        self.out = out

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        a = trainer.strategy.algorithm
        record = {"t": a.pre_t, "seen": a.pre_seen, "v": a.pre_v, "m": a.pre_m, "summary": a.transport.ledger.summary()}
        torch.save(record, self.out / f"shared{trainer.global_rank}.pt")


def test_shared_adam_second_moment_is_the_same_on_every_rank_and_its_bytes_are_counted(tmp_path):
    """Adam under ``preconditioner="shared"``: one v on both ranks, bit for bit; the anchor is shared; the mean
    squared anchor gradient rides with each round's broadcast (d more float32 down per round)."""
    h, steps = 3, 24
    strategy = GatedDANEStrategy(
        start_method="fork", sync="fixed", inner_steps=h, nonfinite="off", preconditioner="shared"
    )
    _, ranks = fit(
        strategy, tmp_path, model=lambda: MLP(adam=True, lr=0.01), max_steps=steps, callbacks=[_Shared(tmp_path)]
    )
    shared = [torch.load(tmp_path / f"shared{r}.pt", weights_only=False) for r in range(WORLD)]
    assert shared[0]["t"] == shared[0]["seen"] == steps  # v saw every round (lagged: at each sync)
    assert torch.equal(shared[0]["v"], shared[1]["v"]) and bool((shared[0]["v"] > 0).any())
    assert not torch.equal(shared[0]["m"], shared[1]["m"])  # the momentum stays each rank's own
    for step in range(steps):
        assert torch.equal(ranks[0]["step_params"][step], ranks[1]["step_params"][step]), step
    d, rounds = dense_dim(MLP()), steps // h
    s = ranks[1]["summary"]
    assert s["worker_uplink_bytes"] == rounds * (2 * d * 2 + 4)  # the default bf16 gather
    assert s["downlink_bytes_per_worker"][1] == d * 4 + rounds * (3 * d + 1) * 4  # [x_{r+1}, ĝ_r, s_r, next H]


class _Bits(pl.Callback):
    """Writes each rank's resolved ``message_bits`` and ``overlap`` hyper-parameters."""

    def __init__(self, out: Path) -> None:
        self.out = out

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        hp = trainer.strategy.hyperparameters()
        record = {"message_bits": hp["message_bits"], "overlap": hp["overlap"]}
        (self.out / f"bits{trainer.global_rank}.json").write_text(json.dumps(record))


@pytest.mark.parametrize(("wire", "overlap"), [(None, False), ("bf16", False), ("model", False), (None, None)], ids=str)
def test_the_synchronous_sync_gathers_in_bf16_by_default_under_adam(tmp_path, wire, overlap):
    """Under Adam with ``overlap=false`` the sync's one gather over gloo is rounded by default (``message_dtype``
    None, as ``bf16``): [Δ_m, g_m] at 2 bytes a value and the count's 4 float32 bytes beside them, the broadcast of
    the new anchor exact. ``model`` keeps float32. Both ranks hold the same anchor at every step, and the loss falls
    (no guard: its agreement would add its own bytes). MLflow's hyper-parameter says which: ``message_bits``.
    ``overlap=None`` with fixed rounds of 3 under Adam is the synchronous sync too (session 27: overlapped rounds
    longer than 2 lose quality under Adam)."""
    h, steps = 3, 24
    options = ({} if overlap is None else {"overlap": overlap}) | ({} if wire is None else {"message_dtype": wire})
    strategy = GatedDANEStrategy(start_method="fork", sync="fixed", inner_steps=h, nonfinite="off", **options)
    _, ranks = fit(
        strategy, tmp_path, model=lambda: MLP(adam=True, lr=0.01), max_steps=steps, callbacks=[_Bits(tmp_path)]
    )
    for step in range(steps):  # the model holds the anchor between syncs
        assert torch.equal(ranks[0]["step_params"][step], ranks[1]["step_params"][step]), step
    d, rounds = dense_dim(MLP()), steps // h
    up = (2 * d + 1) * 4 if wire == "model" else 2 * d * 2 + 4  # [Δ_m, g_m] in bf16, the count in float32
    for rank, r in enumerate(ranks):
        assert falls(r["losses"]), r["losses"]
        s = r["summary"]
        assert s["worker_uplink_bytes"] == rounds * up
        assert s["downlink_bytes_per_worker"][1] == d * 4 + rounds * (2 * d + 1) * 4  # [x_{r+1}, ĝ_r, next H] exact
        bits = json.loads((tmp_path / f"bits{rank}.json").read_text())
        assert bits == {"message_bits": 32.0 if wire == "model" else 16.0, "overlap": 0.0}


class _Resolved(pl.Callback):
    """Writes each rank's resolved hyper-parameters and finished round lengths."""

    def __init__(self, out: Path) -> None:
        self.out = out

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        exchange = trainer.strategy.algorithm.exchange
        logged = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("gated_dane/exchange")}
        record = {
            "hp": trainer.strategy.hyperparameters(),
            "history_h": trainer.strategy.algorithm.history_h,
            "exchange": {"type": type(exchange).__name__, "seconds": exchange.seconds, "waited": exchange.waited},
            "logged": logged,
        }
        (self.out / f"resolved{trainer.global_rank}.json").write_text(json.dumps(record))


@pytest.mark.parametrize("options", [{}, {"overlap": True}], ids=["default", "overlap"])
def test_overlap_under_adam_gates_rounds_from_a_floor_of_2(tmp_path, options):
    """Under Adam over gloo the defaults overlap (session 25): bf16 messages, gated rounds from a floor of 2 steps that
    do not weigh the link. Both ranks hold the same anchor at every step, a reply moves it, the loss falls, and each
    joined exchange sent one message each way (the last is in flight at ``on_train_end``). Rank 0 logs its last
    joined exchange's time in the background thread, how long joining it blocked and what a validation pass hid of it.
    """
    steps = 24
    _, ranks = fit(
        GatedDANEStrategy(start_method="fork", **options),
        tmp_path,
        model=lambda: MLP(adam=True, lr=0.01),
        max_steps=steps,
        callbacks=[_Resolved(tmp_path)],
    )
    for step in range(steps):
        assert torch.equal(ranks[0]["step_params"][step], ranks[1]["step_params"][step]), step
    assert not torch.equal(ranks[0]["step_params"][0], ranks[0]["step_params"][-1])
    d = dense_dim(MLP())
    message = 2 * d * 2 + 3 * 4  # [Δ_m, g_m] in bf16, [count, fault, stop] in float32
    for rank, r in enumerate(ranks):
        assert falls(r["losses"]), r["losses"]
        record = json.loads((tmp_path / f"resolved{rank}.json").read_text())
        hp, rounds = record["hp"], record["history_h"]
        assert (hp["overlap"], hp["message_bits"], hp["min_inner_steps"], hp["link_aware"]) == (1.0, 16.0, 2.0, 0.0)
        assert rounds[0] == 2 and min(rounds) >= 2 and sum(rounds) <= steps and len(rounds) >= 3, rounds
        assert r["summary"]["worker_uplink_bytes"] == (len(rounds) - 1) * message
        assert r["summary"]["downlink_bytes_per_worker"][1] == 4 * d + (len(rounds) - 1) * message
        exchange = record["exchange"]
        assert exchange["type"] == "ThreadedExchange" and exchange["seconds"] > 0 and exchange["waited"] >= 0
        if rank == 0:  # logged at the last step, before that step's join: the exchange joined a round earlier
            logged = record["logged"]
            names = {"gated_dane/exchange_seconds", "gated_dane/exchange_wait_seconds"}
            names |= {"gated_dane/exchange_hidden_seconds", "gated_dane/exchange_wait_total_seconds"}
            names |= {"gated_dane/exchange_hidden_total_seconds"}
            assert set(logged) == names, logged
            assert logged["gated_dane/exchange_seconds"] > 0 and logged["gated_dane/exchange_wait_seconds"] >= 0
            assert logged["gated_dane/exchange_hidden_seconds"] == 0.0  # no validation pass: nothing hidden
            assert logged["gated_dane/exchange_hidden_total_seconds"] == 0.0
            assert logged["gated_dane/exchange_wait_total_seconds"] >= logged["gated_dane/exchange_wait_seconds"]
        else:  # rank-0-only metrics: the other ranks do not pay for self.log calls whose values are dropped
            assert record["logged"] == {}, record["logged"]


@pytest.mark.parametrize(("wire", "eager"), [("model", "full"), (None, "full"), (None, "share"), (None, "once")])
def test_overlap_hides_the_sync_and_every_rank_holds_the_same_anchor(tmp_path, wire, eager):
    """``overlap``: the exchange runs in a thread over its own process group; the reply to round r is taken at
    the end of round r + 1, on both ranks alike. The faults ride in the messages: no guard traffic. With bf16
    messages the values take 2 bytes each and the 3 float32 header fields travel beside them, 12 bytes. The
    defaults under SGD (``overlap`` and ``message_dtype`` None) are overlap with bf16 messages."""
    h, steps = 3, 24
    options = {"overlap": True, "message_dtype": wire} if wire else {}  # MLP() trains with SGD
    if eager == "share":  # under plain averaging, where `share` costs no rounds (under momentum it does: B8)
        options.update(eager=eager, outer_lr=1.0, outer_momentum=0.0)
    elif eager == "once":  # under DiLoCo's outer step (the defaults), with the corrections averaged over rounds
        options.update(eager=eager, correction_memory=0.2)
    strategy = GatedDANEStrategy(start_method="fork", sync="fixed", inner_steps=h, **options)
    _, ranks = fit(strategy, tmp_path, max_steps=steps)
    d = dense_dim(MLP())
    first = ranks[0]["step_params"][0]
    for step in range(steps):
        assert torch.equal(ranks[0]["step_params"][step], ranks[1]["step_params"][step]), step
        if step < 2 * h - 1:  # no reply before the end of round 2
            assert torch.equal(ranks[0]["step_params"][step], first), step
    assert not torch.equal(ranks[0]["step_params"][2 * h - 1], first)
    joined = steps // h - 1  # the last round's exchange is still in flight at on_train_end
    message = (2 * d + 3) * 4 if wire == "model" else 2 * d * 2 + 3 * 4
    for r in ranks:
        assert falls(r["losses"]), r["losses"]
        s = r["summary"]
        assert s["worker_uplink_bytes"] == joined * message  # [Δ_m, g_m, count, fault, stop]
        assert s["downlink_bytes_per_worker"][1] == d * 4 + joined * message  # [x, ĝ, H, fault, stop]
        assert s["cc1"] == 1 + joined
        assert s["control_bytes"] == 0


class _Theta(pl.Callback):
    """Writes each rank's θ_m (``prox_rho``), δ̂ and its optimizer's learning rate at the end."""

    def __init__(self, out: Path) -> None:
        self.out = out

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        a = trainer.strategy.algorithm
        record = {"theta": a.prox_theta(), "delta_hat": a.delta_hat, "lr": trainer.optimizers[0].param_groups[0]["lr"]}
        torch.save(record, self.out / f"theta{trainer.global_rank}.pt")


def test_prox_rho_gives_each_rank_a_prox_term_from_its_own_estimate(tmp_path):
    """``prox_rho``: after its estimates each rank holds θ_m = 1/(2ρ·δ̂_m) from its own δ̂ (held at least the SGD
    step), the ranks' θ differ, and they still share the anchor bit for bit. With ρ so large that 1/(2ρ·δ̂) falls
    under the learning rate, θ_m is the learning rate: the pull never overshoots the round's start."""
    h, steps = 3, 30
    for rho, folder in ((0.5, "half"), (1e6, "huge")):
        out = tmp_path / folder
        out.mkdir()
        strategy = GatedDANEStrategy(start_method="fork", sync="fixed", inner_steps=h, overlap=True, prox_rho=rho)
        _, ranks = fit(strategy, out, max_steps=steps, callbacks=[_Theta(out)])
        for step in range(steps):
            assert torch.equal(ranks[0]["step_params"][step], ranks[1]["step_params"][step]), step
        records = [torch.load(out / f"theta{r}.pt", weights_only=False) for r in range(WORLD)]
        for record, r in zip(records, ranks, strict=True):
            assert falls(r["losses"]), r["losses"]
            assert record["theta"] is not None and record["theta"].shape == (1,)
            expected = (1.0 / (2.0 * rho * record["delta_hat"])).clamp(min=record["lr"])
            assert torch.equal(record["theta"], expected)
        if rho == 0.5:
            assert not torch.equal(records[0]["theta"], records[1]["theta"])  # each rank's own estimate
            assert all(float(rec["theta"][0]) > rec["lr"] for rec in records)
        else:
            assert all(float(rec["theta"][0]) == rec["lr"] for rec in records)


class _Estimate(pl.Callback):
    """Writes each rank's δ̂, the noise of the message in flight, and whether overlap was in force, at the end."""

    def __init__(self, out: Path) -> None:
        self.out = out

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        a = trainer.strategy.algorithm
        record = {"delta_hat": a.delta_hat, "noise": a.outbox_noise, "overlap": a.overlap}
        torch.save(record, self.out / f"estimate{trainer.global_rank}.pt")


def test_debiased_estimate_runs_under_the_default_overlap_and_sends_nothing_more(tmp_path):
    """``delta_estimate="debiased"`` no longer rules overlap out: the defaults under SGD turn it on, the noise of
    a round's gradients stays on the rank with its message, and the estimate taken with the reply subtracts it.
    Over fixed rounds δ̂ steers nothing, so the raw and debiased runs train bit for bit alike, send the same bytes,
    and the debiased δ̂ is the smaller on every rank."""
    h, steps = 3, 30
    runs = {}
    for estimate in ("raw", "debiased"):
        out = tmp_path / estimate
        out.mkdir()
        strategy = GatedDANEStrategy(start_method="fork", sync="fixed", inner_steps=h, delta_estimate=estimate)
        _, ranks = fit(strategy, out, max_steps=steps, callbacks=[_Estimate(out)])
        records = [torch.load(out / f"estimate{r}.pt", weights_only=False) for r in range(WORLD)]
        runs[estimate] = ranks, records
    (raw_ranks, raw), (ranks, debiased) = runs["raw"], runs["debiased"]
    for step in range(steps):
        assert torch.equal(ranks[0]["step_params"][step], raw_ranks[0]["step_params"][step]), step
    for rank in range(WORLD):
        assert debiased[rank]["overlap"] and raw[rank]["overlap"]
        bytes_of = lambda r: {k: v for k, v in r["summary"].items() if k != "comm_time_s"}  # noqa: E731
        assert bytes_of(ranks[rank]) == bytes_of(raw_ranks[rank])  # the noise is not sent
        assert raw[rank]["noise"] is None and bool((debiased[rank]["noise"] > 0).all())
        assert bool((debiased[rank]["delta_hat"] < raw[rank]["delta_hat"]).all()), (debiased[rank], raw[rank])


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"inner_steps": 0}, "inner_steps"),
        ({"sync": "never"}, "sync"),
        ({"preconditioner": "global"}, "preconditioner"),
        ({"outer": "extrapolate"}, "beta"),
        ({"outer_momentum": 1.0}, "outer_momentum"),
        ({"grad_compressor": "randk"}, "grad_compressor"),
        ({"bucket_cap_mb": 1}, "bucket_cap_mb"),
        ({"overlap": True, "correction": "fresh"}, "correction"),
        ({"overlap": True, "compressor": "topk"}, "compressor"),
        ({"message_dtype": "bf16", "correction": "fresh"}, "correction"),
        ({"overlap": False, "eager": "share"}, "eager"),
        ({"correction_memory": 1.0}, "correction_memory"),
        ({"prox_rho": 0.0}, "prox_rho"),
        ({"prox_rho": 1.0, "delta": 0.5}, "prox_rho"),
    ],
)
def test_options_are_validated_up_front(options, field):
    with pytest.raises(OptionError) as info:
        GatedDANEStrategy(**options)
    assert info.value.field == field


def test_registered_names():
    import lightning.pytorch as pl

    trainer = pl.Trainer(strategy="gated_dane_fork", accelerator="cpu", devices=2, logger=False)
    assert isinstance(trainer.strategy, GatedDANEStrategy)
