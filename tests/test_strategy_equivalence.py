"""Lightning strategies run the simulator's algorithms: same iterates on a full-batch convex problem; exact resume."""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
import pytest
import torch
from _strategy_utils import Recorder, read_ranks, trainer
from lightning.pytorch.callbacks import Callback
from torch.utils.data import DataLoader, TensorDataset

from lit_commeff.algorithms import ProblemOracle
from lit_commeff.algorithms.baselines import DIANA, EF21
from lit_commeff.algorithms.olga import EFOLGA, OLGA
from lit_commeff.algorithms.prox import OptimizerProx
from lit_commeff.compression import build
from lit_commeff.problems import synthetic_ridge
from lit_commeff.strategy import CompressedStrategy, EFOLGAStrategy, OLGAStrategy
from lit_commeff.transport import SimulatorTransport

LR, STEPS_S, ROUNDS = 0.05, 2, 24


class RidgeModule(pl.LightningModule):
    """``f_m(w) = (1/n)||A_m w − b_m||² + λ||w||²`` on rank m's whole shard (one batch = the shard)."""

    def __init__(self, A: torch.Tensor, b: torch.Tensor, lam: float) -> None:
        super().__init__()
        self.A, self.b, self.lam = A, b, lam
        self.w = torch.nn.Parameter(torch.zeros(A.shape[-1], dtype=torch.float64))

    def train_dataloader(self) -> DataLoader:
        r = self.trainer.global_rank
        return DataLoader(TensorDataset(self.A[r], self.b[r]), batch_size=self.A.shape[1])

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        a, y = batch
        return (a @ self.w - y).square().mean() + self.lam * self.w.square().sum()

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=LR)


def _simulate(problem, cls, compressor, rounds, **kwargs) -> list[torch.Tensor]:
    transport = SimulatorTransport(num_workers=problem.num_workers, dim=problem.dim, dtype=torch.float64)

    def hub_loss(x: torch.Tensor) -> torch.Tensor:
        return (problem.A[0] @ x - problem.b[0]).square().mean() + problem.lam * x.square().sum()

    prox = OptimizerProx(hub_loss, steps=STEPS_S, optimizer=lambda params: torch.optim.SGD(params, lr=LR))
    oracle = ProblemOracle(problem, transport.workers, hub=0, prox=prox)
    alg = cls(transport=transport, oracle=oracle, x0=torch.zeros(problem.dim, dtype=torch.float64),
              compressor=compressor, **kwargs)  # fmt: skip
    outputs = []
    for _ in range(rounds):
        alg.step()
        outputs.append(alg.output().clone())
    return outputs


def _lightning(problem, strategy, tmp_path, rounds, **kw) -> list[dict[str, Any]]:
    rec = Recorder(tmp_path, every_step_params=True)
    t = trainer(strategy, devices=problem.num_workers, max_steps=rounds, callbacks=[rec],
                precision="64-true", use_distributed_sampler=False, **kw)  # fmt: skip
    t.fit(RidgeModule(problem.A, problem.b, problem.lam))
    return read_ranks(tmp_path, problem.num_workers)


def _olga_kwargs(problem) -> dict[str, Any]:
    return {"mu": problem.mu, "theta": 1 / (2 * problem.delta), "p": 0.3, "seed": 3}


@pytest.mark.parametrize(
    ("workers", "same_batch", "accelerate", "output"),
    [(2, False, True, "y"), (4, False, True, "last"), (2, True, True, "y"), (3, False, False, "last")],
)
def test_olga_strategy_reproduces_the_simulator(workers, same_batch, accelerate, output, tmp_path):
    problem = synthetic_ridge(workers=workers, n=24, dim=6, similarity=0.2, seed=1)
    compressor = build("randk", k=2)
    options = {**_olga_kwargs(problem), "same_batch": same_batch, "accelerate": accelerate, "output": output}
    expected = _simulate(problem, OLGA, compressor, ROUNDS, **options)
    strategy = OLGAStrategy(start_method="fork", compressor=compressor, inner_steps=STEPS_S, **options)
    ranks = _lightning(problem, strategy, tmp_path, ROUNDS)
    got = torch.tensor(ranks[0]["step_params"], dtype=torch.float64)
    assert got.shape == (ROUNDS, problem.dim)
    torch.testing.assert_close(got, torch.stack(expected), atol=1e-6, rtol=0)
    assert not torch.equal(got[-1], got[0])  # the run moved
    for r in ranks[1:]:  # every rank holds the output iterate
        assert r["params"] == ranks[0]["params"]


@pytest.mark.parametrize(
    ("cls", "strategy_cls", "compressor", "downlink"),
    [(EFOLGA, EFOLGAStrategy, ("topk", {"k": 2}), None), (EFOLGA, EFOLGAStrategy, ("topk", {"k": 2}), 0.5),
     (DIANA, CompressedStrategy, ("randk", {"k": 2}), None), (EF21, CompressedStrategy, ("topk", {"k": 2}), None)],
)  # fmt: skip
def test_other_strategies_reproduce_the_simulator(cls, strategy_cls, compressor, downlink, tmp_path):
    """``downlink``: EF-OLGA's inner broadcasts compressed too (TopK of this ratio, ``downlink_compressor``)."""
    problem = synthetic_ridge(workers=2, n=24, dim=6, similarity=0.2, seed=1)
    name, options = compressor
    if strategy_cls is CompressedStrategy:
        sim_kwargs = {"L": 1.0, "mu": 1.0, "gamma": LR, "seed": 3}
        if cls is DIANA:
            sim_kwargs["alpha"] = 1 / (build(name, **options).omega(problem.dim) + 2)
        strategy = strategy_cls(start_method="fork", compressor=build(name, **options), seed=3)
    else:
        sim_kwargs = {**_olga_kwargs(problem), "output": "last"}
        down = {"downlink_compressor": "topk", "downlink_compressor_options": {"ratio": downlink}} if downlink else {}
        strategy = strategy_cls(
            start_method="fork", compressor=build(name, **options), inner_steps=STEPS_S, **sim_kwargs, **down
        )
        if downlink:
            sim_kwargs["downlink_compressor"] = build("topk", ratio=downlink)
    expected = _simulate(problem, cls, build(name, **options), ROUNDS, **sim_kwargs)
    ranks = _lightning(problem, strategy, tmp_path, ROUNDS)
    got = torch.tensor(ranks[0]["step_params"], dtype=torch.float64)
    torch.testing.assert_close(got, torch.stack(expected), atol=1e-6, rtol=0)
    for r in ranks[1:]:  # every rank holds the same model
        assert r["params"] == ranks[0]["params"]


class _SaveAt(Callback):
    """Save a checkpoint right after global step ``step`` (mid inner epoch)."""

    def __init__(self, step: int, path: str) -> None:
        self.step, self.path = step, path

    def on_train_batch_end(self, trainer: pl.Trainer, *args: Any) -> None:
        if trainer.global_step == self.step:
            trainer.save_checkpoint(self.path)


@pytest.mark.parametrize("strategy_cls", [OLGAStrategy, EFOLGAStrategy, CompressedStrategy])
def test_stop_and_resume_continues_the_identical_trajectory(strategy_cls, tmp_path):
    problem = synthetic_ridge(workers=2, n=24, dim=6, similarity=0.2, seed=1)
    options = {"compressor": "topk", "compressor_options": {"k": 2}}
    if strategy_cls is OLGAStrategy:
        options = {"compressor": "randk", "compressor_options": {"k": 2}, "p": 0.3}
    elif strategy_cls is EFOLGAStrategy:
        options["p"] = 0.3

    def make():
        return strategy_cls(start_method="fork", seed=5, **options)

    ckpt = str(tmp_path / "mid.ckpt")
    (tmp_path / "full").mkdir()
    rec = Recorder(tmp_path / "full")
    t = trainer(make(), devices=2, max_steps=ROUNDS, callbacks=[rec, _SaveAt(11, ckpt)], precision="64-true",
                use_distributed_sampler=False)  # fmt: skip
    t.fit(RidgeModule(problem.A, problem.b, problem.lam))
    full = read_ranks(tmp_path / "full", 2)
    if strategy_cls is not CompressedStrategy:
        assert full[0]["phases"][11] in ("inner", "error", "y")  # the checkpoint falls inside an outer iteration

    (tmp_path / "resumed").mkdir()
    rec = Recorder(tmp_path / "resumed")
    t = trainer(make(), devices=2, max_steps=ROUNDS, callbacks=[rec], precision="64-true",
                use_distributed_sampler=False)  # fmt: skip
    t.fit(RidgeModule(problem.A, problem.b, problem.lam), ckpt_path=ckpt)
    resumed = read_ranks(tmp_path / "resumed", 2)
    assert len(resumed[0]["losses"]) == ROUNDS - 11
    for a, b in zip(full, resumed, strict=True):
        assert a["params"] == b["params"]  # bitwise
        assert a["summary"]["uplink_bytes"] == b["summary"]["uplink_bytes"]
        assert a["summary"]["downlink_bytes"] == b["summary"]["downlink_bytes"]
        assert a["summary"]["cc3"] == b["summary"]["cc3"]
    checkpoint = torch.load(ckpt, weights_only=True)
    assert checkpoint["lit_commeff"]["world_size"] == 2
