"""Every private Lightning/torch touch point of lit_commeff (``lit_commeff.strategy.lightning_api``).

Each test runs one touch point against the installed Lightning and torch: the attribute exists and behaves
as the strategies rely on. After a Lightning upgrade this is the file that fails, and a missing attribute
raises :class:`LightningAPIError` naming the version, the attribute and the fix.
"""

from __future__ import annotations

import inspect
import os
import signal
import warnings
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import lightning
import lightning.pytorch as pl
import pytest
import torch
import torch.distributed as dist
from lightning.pytorch.strategies import DDPStrategy, SingleDeviceStrategy
from lightning.pytorch.utilities.exceptions import SIGTERMException
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
from typing_extensions import override

from lit_commeff.strategy import lightning_api as api
from lit_commeff.strategy.base import CommStrategy


class _Model(pl.LightningModule):
    """A linear model whose loss also counts the closure's calls, so each evaluation's loss is distinct."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = nn.Linear(4, 1)
        self.calls = 0
        self.hooks: list[str] = []
        self.reported: list[float] = []

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        self.calls += 1
        x, y = batch
        loss = ((self.layer(x) - y) ** 2).mean() * 1e3 + self.calls
        self.log("train_loss", loss)
        return loss

    def on_before_optimizer_step(self, optimizer: Any) -> None:
        self.hooks.append("on_before_optimizer_step")

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        self.reported.append(float(outputs["loss"]))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.01)

    def train_dataloader(self) -> DataLoader:
        g = torch.Generator().manual_seed(0)
        return DataLoader(TensorDataset(torch.randn(8, 4, generator=g), torch.randn(8, 1, generator=g)), batch_size=4)


Scenario = Callable[[SingleDeviceStrategy, torch.optim.Optimizer, Any, _Model], Any]


class _Probe(SingleDeviceStrategy):
    """Runs a test's scenario in place of the optimizer step, with Lightning's real closure and plugins."""

    def __init__(self, scenario: Scenario) -> None:
        super().__init__(device=torch.device("cpu"))
        self.scenario = scenario

    @override
    def optimizer_step(self, optimizer: Any, closure: Any, model: Any = None, **kwargs: Any) -> Any:
        return self.scenario(self, optimizer, closure, model or self.lightning_module)


def _fit(scenario: Scenario, *, max_steps: int = 1, **trainer_kwargs: Any) -> tuple[_Model, pl.Trainer]:
    model = _Model()
    trainer = pl.Trainer(
        strategy=_Probe(scenario),
        accelerator="cpu",
        max_steps=max_steps,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        **trainer_kwargs,
    )
    trainer.fit(model)
    return model, trainer


def _grad_norm(model: nn.Module) -> float:
    return float(torch.linalg.vector_norm(torch.cat([p.grad.reshape(-1) for p in model.parameters()])))


# ----------------------------------------------------------------------------------- precision plugin
def test_first_evaluation_runs_the_closure_then_lightnings_hooks() -> None:
    seen: dict[str, Any] = {}

    def scenario(strategy: Any, optimizer: Any, closure: Any, model: _Model) -> Any:
        first = api.first_evaluation(strategy.precision_plugin, model, optimizer, closure)
        assert model.calls == 0 and model.hooks == []
        loss = first()
        seen.update(calls=model.calls, hooks=list(model.hooks), loss=float(loss), grad=_grad_norm(model))
        return loss

    model, _ = _fit(scenario)
    assert seen["calls"] == 1 and seen["hooks"] == ["on_before_optimizer_step"]
    assert seen["grad"] > 0
    assert model.reported == [seen["loss"]]  # the loop reports the loss the wrapped closure returned


@pytest.mark.parametrize("clip_val", [None, 1e-3])
def test_gradient_clipper_applies_the_trainers_clipping(clip_val: float | None) -> None:
    norms: list[float] = []

    def scenario(strategy: Any, optimizer: Any, closure: Any, model: _Model) -> Any:
        loss = closure()
        norms.append(_grad_norm(model))
        api.gradient_clipper(strategy.precision_plugin, model, optimizer, strategy.lightning_module.trainer)()
        norms.append(_grad_norm(model))
        return loss

    _fit(scenario, gradient_clip_val=clip_val, gradient_clip_algorithm="norm")
    before, after = norms
    assert before > 1e-2
    if clip_val is None:
        assert after == before
    else:
        assert after == pytest.approx(clip_val, rel=1e-3)


# ----------------------------------------------------------------------------------- loop closure and logging
@pytest.mark.parametrize("preserve", [True, False])
def test_preserved_closure_result_reports_the_first_evaluation(preserve: bool) -> None:
    losses: list[float] = []

    def scenario(strategy: Any, optimizer: Any, closure: Any, model: _Model) -> Any:
        losses.append(float(api.first_evaluation(strategy.precision_plugin, model, optimizer, closure)()))
        if preserve:
            with api.preserved_closure_result(closure):
                losses.append(float(closure()))
        else:
            losses.append(float(closure()))
        return None

    model, _ = _fit(scenario)
    first, second = losses
    assert first != second
    # Lightning reports the closure's cached result: without the adapter, the last evaluation's
    assert model.reported == [first if preserve else second]


def test_silenced_logging_drops_logs_and_restores_the_methods() -> None:
    values: list[float] = []

    def scenario(strategy: Any, optimizer: Any, closure: Any, model: _Model) -> Any:
        values.append(float(api.first_evaluation(strategy.precision_plugin, model, optimizer, closure)()))
        with api.silenced_logging(model):
            closure()
            model.log("silenced_probe", 1.0)
        assert "log" not in vars(model) and "log_dict" not in vars(model)
        return None

    model, trainer = _fit(scenario)
    assert model.calls == 2
    assert "silenced_probe" not in trainer.callback_metrics
    assert float(trainer.callback_metrics["train_loss"]) == pytest.approx(values[0])


def test_silenced_logging_restores_an_instance_override() -> None:
    model = _Model()
    mine = lambda *args, **kwargs: "mine"  # noqa: E731
    model.log = mine  # type: ignore[method-assign]
    with api.silenced_logging(model):
        assert model.log("x", 1.0) is None
    assert model.log is mine and "log_dict" not in vars(model)


class _Recorder(pl.loggers.Logger):
    """A logger that keeps every ``log_metrics`` call."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[int | None, dict[str, float]]] = []

    @property
    def name(self) -> str:
        return "recorder"

    @property
    def version(self) -> int:
        return 0

    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
        return None

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        self.calls.append((step, dict(metrics)))


@pytest.mark.parametrize("every", [1, 2])
def test_log_step_metrics_logs_at_lightnings_steps_in_one_call(every: int) -> None:
    recorder = _Recorder()

    def scenario(strategy: Any, optimizer: Any, closure: Any, model: _Model) -> Any:
        loss = closure()
        trainer = strategy.lightning_module.trainer
        api.log_step_metrics(trainer, {"probe/a": 10.0 + trainer.global_step, "probe/b": 1.5}, prog_bar={"bar": 2.0})
        optimizer.step()
        return loss

    model = _Model()
    trainer = pl.Trainer(
        strategy=_Probe(scenario), accelerator="cpu", max_steps=3, logger=recorder, log_every_n_steps=every,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
    )  # fmt: skip
    trainer.fit(model)
    probe = [(step, m) for step, m in recorder.calls if "probe/a" in m]
    lightning = [step for step, m in recorder.calls if "train_loss" in m]
    # written on the steps Lightning writes its own, at the step numbers it gives them
    assert [step for step, _ in probe] == lightning == ([0, 1, 2] if every == 1 else [1])
    assert [m["probe/a"] for _, m in probe] == ([10.0, 11.0, 12.0] if every == 1 else [11.0])
    assert all(len(m) == 2 for _, m in probe)
    assert float(trainer.logged_metrics["probe/a"]) == (12.0 if every == 1 else 11.0)
    assert isinstance(trainer.callback_metrics["probe/a"], torch.Tensor)
    assert float(trainer.callback_metrics["probe/a"]) == 12.0  # every step's value, as self.log leaves it
    assert trainer.progress_bar_metrics["bar"] == 2.0 and "bar" not in trainer.logged_metrics


def test_attached_trainer_is_none_until_fit() -> None:
    assert api.attached_trainer(_Model()) is None
    during: list[Any] = []

    def scenario(strategy: Any, optimizer: Any, closure: Any, model: _Model) -> Any:
        during.append(api.attached_trainer(model))
        return closure()

    _, trainer = _fit(scenario)
    assert during == [trainer]


@pytest.mark.parametrize("use", [True, False])
def test_uses_distributed_sampler_reads_the_trainer_option(use: bool) -> None:
    trainer = pl.Trainer(accelerator="cpu", logger=False, use_distributed_sampler=use, enable_progress_bar=False)
    assert api.uses_distributed_sampler(trainer) is use


# ----------------------------------------------------------------------------------- SIGTERM
def test_sigterm_received_follows_a_real_sigterm() -> None:
    seen: list[bool] = []

    def scenario(strategy: Any, optimizer: Any, closure: Any, model: _Model) -> Any:
        trainer = strategy.lightning_module.trainer
        seen.append(api.sigterm_received(trainer))
        os.kill(os.getpid(), signal.SIGTERM)  # Lightning's handler is installed during fit
        seen.append(api.sigterm_received(trainer))
        return closure()

    with pytest.raises(SIGTERMException):
        _fit(scenario, max_steps=2)
    assert seen == [False, True]


def test_replace_sigterm_broadcast_wraps_the_loops_per_step_check() -> None:
    trainer = pl.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False)
    loop = trainer.fit_loop.epoch_loop
    # Lightning calls the instance attribute before every training step of a multi-process run
    assert "self._broadcast_sigterm_tensor()" in inspect.getsource(type(loop).advance)
    original = loop._broadcast_sigterm_tensor
    calls: list[str] = []

    def wrap(lightning_check: Callable[[], None]) -> Callable[[], None]:
        assert lightning_check == original

        def check() -> None:
            calls.append("ours")
            lightning_check()  # no process group here: Lightning's broadcast fails quietly, flag 0

        return check

    assert api.replace_sigterm_broadcast(trainer, wrap) is True
    loop._broadcast_sigterm_tensor()
    assert calls == ["ours"]
    assert api.replace_sigterm_broadcast(trainer, wrap) is False  # installed once


def test_replace_sigterm_broadcast_without_the_attribute(monkeypatch: pytest.MonkeyPatch) -> None:
    trainer = SimpleNamespace(fit_loop=SimpleNamespace(epoch_loop=SimpleNamespace()))
    with pytest.raises(api.LightningAPIError, match="_broadcast_sigterm_tensor"):
        api.replace_sigterm_broadcast(trainer, lambda check: check)
    monkeypatch.setattr(lightning, "__version__", "2.4.0")  # before the per-step broadcast: nothing to replace
    assert api.replace_sigterm_broadcast(trainer, lambda check: check) is False


def test_drop_sigterm_handler_broadcast_keeps_the_flag_without_a_collective() -> None:
    from lightning.pytorch.trainer.connectors.signal_connector import _SignalConnector

    # Lightning's handler broadcasts from inside the signal handler: the collective this takes out
    assert "dist.broadcast" in inspect.getsource(_SignalConnector._sigterm_notifier_fn)
    seen: list[Any] = []

    def scenario(strategy: Any, optimizer: Any, closure: Any, model: _Model) -> Any:
        trainer = strategy.lightning_module.trainer
        lightning_notifier = trainer._signal_connector._sigterm_notifier_fn
        seen.append(api.drop_sigterm_handler_broadcast(trainer))
        handlers = signal.getsignal(signal.SIGTERM).signal_handlers
        seen.append(lightning_notifier in handlers)
        seen.append(api.drop_sigterm_handler_broadcast(trainer))  # replaced once
        os.kill(os.getpid(), signal.SIGTERM)
        seen.append(api.sigterm_received(trainer))
        return closure()

    with pytest.raises(SIGTERMException):
        _fit(scenario, max_steps=2)
    assert seen == [True, False, False, True]
    with pytest.raises(api.LightningAPIError, match="_signal_connector"):
        api.drop_sigterm_handler_broadcast(SimpleNamespace())


# ----------------------------------------------------------------------------------- DDPStrategy
def test_ddp_kwargs_and_backend_reach_the_ddp_wrapper(tmp_path: Any) -> None:
    strategy = DDPStrategy(parallel_devices=[torch.device("cpu")], process_group_backend="gloo", bucket_cap_mb=5)
    assert api.ddp_kwargs(strategy) == {"bucket_cap_mb": 5}
    api.ddp_kwargs(strategy)["bucket_cap_mb"] = 3
    dist.init_process_group("gloo", init_method=f"file://{tmp_path}/pg", rank=0, world_size=1)
    try:
        assert api.process_group_backend(strategy) == "gloo"
        wrapped = strategy._setup_model(nn.Linear(4, 1))  # the override PowerSGDStrategy relies on
        assert wrapped.bucket_bytes_cap == 3 * 2**20
    finally:
        dist.destroy_process_group()


def _strategies() -> list[type]:
    out, todo = [], [CommStrategy]
    while todo:
        cls = todo.pop()
        out.append(cls)
        todo.extend(cls.__subclasses__())
    return out


def test_check_overrides_finds_every_overridden_hook() -> None:
    classes = {c.__name__ for c in _strategies()}
    assert {"MeteredDDPStrategy", "PowerSGDStrategy", "DiLoCoStrategy", "OLGAStrategy"} <= classes
    for cls in _strategies():
        api.check_overrides(cls)

    class Renamed(CommStrategy):
        @override
        def _setup_model_renamed(self, model: nn.Module) -> Any:  # as if Lightning renamed _setup_model
            return model

    with pytest.raises(api.LightningAPIError, match=r"DDPStrategy\._setup_model_renamed"):
        api.check_overrides(Renamed)


# ----------------------------------------------------------------------------------- torch
def test_mark_optimizer_stepped_quiets_the_schedulers_order_check() -> None:
    def warnings_of(mark: bool) -> list[str]:
        param = nn.Parameter(torch.zeros(2))
        optimizer = torch.optim.SGD([param], lr=0.1)
        scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            if mark:
                api.mark_optimizer_stepped(optimizer)
            scheduler.step()
        return [str(w.message) for w in caught if "optimizer.step()" in str(w.message)]

    assert warnings_of(mark=False)  # a worker that never steps its optimizer: torch warns
    assert warnings_of(mark=True) == []


def test_powersgd_should_compress_follows_torchs_rule() -> None:
    assert api.powersgd_should_compress(64, 64, 1, 2.0) is True  # 4096 entries sent as 128
    assert api.powersgd_should_compress(1, 8, 1, 2.0) is False  # a bias row: 8 entries would become 9


# ----------------------------------------------------------------------------------- the error
@pytest.mark.parametrize(
    ("call", "attribute"),
    [
        (lambda: api.first_evaluation(object(), None, None, lambda: None), "object._wrap_closure"),
        (lambda: api.gradient_clipper(object(), None, None, None), "object._clip_gradients"),
        (lambda: api.preserved_closure_result(lambda: None).__enter__(), "function._result"),
        (lambda: api.attached_trainer(object()), "object._trainer"),
        (lambda: api.sigterm_received(object()), "object.received_sigterm"),
        (lambda: api.uses_distributed_sampler(object()), "object._accelerator_connector"),
        (lambda: api.ddp_kwargs(object()), "object._ddp_kwargs"),
        (lambda: api.process_group_backend(object()), "object._get_process_group_backend"),
    ],
)
def test_a_missing_attribute_names_version_attribute_and_fix(call: Callable[[], Any], attribute: str) -> None:
    with pytest.raises(api.LightningAPIError) as error:
        call()
    message = str(error.value)
    assert message.startswith(attribute + ":")
    assert f"lightning {lightning.__version__}" in message
    assert f"pip install 'lightning=={api.TESTED_LIGHTNING}.*'" in message and "file an issue" in message
