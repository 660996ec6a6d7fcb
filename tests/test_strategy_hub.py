"""OLGA / EF-OLGA / compressed strategies in real multi-process Lightning runs (gloo, forked CPU ranks)."""

from __future__ import annotations

import lightning.pytorch as pl
import pytest
import torch
from _strategy_utils import Recorder, TinyRegressor, read_ranks, regression_data, trainer
from lightning.pytorch.strategies import StrategyRegistry
from torch.utils.data import DataLoader

from lit_commeff.compression import build
from lit_commeff.strategy import COMM_METRICS, CompressedStrategy, EFOLGAStrategy, OLGAStrategy

STRATEGIES = {"olga": OLGAStrategy, "ef_olga": EFOLGAStrategy, "compressed": CompressedStrategy}


def _fit(strategy, tmp_path, *, model=None, devices=2, max_steps=40, batch_size=32, **kw):
    pl.seed_everything(0)
    rec = Recorder(tmp_path)
    t = trainer(strategy, devices=devices, max_steps=max_steps, callbacks=[rec], **kw)
    t.fit(model or TinyRegressor(), DataLoader(regression_data(), batch_size=batch_size, shuffle=True))
    return t, read_ranks(tmp_path, devices)


@pytest.mark.parametrize("name", ["olga", "ef_olga", "compressed"])
def test_registered_name_trains_and_loss_falls(name, tmp_path):
    assert type(StrategyRegistry.get(name)) is STRATEGIES[name]
    t, ranks = _fit(f"{name}_fork", tmp_path, max_steps=60)
    assert type(t.strategy) is STRATEGIES[name]
    losses = ranks[0]["losses"]
    assert sum(losses[-10:]) / 10 < 0.5 * sum(losses[:5]) / 5, losses
    # every rank holds the same model (the output iterate) after training
    assert ranks[0]["params"] == ranks[1]["params"]
    for metric in COMM_METRICS:
        assert metric in t.callback_metrics, metric
    # rank-0-only metrics: rank 1 does not pay for self.log calls whose values are dropped
    assert not [k for k in ranks[1]["metrics"] if k.startswith("comm/")], ranks[1]["metrics"]


@pytest.mark.parametrize("name", ["olga", "ef_olga"])
def test_uplink_bytes_are_the_payload_sizes(name, tmp_path):
    """Logged bytes = ledger bytes = dense rounds × d·4 + compressed rounds × the compressor's wire size."""
    strategy = STRATEGIES[name](start_method="fork", p=0.2)
    t, ranks = _fit(strategy, tmp_path, max_steps=30)
    summary = ranks[0]["summary"]
    d = summary["dim"]
    compressor = strategy.compressor
    phases = ranks[0]["phases"]
    dense = sum(ph in ("anchor", "y", "error") for ph in phases)
    compressed = sum(ph == "inner" for ph in phases)
    assert dense + compressed == 30 and compressed > 0 and dense > 0
    guard = 30 * 4  # the non-finite guard: each worker sends one int32 flag per step (control traffic) ...
    expected = dense * d * 4 + compressed * compressor.wire_nbytes((d,), torch.float32) + guard
    assert summary["control_bytes"] == guard + 30 * 2 * 4  # ... and receives every rank's flag back
    assert summary["worker_uplink_bytes"] == expected
    assert t.callback_metrics["comm/uplink_bytes"].item() == pytest.approx(expected)
    # the hub sends nothing: the ledger's total is one worker's bytes
    assert summary["uplink_bytes"] == expected
    assert summary["uplink_bytes_per_worker"][0] == 0


def test_compressed_family_follows_the_compressor(tmp_path):
    assert CompressedStrategy(compressor="randk", compressor_options={"ratio": 0.1}).method == "diana"
    assert CompressedStrategy().method == "ef21"
    strategy = CompressedStrategy(start_method="fork", compressor="randk", compressor_options={"ratio": 0.25})
    _, ranks = _fit(strategy, tmp_path, max_steps=20)
    d = ranks[0]["summary"]["dim"]
    guard = 4  # the non-finite guard: one int32 flag per worker per step
    assert ranks[0]["summary"]["worker_uplink_bytes"] == 20 * (
        build("randk", ratio=0.25).wire_nbytes((d,), torch.float32) + guard
    )


def test_lightning_features_work_together(tmp_path):
    """Clipping, bf16 autocast, two param groups, a frozen layer, a scheduler, validation with sync_dist, BatchNorm."""
    model = TinyRegressor(batchnorm=True, freeze_first=True, two_groups=True, scheduler=True, validate=True)
    frozen_before = model.net[0].weight.detach().clone()
    pl.seed_everything(0)
    rec = Recorder(tmp_path)
    t = trainer(
        OLGAStrategy(start_method="fork", p=0.25),
        max_steps=40,
        callbacks=[rec],
        gradient_clip_val=0.5,
        precision="bf16-mixed",
        val_check_interval=5,
        limit_val_batches=2,
    )
    data = DataLoader(regression_data(), batch_size=32, shuffle=True)
    t.fit(model, data, DataLoader(regression_data(seed=1), batch_size=64))
    ranks = read_ranks(tmp_path, 2)
    assert ranks[0]["params"] == ranks[1]["params"]
    assert ranks[0]["buffers"] == ranks[1]["buffers"]  # BatchNorm statistics broadcast with the output iterate
    assert torch.equal(t.lightning_module.net[0].weight.detach(), frozen_before)
    n_trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert ranks[0]["summary"]["dim"] == n_trainable
    assert "val_loss" in t.callback_metrics
    assert ranks[0]["losses"][-1] < ranks[0]["losses"][0]


# ----------------------------------------------------------------------------------- setup-time checks
@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"compressor": "topk", "compressor_options": {"ratio": 0.1}}, "compressor: OLGA needs an unbiased"),
        ({"compressor": "topk"}, "compressor: OLGA needs an unbiased"),  # topk takes its config defaults (ratio 0.01)
        ({"theta": -1.0}, "theta"),
        ({"p": 1.5}, "p"),
        ({"inner_steps": 0}, "inner_steps"),
        ({"mu": -0.1}, "mu"),
        ({"preset": "fast"}, "preset"),
        ({"theta": None}, "delta"),
        ({"theta": None, "preset": "auto"}, "delta0"),
        ({"gate": 0.0}, "gate"),
        ({"seed": -3}, "seed"),
        ({"compressor": "randk", "compressor_options": {"ratio": 2.0}}, "ratio"),
        ({"start_method": "thread"}, "start_method"),
        ({"downlink_compressor": "randk", "downlink_compressor_options": {"ratio": 0.1}}, "downlink_compressor"),
        ({"downlink_compressor_options": {"ratio": 0.1}}, "downlink_compressor_options: .* without"),
        (
            {"downlink_compressor": "topk", "downlink_compressor_options": {"ratio": 0.1}, "local_steps": 2},
            "downlink_compressor: local_steps=2",
        ),
    ],
)
def test_olga_options_are_checked_before_any_process_starts(kwargs, field):
    with pytest.raises(ValueError, match=field):
        OLGAStrategy(**kwargs)


def test_ef_olga_rejects_unbiased_and_compressed_rejects_alpha_with_biased():
    with pytest.raises(ValueError, match="compressor: EF-OLGA needs a biased"):
        EFOLGAStrategy(compressor="randk", compressor_options={"ratio": 0.1})
    with pytest.raises(ValueError, match="alpha"):
        CompressedStrategy(compressor="topk", compressor_options={"ratio": 0.1}, alpha=0.5)


def test_single_process_is_rejected(tmp_path):
    # raised while the Trainer is built, before any process starts
    with pytest.raises(ValueError, match=r"devices: OLGAStrategy needs at least 2 processes"):
        trainer(OLGAStrategy(start_method="fork"), devices=1, max_steps=2)


def test_gradient_accumulation_is_rejected_up_front(tmp_path):
    t = trainer(OLGAStrategy(start_method="fork"), max_steps=2, accumulate_grad_batches=2)
    with pytest.raises(Exception, match="accumulate_grad_batches"):
        t.fit(TinyRegressor(), DataLoader(regression_data(), batch_size=32))


class _RankDependentModel(TinyRegressor):
    def __init__(self) -> None:
        super().__init__()

    def setup(self, stage: str) -> None:
        if self.trainer.global_rank == 1:  # a rank that built a different model
            self.net[-1] = torch.nn.Linear(16, 2)


def test_different_models_across_ranks_are_caught(tmp_path):
    t = trainer(OLGAStrategy(start_method="fork"), max_steps=2)
    with pytest.raises(Exception, match="ranks \\[1\\] hold trainable parameters"):
        t.fit(_RankDependentModel(), DataLoader(regression_data(), batch_size=32))


class _Manual(TinyRegressor):
    def __init__(self) -> None:
        super().__init__()
        self.automatic_optimization = False

    def training_step(self, batch, batch_idx):
        return None


def test_manual_optimization_is_rejected(tmp_path):
    t = trainer(CompressedStrategy(start_method="fork"), max_steps=2)
    with pytest.raises(Exception, match="automatic_optimization"):
        t.fit(_Manual(), DataLoader(regression_data(), batch_size=32))


class _SaveAt(pl.Callback):
    def __init__(self, step: int, path: str) -> None:
        self.step, self.path = step, path

    def on_train_batch_end(self, trainer: pl.Trainer, *args) -> None:
        if trainer.global_step == self.step:
            trainer.save_checkpoint(self.path)


@pytest.mark.parametrize(
    ("save_at", "local_steps", "down", "anchor"),
    [(16, 1, None, 1), (8, 1, None, 1), (8, 3, None, 1), (8, 1, "topk", 1), (16, 1, None, 4)],
)
def test_minibatch_resume_is_bitwise(save_at, local_steps, down, anchor, tmp_path):
    """Shuffled minibatches, 8 per epoch per rank, resumed at epoch boundaries (inside OLGA's outer iterations;
    with local steps, inside a round's silent steps).

    Mid-epoch, Lightning restarts the epoch's data unless the DataLoader is resumable (its
    ``state_dict`` interface); the strategy's own state resumes exactly anywhere (see the convex tests).
    """
    ckpt = str(tmp_path / "ckpt.ckpt")

    def run(out, ckpt_path=None, extra=()):
        out.mkdir()
        pl.seed_everything(0)
        rec = Recorder(out)
        strategy = EFOLGAStrategy(
            start_method="fork",
            p=0.25 if anchor == 1 else 0.35,
            local_steps=local_steps,
            downlink_compressor=down,
            downlink_compressor_options={"ratio": 0.1} if down else None,
            anchor_batches=anchor,
        )
        t = trainer(strategy, max_steps=28, callbacks=[rec, *extra])
        t.fit(TinyRegressor(), DataLoader(regression_data(), batch_size=32, shuffle=True), ckpt_path=ckpt_path)
        return read_ranks(out, 2)

    full = run(tmp_path / "full", extra=[_SaveAt(save_at, ckpt)])
    resumed = run(tmp_path / "resumed", ckpt_path=ckpt)
    if anchor > 1:  # p = 0.35 puts an anchor at step 15: the checkpoint holds its first gradient of four
        assert full[0]["phases"][save_at - 1 : save_at + 1] == ["anchor", "anchor_acc"], full[0]["phases"]
    assert len(resumed[0]["losses"]) == 28 - save_at
    assert resumed[0]["losses"] == full[0]["losses"][save_at:]
    assert resumed[0]["params"] == full[0]["params"]


def test_registration_is_idempotent_and_leaves_foreign_names_alone():
    from lightning.pytorch.strategies import DDPStrategy

    from lit_commeff.strategy import register_strategies

    first = register_strategies()
    assert register_strategies() == first  # twice: no error, same names
    assert {"olga", "olga_spawn", "olga_fork", "ef_olga", "compressed"} <= set(first)
    assert StrategyRegistry["olga_fork"]["init_params"] == {"start_method": "fork"}
    registry = type(StrategyRegistry)()
    registry.register("olga", DDPStrategy, description="someone else's")
    names = register_strategies(registry)
    assert "olga" not in names and registry["olga"]["strategy"] is DDPStrategy
    assert registry["ef_olga"]["strategy"] is EFOLGAStrategy


def test_delta_hat_is_logged_after_an_outer_iteration(tmp_path):
    t, _ = _fit(OLGAStrategy(start_method="fork", p=0.5), tmp_path, max_steps=12)
    value = float(t.callback_metrics["comm/delta_hat"])
    assert value == value and value > 0  # finite and positive once a y round has run


@pytest.mark.parametrize("every", [1, 5])
def test_comm_metrics_reach_the_logger_at_lightnings_cadence(every, tmp_path):
    import csv
    import itertools

    from lightning.pytorch.loggers import CSVLogger

    logger = CSVLogger(tmp_path / "logs", name="run", version=0)
    t, ranks = _fit(
        CompressedStrategy(start_method="fork"), tmp_path, max_steps=12, logger=logger, log_every_n_steps=every
    )
    with open(tmp_path / "logs" / "run" / "version_0" / "metrics.csv") as fh:
        rows = list(csv.DictReader(fh))
    logged = [(int(r["step"]), float(r["comm/uplink_bytes"])) for r in rows if r.get("comm/uplink_bytes")]
    steps = [s for s, _ in logged]
    assert steps == (list(range(12)) if every == 1 else [4, 9])  # Lightning writes on steps 5 and 10 of 12
    if every == 1:
        assert logged[-1][1] == ranks[0]["summary"]["worker_uplink_bytes"]  # cumulative: the last is the total
    assert t.callback_metrics["comm/uplink_bytes"] == ranks[0]["summary"]["worker_uplink_bytes"]
    assert all(b > a for (_, a), (_, b) in itertools.pairwise(logged))


def test_diagnostics_are_logged(tmp_path):
    strategy = OLGAStrategy(start_method="fork", p=0.3, diagnostics=True)
    t, _ = _fit(strategy, tmp_path, max_steps=16, log_every_n_steps=1)
    for name in ("ghat_norm", "compression_error", "correction_norm", "anchor_grad_norm", "prox_step", "drift",
                 "outer_G_norm", "outer_step", "z_minus_y"):  # fmt: skip
        value = float(t.callback_metrics[f"olga/{name}"])
        assert value == value and value >= 0, name
    # RandK 10% of an unbiased compressor: relative error about sqrt(d/K - 1) = 3
    assert 1.0 < float(t.callback_metrics["olga/compression_error"]) < 10.0


def test_compressed_downlink_trains_with_fewer_downlink_bytes(tmp_path):
    """EF21-P-style broadcasts: loss falls, every rank holds the same model, the downlink shrinks, uplink stays."""
    options = {"start_method": "fork", "p": 0.25, "diagnostics": True}
    for run in ("dense", "down"):
        (tmp_path / run).mkdir()
    _, dense = _fit(EFOLGAStrategy(**options), tmp_path / "dense", max_steps=40)
    down = EFOLGAStrategy(**options, downlink_compressor="topk", downlink_compressor_options={"ratio": 0.1})
    t, ranks = _fit(down, tmp_path / "down", max_steps=40, log_every_n_steps=1)
    losses = ranks[0]["losses"]
    assert sum(losses[-10:]) / 10 < 0.5 * sum(losses[:5]) / 5, losses
    assert ranks[0]["params"] == ranks[1]["params"]
    ours, theirs = ranks[0]["summary"], dense[0]["summary"]
    assert ours["worker_uplink_bytes"] == theirs["worker_uplink_bytes"]  # same rounds, same uplink messages
    assert ours["worker_downlink_bytes"] < 0.8 * theirs["worker_downlink_bytes"]
    assert float(t.callback_metrics["olga/point_error"]) >= 0
