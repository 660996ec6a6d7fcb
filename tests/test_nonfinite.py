"""The non-finite guard under real gloo processes: NaN injected into one rank's gradient at one step."""

from __future__ import annotations

import contextlib
import json
import math
import time
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import pytest
import torch
import torch.distributed as dist
from _strategy_utils import TinyRegressor, flat, regression_data, trainer
from torch.utils.data import DataLoader

from lit_commeff.strategy import CompressedStrategy, EFOLGAStrategy, GatedDANEStrategy, OLGAStrategy
from lit_commeff.strategy.numeric import NonFiniteError, NonFiniteGuard, all_finite, check_policy, clone_state


class _EFOLGACompressedDownlink(EFOLGAStrategy):
    """EF-OLGA whose inner rounds' broadcast is compressed too (``downlink_compressor``)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(downlink_compressor="topk", downlink_compressor_options={"ratio": 0.1}, **kwargs)


class _GatedDANEOverlap(GatedDANEStrategy):
    """Gated DANE with ``overlap``: rounds of 3, faults in the messages (the reply comes one round late)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(sync="fixed", inner_steps=3, overlap=True, **kwargs)


STRATEGIES = {
    "olga": OLGAStrategy,
    "ef_olga": EFOLGAStrategy,
    "ef_olga+downlink": _EFOLGACompressedDownlink,
    "compressed": CompressedStrategy,
}
BAD_STEP, BAD_RANK = 5, 1


class PoisonedRegressor(TinyRegressor):
    """Writes NaN into ``net.2.bias``'s gradient on one rank at one step (every evaluation of that step)."""

    def on_after_backward(self) -> None:
        if self.trainer.global_step == BAD_STEP and self.global_rank == BAD_RANK:
            self.net[2].bias.grad.fill_(float("nan"))


class StepParams(pl.Callback):
    """Records each rank's parameters after every step, and where training stopped on an exception."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self.after: list[list[float]] = []

    def on_train_batch_end(self, trainer: pl.Trainer, module: pl.LightningModule, *args: Any) -> None:
        self.after.append(flat(module).tolist())

    def _write(self, trainer: pl.Trainer, module: pl.LightningModule, **extra: Any) -> None:
        record = {"after": self.after, "final": flat(module).tolist(), **extra}
        record["summary"] = trainer.strategy.comm_summary()
        record["skipped"] = trainer.strategy.skipped_rounds
        record["rounds"] = trainer.strategy.algorithm.round
        (self.out / f"rank{trainer.global_rank}.json").write_text(json.dumps(record))

    def on_train_end(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        self._write(trainer, module)


@pytest.fixture
def watch_broadcasts(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Fork-inherited spy on the hub's downlink collectives (``dist.broadcast`` and ``dist.scatter``).

    The hub writes ``nonfinite_broadcast`` if it ever sends a non-finite value, and ``downlink_seen``
    when it sends anything (so a test can check the spy was on the path at all).
    """
    flag = tmp_path / "nonfinite_broadcast"
    seen = tmp_path / "downlink_seen"

    def watch(real: Any) -> Any:
        def spy(tensor: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
            if dist.get_rank() == 0 and tensor.is_floating_point():
                seen.write_text(real.__name__)
                if not bool(torch.isfinite(tensor).all()):
                    flag.write_text("the hub broadcast a non-finite tensor")
            return real(tensor, *args, **kwargs)

        return spy

    monkeypatch.setattr(dist, "broadcast", watch(dist.broadcast))
    monkeypatch.setattr(dist, "scatter", watch(dist.scatter))
    return flag


def recording(cls: type) -> type:
    """The strategy, writing each rank's error and parameters when the guard raises (launched ranks run no
    ``on_exception`` callbacks, and the launcher stops the other ranks once one has failed)."""

    class Recording(cls):
        def _settle(self, guard: Any, snapshot: Any, optimizer: Any) -> None:
            with self._recorded():
                super()._settle(guard, snapshot, optimizer)

        def _settle_in_band(self, guard: Any) -> None:
            with self._recorded():
                super()._settle_in_band(guard)

        @contextlib.contextmanager
        def _recorded(self) -> Any:
            try:
                yield
            except NonFiniteError as error:
                trainer = self.lightning_module.trainer
                (callback,) = [c for c in trainer.callbacks if isinstance(c, StepParams)]
                callback._write(trainer, self.lightning_module, error=str(error))
                time.sleep(1.0)  # let the other rank write before the launcher stops it
                raise

    return Recording


def _fit(name: str, policy: str, out: Path, steps: int = 12) -> Exception | None:
    pl.seed_everything(0)
    cls = _GatedDANEOverlap if name == "gated_dane+overlap" else STRATEGIES[name]
    strategy = recording(cls)(start_method="fork", nonfinite=policy)
    loader = DataLoader(regression_data(), batch_size=32, shuffle=True)
    try:
        trainer(strategy, max_steps=steps, callbacks=[StepParams(out)]).fit(PoisonedRegressor(), loader)
    except Exception as error:  # the fork launcher re-raises a rank's exception in the parent
        return error
    return None


def _ranks(out: Path) -> list[dict[str, Any]]:
    return [json.loads((out / f"rank{r}.json").read_text()) for r in range(2)]


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_raise_names_step_rank_and_tensor_and_applies_nothing(name, tmp_path, watch_broadcasts):
    error = _fit(name, "raise", tmp_path)
    assert error is not None, "a NaN gradient must stop training under nonfinite='raise'"
    ranks = _ranks(tmp_path)
    culprit = ranks[BAD_RANK]["error"]
    assert f"step {BAD_STEP}, rank {BAD_RANK}" in culprit
    assert "non-finite gradient in parameter 'net.2.bias'" in culprit
    assert "nonfinite='skip'" in culprit  # the fix is named
    assert f"ranks [{BAD_RANK}]" in ranks[0]["error"]  # the hub names the rank that failed
    for rank in ranks:
        assert len(rank["after"]) == BAD_STEP  # steps 0..4 completed, step 5 raised
        assert rank["final"] == rank["after"][-1]  # the failed step was undone: nothing was applied
        assert all(math.isfinite(v) for v in rank["final"])
    assert not watch_broadcasts.exists()
    assert (tmp_path / "downlink_seen").read_text() == "scatter"  # gloo's default downlink: the star


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_skip_drops_the_round_everywhere_and_goes_on(name, tmp_path, watch_broadcasts):
    assert _fit(name, "skip", tmp_path, steps=12) is None
    ranks = _ranks(tmp_path)
    for rank in ranks:
        assert rank["skipped"] == 1
        assert len(rank["after"]) == 12
        # the skipped step left the parameters as they were after the step before it
        assert rank["after"][BAD_STEP] == rank["after"][BAD_STEP - 1]
        assert rank["rounds"] == 12 - 1  # the skipped round was undone in the algorithm too, and training went on
        assert all(math.isfinite(v) for v in rank["final"])
    assert ranks[0]["final"] == ranks[1]["final"]
    # the guard: the worker's int32 flag up, every rank's flag (2 x int32) down, each step
    assert ranks[0]["summary"]["control_bytes"] == 12 * (4 + 2 * 4)
    assert not watch_broadcasts.exists()
    assert (tmp_path / "downlink_seen").read_text() == "scatter"  # gloo's default downlink: the star


def test_overlap_raise_stops_every_rank_when_the_reply_reports_the_fault(tmp_path, watch_broadcasts):
    """Rank 1's NaN at step 5 (the last step of round 2) travels in its message; the hub voids the round and
    every rank learns it with the reply, at the end of round 3 (step 8), and raises there."""
    error = _fit("gated_dane+overlap", "raise", tmp_path)
    assert error is not None, "a NaN gradient must stop training under nonfinite='raise'"
    ranks = _ranks(tmp_path)
    culprit = ranks[BAD_RANK]["error"]
    assert f"step {BAD_STEP}, rank {BAD_RANK}" in culprit  # the rank's own fault, kept until the reply came
    assert "non-finite gradient in parameter 'net.2.bias'" in culprit
    assert f"ranks [{BAD_RANK}]" in ranks[0]["error"]
    for rank in ranks:
        assert len(rank["after"]) == 8  # steps 0..7 completed, step 8 took the reply and raised
        assert all(math.isfinite(v) for v in rank["final"])
    assert ranks[0]["after"][-1] == ranks[1]["after"][-1]
    assert not watch_broadcasts.exists()


def test_overlap_skip_voids_the_round_everywhere_and_goes_on(tmp_path, watch_broadcasts):
    assert _fit("gated_dane+overlap", "skip", tmp_path, steps=15) is None
    ranks = _ranks(tmp_path)
    for rank in ranks:
        assert rank["skipped"] == 1  # the voided round, learnt by both ranks with the reply
        assert len(rank["after"]) == 15
        # the reply at step 8 (to round 2) kept the anchor of step 5; the next reply moves it again
        assert rank["after"][8] == rank["after"][7] and rank["after"][11] != rank["after"][10]
        assert all(math.isfinite(v) for v in rank["final"])
        assert rank["summary"]["control_bytes"] == 0  # no agreement of the guard's own
    assert ranks[0]["final"] == ranks[1]["final"]
    assert not watch_broadcasts.exists()


def test_off_sends_no_guard_traffic(tmp_path):
    pl.seed_everything(0)
    strategy = OLGAStrategy(start_method="fork", nonfinite="off")
    loader = DataLoader(regression_data(), batch_size=32, shuffle=True)
    trainer(strategy, max_steps=6, callbacks=[StepParams(tmp_path)]).fit(TinyRegressor(), loader)
    assert _ranks(tmp_path)[0]["summary"]["control_bytes"] == 0


def test_guard_names_the_parameter_and_element():
    guard = NonFiniteGuard(names=["a.weight", "a.bias", "b.weight"], numels=[6, 2, 3], rank=3, world_size=4)
    guard.begin(17)
    v = torch.zeros(11)
    assert guard.check(v, "gradient")
    v[7] = float("inf")
    v[9] = float("nan")
    assert not guard.check(v, "gradient")
    assert str(guard.fault) == "step 17, rank 3: non-finite gradient in parameter 'a.bias' (element 1) = inf"
    assert not guard.check(torch.tensor([float("nan")]), "message")
    assert "a.bias" in str(guard.fault)  # the first fault of the step is kept
    guard.begin(18)
    assert guard.fault is None
    assert not guard.check(torch.tensor([0.0, float("nan")]), "broadcast (gate)")
    assert str(guard.fault).endswith("non-finite broadcast (gate) in element 1 = nan")


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64, torch.complex64])
def test_all_finite_is_exact_for_every_float_dtype(dtype):
    big = torch.finfo(dtype if not dtype.is_complex else torch.float32).max
    assert all_finite(torch.zeros(5, dtype=dtype))
    assert all_finite(torch.full((64,), big, dtype=dtype))  # finite terms whose sum overflows: still finite
    assert all_finite(torch.tensor([big, -big], dtype=dtype).repeat(8))
    for bad in (float("nan"), float("inf"), float("-inf")):
        v = torch.full((1000,), big, dtype=dtype)
        v[639] = bad  # row 6, column 39
        assert not all_finite(v)
        assert not all_finite(v.view(10, 100)[:, ::3])  # a strided view: every third column, the bad one included
        assert all_finite(v.view(10, 100)[:, 1::3])
    both = torch.tensor([float("inf"), float("-inf")], dtype=dtype)  # sums to NaN: still caught
    assert not all_finite(both)
    assert all_finite(torch.tensor([1, 2], dtype=torch.int64))  # integers are always finite


def test_clone_state_copies_an_adam_state_without_sharing():
    model = torch.nn.Linear(4, 3)
    opt = torch.optim.Adam(model.parameters(), lr=0.1)
    model(torch.randn(8, 4)).square().sum().backward()
    opt.step()
    state = opt.state_dict()
    copy_ = clone_state(state)
    assert copy_.keys() == state.keys() and copy_["param_groups"] == state["param_groups"]
    for i, entries in state["state"].items():
        for k, v in entries.items():
            assert torch.equal(copy_["state"][i][k], v) and copy_["state"][i][k].data_ptr() != v.data_ptr()
    expected = {i: {k: v.clone() for k, v in e.items()} for i, e in state["state"].items()}
    opt.step()  # updates the live state in place
    copy_["param_groups"][0]["lr"] = 9.0
    assert opt.param_groups[0]["lr"] == 0.1
    assert all(torch.equal(copy_["state"][i][k], v) for i, e in expected.items() for k, v in e.items())
    opt.load_state_dict(copy_)  # what a void round does
    params = list(model.parameters())
    assert all(torch.equal(opt.state[params[i]][k], v) for i, e in expected.items() for k, v in e.items())


@pytest.mark.parametrize("bad", ["ignore", "", None, "Raise"])
def test_policy_is_validated_with_the_fix(bad):
    with pytest.raises(ValueError, match=r"nonfinite: nonfinite=.* is unknown; use 'raise'"):
        check_policy(bad)
    with pytest.raises(ValueError, match="nonfinite"):
        OLGAStrategy(nonfinite=bad)
