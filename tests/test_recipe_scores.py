"""The recipes' validation scores: torchmetrics' values, from one state gathered once a pass (gloo)."""

from __future__ import annotations

import json
import os
from datetime import timedelta
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
import torch.distributed as dist
import torch.nn.functional as F
from _cli_utils import spawn_reports
from torchmetrics import MeanAbsoluteError, SymmetricMeanAbsolutePercentageError
from torchmetrics.classification import BinaryAUROC, BinaryAveragePrecision, BinaryF1Score

from lit_commeff.recipes import CreditClassifier, CreditDataModule
from lit_commeff.recipes.scores import Score
from lit_commeff.recipes.tabular.metrics import SCORES, BinaryScores
from lit_commeff.recipes.throughput.metrics import SCORES as FORECAST_SCORES
from lit_commeff.recipes.throughput.metrics import ForecastScores

WORLD = 2
COLLECTIVES = ("barrier", "all_gather", "all_gather_into_tensor", "all_reduce", "broadcast", "gather")


def _batches(seed: int, sizes: tuple[int, ...]) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Probabilities (rounded to 0.05, so with ties), labels and per-sample losses, one batch per size."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for n in sizes:
        probs = (torch.rand(n, generator=g) * 20).round() / 20
        target = (torch.rand(n, generator=g) < 0.3).long()
        loss = F.binary_cross_entropy(probs.clamp(0.01, 0.99), target.float(), reduction="none")
        out.append((probs, target, loss))
    return out


def _expected(batches: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]) -> dict[str, float]:
    """torchmetrics' class metrics over the batches, and the mean loss per sample."""
    metrics = {"auroc": BinaryAUROC(), "ap": BinaryAveragePrecision(), "f1": BinaryF1Score()}
    for probs, target, _ in batches:
        for metric in metrics.values():
            metric.update(probs, target)
    values = {name: float(metric.compute()) for name, metric in metrics.items()}
    values["loss"] = float(torch.cat([loss for *_, loss in batches]).mean())
    return values


def test_the_scores_are_torchmetrics_values_over_every_batch():
    batches = _batches(0, (40, 25, 7))
    scores = BinaryScores()
    views = {name: Score(scores, name) for name in SCORES}
    for probs, target, loss in batches:
        scores.update(probs, target, loss)
        for view in views.values():
            view.update()
    expected = _expected(batches)
    assert {name: float(value) for name, value in scores.compute().items()} == pytest.approx(expected, abs=1e-6)
    assert {name: float(view.compute()) for name, view in views.items()} == pytest.approx(expected, abs=1e-6)
    scores.reset()  # a new pass: only its own samples count
    scores.update(*batches[1])
    assert float(scores.compute()["loss"]) == pytest.approx(float(batches[1][2].mean()))


def test_the_scores_name_what_is_wrong():
    with pytest.raises(ValueError, match=r"threshold=1\.5 is not a probability"):
        BinaryScores(threshold=1.5)
    with pytest.raises(ValueError, match=r"name='mae' is not a value of BinaryScores; use one of"):
        Score(BinaryScores(), "mae")
    with pytest.raises(ValueError, match=r"hold \[3, 3, 2\] values; pass one value per sample"):
        BinaryScores().update(torch.rand(3), torch.ones(3), torch.rand(2))


def _forecasts(seed: int, sizes: tuple[int, ...]) -> list[tuple[torch.Tensor, ...]]:
    """Forecasts, true and last values (Mbit/s, some zeros) and elementwise losses, one batch per size."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for n in sizes:
        target = (torch.rand(n, 2, generator=g) * 50).round()  # zeros included: SMAPE's floor
        preds = (target + torch.randn(n, 2, generator=g) * 5).clamp_min(0.0)
        last = (target + torch.randn(n, 2, generator=g) * 8).clamp_min(0.0)
        out.append((preds, target, last, F.smooth_l1_loss(preds / 10, target / 10, reduction="none")))
    return out


def _forecast_expected(batches: list[tuple[torch.Tensor, ...]]) -> dict[str, float]:
    """torchmetrics' MAE, SMAPE and persistence MAE over the batches, and the mean loss per value."""
    mae, smape, persistence = MeanAbsoluteError(), SymmetricMeanAbsolutePercentageError(), MeanAbsoluteError()
    for preds, target, last, _ in batches:
        mae.update(preds, target)
        smape.update(preds, target)
        persistence.update(last, target)
    loss = torch.cat([loss.reshape(-1) for *_, loss in batches]).mean()
    values = {"mae": mae, "smape": smape, "mae_persistence": persistence}
    return {**{name: float(metric.compute()) for name, metric in values.items()}, "loss": float(loss)}


def test_the_forecast_scores_are_torchmetrics_values_over_every_batch():
    batches = _forecasts(0, (30, 9))
    scores = ForecastScores()
    views = {name: Score(scores, name) for name in FORECAST_SCORES}
    for batch in batches:
        scores.update(*batch)
        for view in views.values():
            view.update()
    expected = _forecast_expected(batches)
    assert {name: float(view.compute()) for name, view in views.items()} == pytest.approx(expected, rel=1e-6)
    with pytest.raises(ValueError, match=r"preds \(3,\), target \(3,\) and last \(2,\) differ in shape"):
        scores.update(torch.rand(3), torch.rand(3), torch.rand(2), torch.rand(3))
    with pytest.raises(ValueError, match=r"name='auroc' is not a value of ForecastScores; use one of"):
        Score(scores, "auroc")


def _worker(rank: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=WORLD, timeout=timedelta(seconds=60))
    try:
        calls: list[str] = []
        originals = {name: getattr(dist, name) for name in COLLECTIVES}

        def counted(name: str):
            def call(*args, **kwargs):
                calls.append(name)
                return originals[name](*args, **kwargs)

            return call

        sizes = (30, 11) if rank == 0 else (17,)  # uneven: the gather of the rows pads and trims
        report = {}
        for kind, scores, batches in (
            ("binary", BinaryScores(), _batches(rank, sizes)),
            ("forecast", ForecastScores(), _forecasts(rank, sizes)),
        ):
            views = [Score(scores, name) for name in scores.names]
            for batch in batches:
                scores.update(*batch)
                for view in views:
                    view.update()
            calls.clear()
            for name in COLLECTIVES:
                setattr(dist, name, counted(name))
            try:  # as Lightning logs them: each Score computed in turn
                values = {view.name: float(view.compute()) for view in views}
            finally:
                for name, fn in originals.items():
                    setattr(dist, name, fn)
            report[kind] = {"values": values, "calls": list(calls)}
        Path(f"{out}.{rank}").write_text(json.dumps(report))
    finally:
        dist.destroy_process_group()


def test_every_rank_computes_the_scores_of_all_samples_from_one_gather(tmp_path):
    reports = spawn_reports(_worker, tmp_path, WORLD)
    expected = {
        "binary": _expected(_batches(0, (30, 11)) + _batches(1, (17,))),
        "forecast": _forecast_expected(_forecasts(0, (30, 11)) + _forecasts(1, (17,))),
    }
    for report in reports:
        for kind, values in expected.items():
            assert report[kind]["values"] == pytest.approx(values, rel=1e-6, abs=1e-6), kind
            # one state: a barrier, the sizes and the values (torchmetrics' gather) for the four values of a pass
            assert len(report[kind]["calls"]) == 3, report[kind]["calls"]


def test_a_validation_pass_counts_its_own_predictions_only():
    dm = CreditDataModule(synthetic_rows=600, batch_size=64)
    model = CreditClassifier()
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    for scale in (1.0, -1.0):  # the second pass's model ranks the samples the other way round
        if scale < 0:
            with torch.no_grad():
                head = [m for m in model.modules() if isinstance(m, torch.nn.Linear)][-1]
                head.weight.neg_()
                head.bias.neg_()
        (logged,) = trainer.validate(model, datamodule=dm, verbose=False)
        model.eval()
        batches = []
        with torch.no_grad():
            for x_num, x_cat, y in dm.val_dataloader():
                logits = model(x_num, x_cat)
                batches.append((torch.sigmoid(logits), y.long(), model.loss(logits, y, reduction="none")))
        expected = _expected(batches)
        assert {name: logged[f"val/{name}"] for name in SCORES} == pytest.approx(expected, abs=1e-6)
