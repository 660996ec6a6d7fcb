"""Baseline strategies (metered DDP, PowerSGD, DiLoCo) in real 2-process gloo Lightning runs (forked CPU ranks)."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.plugins.precision import MixedPrecision
from lightning.pytorch.strategies import DDPStrategy
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, TensorDataset

from lit_commeff.strategy.ddp_metered import MeteredDDPStrategy
from lit_commeff.strategy.diloco import DiLoCoStrategy
from lit_commeff.strategy.powersgd import PowerSGDStrategy

WORLD = 2
IN, HIDDEN = 8, 64
EPOCH_OF_4 = 128  # samples: 4 batches of 16 per rank and epoch, so step 4 ends an epoch


# ----------------------------------------------------------------------------------- model, data, recording
def dataset(n: int = 256) -> TensorDataset:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, IN, generator=g)
    w = torch.randn(IN, generator=g)
    return TensorDataset(x, (x @ w + 0.1 * torch.randn(n, generator=g)).unsqueeze(-1))


class MLP(pl.LightningModule):
    def __init__(self, *, batchnorm: bool = False, adam: bool = False, lr: float = 0.05) -> None:
        super().__init__()
        layers: list[torch.nn.Module] = [torch.nn.Linear(IN, HIDDEN)]
        if batchnorm:
            layers.append(torch.nn.BatchNorm1d(HIDDEN))
        layers += [torch.nn.Tanh(), torch.nn.Linear(HIDDEN, HIDDEN), torch.nn.Tanh(), torch.nn.Linear(HIDDEN, 1)]
        self.net = torch.nn.Sequential(*layers)
        self.adam, self.lr = adam, lr

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        return torch.nn.functional.mse_loss(self.net(x), y)

    def configure_optimizers(self) -> Any:
        if self.adam:
            return torch.optim.Adam(self.parameters(), lr=self.lr)
        return torch.optim.SGD(self.parameters(), lr=self.lr)


def flat(module: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1).clone() for p in module.parameters()])


class Recorder(pl.Callback):
    """Writes, on every rank at train end, its losses, parameters (per step and final) and ledger to ``out``."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self.losses: list[float] = []
        self.step_params: list[torch.Tensor] = []
        self.batches: list[float] = []

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        self.losses.append(float(outputs["loss"]))
        self.batches.append(float(batch[1].sum()))
        self.step_params.append(flat(pl_module))

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        strategy = trainer.strategy
        record: dict[str, Any] = {
            "losses": self.losses,
            "batches": self.batches,
            "step_params": self.step_params,
            "params": flat(pl_module),
            "buffers": [b.detach().clone() for b in pl_module.buffers()],
        }
        if getattr(strategy, "metering", None) is not None:
            record["summary"] = strategy.comm_summary()
            record["rounds"] = [asdict(r) for r in strategy.metering.ledger.rounds]
        if isinstance(strategy.model, DistributedDataParallel):
            record["ddp"] = strategy.model._get_ddp_logging_data()
        if isinstance(strategy, PowerSGDStrategy):
            record["powersgd_iter"] = strategy.powersgd_state.iter
        torch.save(record, self.out / f"rank{trainer.global_rank}.pt")


class SaveAtStep(pl.Callback):
    """Saves a checkpoint after optimizer step ``step``, where ``ModelCheckpoint(every_n_train_steps=step)`` does.

    (A checkpoint written in ``on_train_end`` resumes wrongly in Lightning 2.6: the restored loop ends the epoch
    after one batch. Resuming mid-epoch restarts the epoch's data, so tests stop at an epoch boundary.)
    """

    def __init__(self, path: Path, step: int) -> None:
        self.path, self.step = path, step

    def on_train_batch_end(self, trainer: pl.Trainer, *_: Any) -> None:
        if trainer.global_step == self.step:
            trainer.save_checkpoint(self.path)  # every rank: our strategies gather per-rank state here


def fit(
    strategy: Any,
    out: Path,
    *,
    model: Callable[[], pl.LightningModule] = MLP,
    max_steps: int,
    n: int = 256,
    ckpt_path: Path | None = None,
    save: Path | None = None,
    **trainer_kw: Any,
) -> tuple[pl.Trainer, list[dict[str, Any]]]:
    out.mkdir(parents=True, exist_ok=True)
    pl.seed_everything(0, verbose=False)  # before building the model: same initial weights in every run
    callbacks: list[pl.Callback] = [Recorder(out), *trainer_kw.pop("callbacks", [])]
    callbacks += [SaveAtStep(save, max_steps)] if save else []
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=WORLD,
        strategy=strategy,
        max_steps=max_steps,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=callbacks,
        **trainer_kw,
    )
    trainer.fit(model(), DataLoader(dataset(n), batch_size=16), ckpt_path=ckpt_path)
    return trainer, [torch.load(out / f"rank{r}.pt", weights_only=False) for r in range(WORLD)]


def assert_resumed_like_uninterrupted(resumed: list[dict], full: list[dict], *, stopped_at: int) -> None:
    """Every rank's losses after the stop, final parameters and buffers, and byte totals equal the straight run's."""
    for r in range(WORLD):
        assert resumed[r]["losses"] == full[r]["losses"][stopped_at:]
        assert torch.equal(resumed[r]["params"], full[r]["params"])
        for a, b in zip(resumed[r]["buffers"], full[r]["buffers"], strict=True):
            assert torch.equal(a, b)
        s, f = resumed[r]["summary"], full[r]["summary"]
        for key in ("worker_uplink_bytes", "cc1", "cc2", "cc3", "steps"):
            assert s[key] == f[key], key


def dense_dim(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def falls(losses: list[float]) -> bool:
    return sum(losses[-5:]) / 5 < 0.5 * sum(losses[:3]) / 3


# ----------------------------------------------------------------------------------- metered DDP
def test_metered_ddp_counts_every_gradient_byte_and_is_ddp(tmp_path):
    steps = 6
    t, ranks = fit(MeteredDDPStrategy(start_method="fork"), tmp_path / "metered", max_steps=steps)
    _, plain = fit(DDPStrategy(start_method="fork"), tmp_path / "plain", max_steps=steps)
    d = dense_dim(MLP())
    for rank in ranks:
        assert "allreduce_hook" in rank["ddp"]["comm_hook"], rank["ddp"]["comm_hook"]
        assert [r["max_worker_bytes"] for r in rank["rounds"]] == [d * 4] * steps
        assert rank["summary"]["worker_uplink_bytes"] == steps * d * 4
        assert rank["summary"]["cc1"] == steps and rank["summary"]["cc3"] == steps
    # the same model on both ranks, bit for bit the model of Lightning's own (hook-less) DDP
    assert torch.equal(ranks[0]["params"], ranks[1]["params"])
    assert torch.equal(ranks[0]["params"], plain[0]["params"])
    assert t.callback_metrics["comm/uplink_bytes"].item() == steps * d * 4


def test_metered_ddp_rejects_lightning_hook_options():
    with pytest.raises(ValueError, match="ddp_comm_hook"):
        MeteredDDPStrategy(ddp_comm_hook=lambda state, bucket: None)


# ----------------------------------------------------------------------------------- PowerSGD
def powersgd_elements(model: torch.nn.Module, rank: int, rate: float = 2.0) -> tuple[int, int, int]:
    """(uncompressed, P, Q) elements per compressed step, from the parameter shapes (PowerSGD, Vogels et al.)."""
    uncompressed = p = q = 0
    for param in model.parameters():
        if param.dim() == 1:
            uncompressed += param.numel()
            continue
        n, m = param.shape[0], param.numel() // param.shape[0]
        r = min(n, m, rank)
        if (n + m) * r * rate < n * m:
            p, q = p + n * r, q + m * r
        else:
            uncompressed += n * m
    return uncompressed, p, q


@pytest.mark.parametrize("rank", [1, 2])
def test_powersgd_hook_runs_on_cpu_and_counts_p_q_and_the_rest(tmp_path, rank):
    steps, start = 30, 2
    t, ranks = fit(PowerSGDStrategy(start_method="fork", rank=rank, start_iter=start), tmp_path, max_steps=steps)
    model = MLP()
    d = dense_dim(model)
    uncompressed, p, q = powersgd_elements(model, rank)
    assert p > 0 and q > 0 and uncompressed > 0
    compressed_bytes = (uncompressed + p + q) * 4
    assert compressed_bytes < d * 4 / 5  # far below dense
    for r in ranks:
        # DDP's own record of the registered hook, read on the rank
        assert "powerSGD_hook" in r["ddp"]["comm_hook"], r["ddp"]["comm_hook"]
        assert r["powersgd_iter"] == steps  # the hook ran once per step (its counter moves at bucket 0)
        per_round = [x["max_worker_bytes"] for x in r["rounds"]]
        assert per_round == [d * 4] * start + [compressed_bytes] * (steps - start)
        s = r["summary"]
        assert set(s["gamma_by_tag"]) == {"dense", "uncompressed", "powersgd_p", "powersgd_q"}
        # gamma per tag = dense bytes / bytes of one such all-reduce
        assert s["gamma_by_tag"]["powersgd_p"] == pytest.approx(d / p)
        assert s["gamma_by_tag"]["powersgd_q"] == pytest.approx(d / q)
        assert s["gamma_by_tag"]["uncompressed"] == pytest.approx(d / uncompressed)
        assert s["worker_uplink_bytes"] == start * d * 4 + (steps - start) * compressed_bytes
        assert falls(r["losses"]), r["losses"]
    # the decompressed gradient is the same on every rank
    assert torch.equal(ranks[0]["params"], ranks[1]["params"])
    assert t.callback_metrics["comm/uplink_bytes"].item() == ranks[0]["summary"]["worker_uplink_bytes"]


def test_powersgd_differs_from_dense_ddp_only_after_start_iter(tmp_path):
    _, psgd = fit(PowerSGDStrategy(start_method="fork", start_iter=3), tmp_path / "p", max_steps=4)
    _, dense = fit(MeteredDDPStrategy(start_method="fork"), tmp_path / "d", max_steps=4)
    for step in range(3):
        assert torch.equal(psgd[0]["step_params"][step], dense[0]["step_params"][step])
    assert not torch.equal(psgd[0]["step_params"][3], dense[0]["step_params"][3])


def test_powersgd_resume_is_bitwise(tmp_path):
    """Stop after compression started (error feedback and warm-start Q in flight), resume, match the full run.

    The resumed DDP starts with its initial bucket layout (parameters in registration order) and rebuilds it
    (gradient-ready order) after one step; the saved per-parameter state must follow both layouts.
    """
    strategy = lambda: PowerSGDStrategy(start_method="fork", rank=2, start_iter=2)  # noqa: E731
    _, full = fit(strategy(), tmp_path / "full", max_steps=8, n=EPOCH_OF_4)
    ckpt = tmp_path / "part.ckpt"
    fit(strategy(), tmp_path / "part", max_steps=4, save=ckpt, n=EPOCH_OF_4)
    _, resumed = fit(strategy(), tmp_path / "resumed", max_steps=8, ckpt_path=ckpt, n=EPOCH_OF_4)
    for r in range(WORLD):
        assert resumed[r]["losses"] == full[r]["losses"][4:]
        assert torch.equal(resumed[r]["params"], full[r]["params"])
        assert resumed[r]["powersgd_iter"] == full[r]["powersgd_iter"] == 8
        assert resumed[r]["summary"]["worker_uplink_bytes"] == full[r]["summary"]["worker_uplink_bytes"]


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"start_iter": 1}, "start_iter"),
        ({"start_iter": 0}, "start_iter"),
        ({"rank": 0}, "rank"),
        ({"rank": 1.5}, "rank"),
        ({"min_compression_rate": 0.0}, "min_compression_rate"),
        ({"min_compression_rate": math.inf}, "min_compression_rate"),
        ({"seed": -1}, "seed"),
        ({"ddp_comm_state": object()}, "ddp_comm_state"),
    ],
)
def test_powersgd_options_are_validated_up_front(options, field):
    with pytest.raises(ValueError, match=f"^{field}: "):
        PowerSGDStrategy(**options)


def test_powersgd_start_iter_message_names_the_fix():
    with pytest.raises(ValueError, match=r"start_iter: start_iter=1 is invalid;.*use start_iter=2 or more"):
        PowerSGDStrategy(start_iter=1)


# ----------------------------------------------------------------------------------- DiLoCo
def test_diloco_trains_locally_syncs_every_h_steps_and_counts_delta(tmp_path):
    h, steps = 3, 24
    t, ranks = fit(
        DiLoCoStrategy(start_method="fork", inner_steps=h), tmp_path, model=lambda: MLP(batchnorm=True), max_steps=steps
    )
    model = MLP(batchnorm=True)
    d = dense_dim(model)
    float_buffers = sum(b.numel() * 4 for b in model.buffers() if b.is_floating_point())
    setup = d * 4 + sum(b.numel() * b.element_size() for b in model.buffers())
    syncs = steps // h
    for step in range(steps):
        same = torch.equal(ranks[0]["step_params"][step], ranks[1]["step_params"][step])
        assert same == ((step + 1) % h == 0), step  # identical right after a sync, local replicas in between
    for r in ranks:
        assert falls(r["losses"]), r["losses"]
        s = r["summary"]
        assert s["worker_uplink_bytes"] == syncs * (d * 4 + float_buffers)
        assert s["downlink_bytes_per_worker"] == [0, setup]
        assert s["cc1"] == 1 + steps  # the setup broadcast, then one round per optimizer step
        per_round = [x["max_worker_bytes"] for x in r["rounds"][1:]]
        assert per_round == [(d * 4 + float_buffers) if (i + 1) % h == 0 else 0 for i in range(steps)]
        assert set(s["gamma_by_tag"]) == {"delta", "buffers"}
        assert s["gamma_by_tag"]["delta"] == pytest.approx(1.0)
    assert torch.equal(ranks[0]["buffers"][0], ranks[1]["buffers"][0])  # running means averaged at the sync
    assert t.callback_metrics["comm/uplink_bytes"].item() == syncs * (d * 4 + float_buffers)


def test_diloco_with_one_inner_step_and_plain_averaging_is_synchronous_sgd(tmp_path):
    steps = 5
    _, diloco = fit(
        DiLoCoStrategy(start_method="fork", inner_steps=1, outer_lr=1.0, outer_momentum=0.0),
        tmp_path / "diloco",
        max_steps=steps,
    )
    _, ddp = fit(DDPStrategy(start_method="fork"), tmp_path / "ddp", max_steps=steps)
    assert not torch.equal(ddp[0]["step_params"][0], ddp[0]["step_params"][-1])  # training moved the parameters
    for r in range(WORLD):
        for step in range(steps):
            torch.testing.assert_close(diloco[r]["step_params"][step], ddp[0]["step_params"][step], rtol=0, atol=1e-6)


def test_diloco_resume_between_syncs_is_bitwise(tmp_path):
    """H=3, stop after step 4 (one step past a sync, ranks hold different local models and Adam states)."""
    strategy = lambda: DiLoCoStrategy(start_method="fork", inner_steps=3)  # noqa: E731
    model = lambda: MLP(batchnorm=True, adam=True, lr=0.01)  # noqa: E731
    _, full = fit(strategy(), tmp_path / "full", model=model, max_steps=8, n=EPOCH_OF_4)
    ckpt = tmp_path / "part.ckpt"
    _, part = fit(strategy(), tmp_path / "part", model=model, max_steps=4, save=ckpt, n=EPOCH_OF_4)
    assert not torch.equal(part[0]["params"], part[1]["params"])
    _, resumed = fit(strategy(), tmp_path / "resumed", model=model, max_steps=8, ckpt_path=ckpt, n=EPOCH_OF_4)
    assert_resumed_like_uninterrupted(resumed, full, stopped_at=4)


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"inner_steps": 0}, "inner_steps"),
        ({"inner_steps": 2.0}, "inner_steps"),
        ({"inner_steps": True}, "inner_steps"),
        ({"outer_lr": 0.0}, "outer_lr"),
        ({"outer_lr": math.nan}, "outer_lr"),
        ({"outer_lr": math.inf}, "outer_lr"),
        ({"outer_momentum": 1.0}, "outer_momentum"),
        ({"outer_momentum": -0.1}, "outer_momentum"),
        ({"bucket_cap_mb": 1}, "bucket_cap_mb"),
    ],
)
def test_diloco_options_are_validated_up_front(options, field):
    with pytest.raises(ValueError, match=f"^{field}: {field}=" if field != "bucket_cap_mb" else f"^{field}: "):
        DiLoCoStrategy(**options)


class _Manual(MLP):
    def __init__(self) -> None:
        super().__init__()
        self.automatic_optimization = False

    def training_step(self, batch: Any, batch_idx: int) -> None:
        return None


class _TwoOptimizers(MLP):
    def configure_optimizers(self) -> Any:
        return [torch.optim.SGD(self.net[0].parameters(), lr=0.1), torch.optim.SGD(self.net[2].parameters(), lr=0.1)]


@pytest.mark.parametrize(
    ("model", "trainer_kw", "message"),
    [
        (_Manual, {}, "automatic_optimization: DiLoCoStrategy"),
        # Lightning itself refuses several optimizers under automatic optimization (DiLoCo checks again after setup)
        (_TwoOptimizers, {}, "multiple optimizers is only supported with manual optimization"),
        (MLP, {"accumulate_grad_batches": 2}, "accumulate_grad_batches: .* raise the batch size or inner_steps"),
        (
            MLP,
            {"plugins": [MixedPrecision("16-mixed", "cpu", scaler=torch.amp.GradScaler("cpu"))]},
            "precision: .*bf16-mixed",
        ),
    ],
    ids=["manual", "two_optimizers", "accumulate", "fp16_scaler"],
)
def test_diloco_rejects_unsupported_training_setups(tmp_path, model, trainer_kw, message):
    with pytest.raises(Exception, match=message):
        fit(DiLoCoStrategy(start_method="fork"), tmp_path, model=model, max_steps=2, **trainer_kw)


class _Big(MLP):
    """About 2 MiB of gradients: more than DDP's default first bucket (1 MiB)."""

    def __init__(self) -> None:
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Linear(IN, 720), torch.nn.Tanh(), torch.nn.Linear(720, 720),
                                       torch.nn.Tanh(), torch.nn.Linear(720, 1))  # fmt: skip


def test_powersgd_on_gloo_does_not_deadlock_with_a_model_above_one_bucket(tmp_path):
    from datetime import timedelta

    strategy = PowerSGDStrategy(start_method="fork", rank=2, timeout=timedelta(seconds=60))
    _, ranks = fit(strategy, tmp_path, model=_Big, max_steps=6)
    assert ranks[0]["powersgd_iter"] == 6
    assert torch.equal(ranks[0]["params"], ranks[1]["params"])
    with pytest.raises(Exception, match="bucket_cap_mb: bucket_cap_mb=1 splits"):  # raised in the ranks
        fit(PowerSGDStrategy(start_method="fork", bucket_cap_mb=1), tmp_path / "bad", model=_Big, max_steps=2)


class _ValRecorder(pl.Callback):
    """Records, on every rank, the parameters the model holds while it validates."""

    def __init__(self, out: Path) -> None:
        self.out, self.seen = out, []

    def on_validation_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *_: Any) -> None:
        if not trainer.sanity_checking:
            self.seen.append(flat(pl_module))

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        # after the strategy's on_train_end, which loads θ
        torch.save({"seen": self.seen, "final": flat(pl_module)}, self.out / f"val{trainer.global_rank}.pt")


class _Validating(MLP):
    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        self.log("val_loss", torch.nn.functional.mse_loss(self.net(x), y), sync_dist=True)


def test_diloco_validates_and_returns_the_global_model(tmp_path):
    """Off the sync grid the ranks' replicas differ, but validation, checkpoints and the fitted model are θ."""
    pl.seed_everything(0, verbose=False)
    rec = _ValRecorder(tmp_path)
    trainer = pl.Trainer(
        accelerator="cpu", devices=WORLD, strategy=DiLoCoStrategy(start_method="fork", inner_steps=3), max_steps=8,
        logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        callbacks=[rec], val_check_interval=4, limit_val_batches=1, num_sanity_val_steps=0,
    )  # fmt: skip
    data = DataLoader(dataset(256), batch_size=16)
    trainer.fit(_Validating(), data, DataLoader(dataset(64), batch_size=16))
    runs = [torch.load(tmp_path / f"val{r}.pt", weights_only=True) for r in range(WORLD)]
    assert len(runs[0]["seen"]) == 2  # after steps 4 and 8; step 4 is not a sync step (H = 3)
    for a, b in zip(runs[0]["seen"], runs[1]["seen"], strict=True):
        assert torch.equal(a, b)
    assert torch.equal(runs[0]["final"], runs[1]["final"])


class MLPWithExtraState(MLP):
    """A model whose state_dict holds a non-tensor entry (``get_extra_state``), like the throughput recipe's."""

    def get_extra_state(self) -> Any:
        return {"transform": "log1p", "scale": 2.0}

    def set_extra_state(self, state: Any) -> None:
        self.extra = state


def test_diloco_checkpoints_a_model_with_non_tensor_extra_state(tmp_path):
    """Regression: DiLoCo cloned every state_dict value as a tensor and crashed on a dict (throughput recipe)."""
    ckpt = tmp_path / "extra.ckpt"
    fit(DiLoCoStrategy(start_method="fork", inner_steps=2), tmp_path / "run", model=MLPWithExtraState, max_steps=3,
        save=ckpt)  # fmt: skip
    state = torch.load(ckpt, weights_only=True)["state_dict"]
    assert state["_extra_state"] == {"transform": "log1p", "scale": 2.0}
