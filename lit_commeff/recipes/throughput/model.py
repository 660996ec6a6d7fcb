"""The throughput recipe's model: a GRU or a small Transformer over a window of KPIs, metrics in Mbit/s."""

from __future__ import annotations

import math
from typing import Any, cast

import lightning.pytorch as pl
import torch
from lightning.pytorch.utilities import AttributeDict
from torch import Tensor, nn
from typing_extensions import override

from lit_commeff._state import need
from lit_commeff.recipes.scores import log_scores, score_views
from lit_commeff.recipes.throughput.metrics import ForecastScores
from lit_commeff.recipes.throughput.reading import positive_int
from lit_commeff.strategy import lightning_api

#: Optimizers :class:`ThroughputForecaster` accepts.
OPTIMIZERS: tuple[str, ...] = ("sgd", "adam", "adamw")
#: Architectures :class:`ThroughputForecaster` accepts.
ARCHS: tuple[str, ...] = ("gru", "transformer")


class _GRUNet(nn.Module):
    """GRU over the window; a linear head on the last step's output."""

    def __init__(self, num_features: int, hidden: int, layers: int) -> None:
        super().__init__()
        self.gru = nn.GRU(num_features, hidden, num_layers=layers, batch_first=True)
        self.head = nn.Linear(hidden, 1)

    @override
    def forward(self, x: Tensor) -> Tensor:
        out, _ = self.gru(x)
        return self.head(out[:, -1]).squeeze(-1)


class _TransformerNet(nn.Module):
    """Linear embedding + learned positional embedding + pre-norm TransformerEncoder; head on the last token."""

    def __init__(self, num_features: int, hidden: int, layers: int, window: int) -> None:
        super().__init__()
        heads = next(h for h in (4, 2, 1) if hidden % h == 0)
        self.embed = nn.Linear(num_features, hidden)
        self.pos = nn.Parameter(torch.randn(window, hidden) * 0.02)
        layer = nn.TransformerEncoderLayer(
            hidden, heads, dim_feedforward=2 * hidden, dropout=0.0, batch_first=True, norm_first=True
        )
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(hidden)
        self.head = nn.Linear(hidden, 1)

    @override
    def forward(self, x: Tensor) -> Tensor:
        length = x.shape[1]
        if length > self.pos.shape[0]:
            raise ValueError(
                f"window: the model was built for windows of {self.pos.shape[0]} rows, got {length}; build it "
                "with the datamodule's window."
            )
        h = self.encoder(self.embed(x) + self.pos[-length:])
        return self.head(self.norm(h[:, -1])).squeeze(-1)


class ThroughputForecaster(pl.LightningModule):
    """Forecast throughput from a window of KPIs: a GRU or a small Transformer, Huber loss, metrics in Mbit/s.

    The layers are built in ``configure_model`` from the datamodule's ``num_features`` (and ``window``
    for the Transformer's positional embedding) unless given here, so the model can be instantiated
    before the data is loaded. They are initialised from a private generator seeded with ``seed`` (or,
    when ``None``, with ``torch.initial_seed()``, i.e. the ``seed_everything`` seed), so every rank builds
    the same parameters regardless of what else drew random numbers before.

    Loss: SmoothL1 (Huber, ``beta=huber_beta``) on the datamodule's model-space target (standardised
    ``log1p`` Mbit/s). Logged: ``train/loss`` (per step), and over every rank's validation samples ``val/loss``
    (the mean per value), ``val/mae``, ``val/smape`` and ``val/mae_persistence`` (the last observed value as the
    forecast, a naive baseline independent of the model: the same every epoch) in original units, all from one
    :class:`~lit_commeff.recipes.throughput.metrics.ForecastScores` state gathered once a validation pass.

    Args:
        arch: ``"gru"`` or ``"transformer"``.
        hidden: Hidden size (GRU state, Transformer width).
        layers: GRU layers or Transformer encoder layers.
        lr: Learning rate.
        optimizer: ``"sgd"``, ``"adam"`` or ``"adamw"``.
        momentum: SGD momentum.
        weight_decay: Weight decay.
        num_features: Input columns; ``None``: the datamodule's ``num_features``.
        window: Longest window (Transformer positional embedding); ``None``: the datamodule's ``window``.
        seed: Seed of the initialisation; ``None``: ``torch.initial_seed()``.
        huber_beta: Where the SmoothL1 loss turns from quadratic to linear, in standard deviations of the
            model-space target. Small values make it close to L1, whose minimiser is the conditional
            median: the forecast that minimises the MAE in any monotone transform of the target, Mbit/s
            included (with ``beta=1`` the model learns a mean in log space and loses to persistence on the
            real traces, which are idle about 44% of the time).
    """

    def __init__(
        self,
        arch: str = "gru",
        hidden: int = 64,
        layers: int = 1,
        lr: float = 0.01,
        optimizer: str = "adam",
        momentum: float = 0.0,
        weight_decay: float = 0.0,
        num_features: int | None = None,
        window: int | None = None,
        seed: int | None = None,
        huber_beta: float = 0.1,
    ) -> None:
        super().__init__()
        if arch not in ARCHS:
            raise ValueError(f"arch: arch={arch!r} is unknown; use one of {list(ARCHS)}.")
        if optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer: optimizer={optimizer!r} is unknown; use one of {list(OPTIMIZERS)}.")
        positive_int("hidden", hidden)
        positive_int("layers", layers)
        for name, value in (
            ("lr", lr),
            ("momentum", momentum),
            ("weight_decay", weight_decay),
            ("huber_beta", huber_beta),
        ):
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
                raise ValueError(f"{name}: {name}={value!r} is out of range; use a finite value >= 0.")
        if lr <= 0:
            raise ValueError(f"lr: lr={lr!r} is out of range; use a value > 0.")
        if num_features is not None:
            positive_int("num_features", num_features)
        if window is not None:
            positive_int("window", window)
        if seed is not None:
            positive_int("seed", seed, minimum=0)
        self.save_hyperparameters()
        self.net: nn.Module | None = None
        self.target_transform: dict[str, Any] | None = None
        self.loss_fn = nn.SmoothL1Loss(beta=float(huber_beta))
        self.val_scores = ForecastScores()
        self.val_score = score_views(self.val_scores)
        if num_features is not None and (arch == "gru" or window is not None):
            self._build(num_features, window)

    # ------------------------------------------------------------------------------------ building
    @property
    @override
    def hparams(self) -> AttributeDict:
        """The saved hyper-parameters, read as attributes (Lightning's annotation is a plain mapping)."""
        return cast(AttributeDict, super().hparams)  # save_hyperparameters() stores an AttributeDict

    def _build(self, num_features: int, window: int | None) -> None:
        seed = self.hparams.seed if self.hparams.seed is not None else torch.initial_seed()
        # On the CPU and from a private generator: identical on every rank under the same seed (the
        # strategy moves the module to its device afterwards).
        with torch.device("cpu"), torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            if self.hparams.arch == "gru":
                net: nn.Module = _GRUNet(num_features, self.hparams.hidden, self.hparams.layers)
            else:
                window = need(
                    window, "window", owner=type(self).__name__, hint="a transformer is built for a window length"
                )
                net = _TransformerNet(num_features, self.hparams.hidden, self.hparams.layers, window)
        self.net = net
        self.hparams.num_features, self.hparams.window = num_features, window

    @override
    def configure_model(self) -> None:
        datamodule = getattr(lightning_api.attached_trainer(self), "datamodule", None)
        transform = getattr(datamodule, "target_transform", None)
        if self.target_transform is None and transform is not None:
            self.target_transform = dict(transform)
        if self.net is not None:
            return
        num_features = self.hparams.num_features or getattr(datamodule, "num_features", None)
        window = self.hparams.window or getattr(datamodule, "window", None)
        if num_features is None:
            raise ValueError(
                "num_features: ThroughputForecaster(num_features=None) takes its input size from the datamodule, "
                "but the Trainer has none with num_features; pass num_features (and window) or use "
                "ThroughputDataModule."
            )
        if self.hparams.arch == "transformer" and window is None:
            raise ValueError("window: arch='transformer' needs the window length; pass window or use the datamodule.")
        self._build(int(num_features), None if window is None else int(window))

    @override
    def load_state_dict(self, state_dict: Any, strict: bool = True, assign: bool = False) -> Any:
        """As ``nn.Module.load_state_dict``; builds the layers first from the saved shapes if not built yet."""
        if self.net is None:
            if "net.gru.weight_ih_l0" in state_dict and self.hparams.arch == "gru":
                self._build(int(state_dict["net.gru.weight_ih_l0"].shape[1]), self.hparams.window)
            elif "net.embed.weight" in state_dict and self.hparams.arch == "transformer":
                self._build(int(state_dict["net.embed.weight"].shape[1]), int(state_dict["net.pos"].shape[0]))
        return super().load_state_dict(state_dict, strict=strict, assign=assign)

    @override
    def get_extra_state(self) -> Any:
        return {"target_transform": self.target_transform}

    @override
    def set_extra_state(self, state: Any) -> None:
        if isinstance(state, dict) and state.get("target_transform") is not None:
            self.target_transform = dict(state["target_transform"])

    # ------------------------------------------------------------------------------------ compute
    @override
    def forward(self, x: Tensor) -> Tensor:
        """Model-space forecasts ``(batch,)`` for windows ``(batch, window, features)``."""
        if self.net is None:
            raise RuntimeError(
                "ThroughputForecaster: the layers are not built yet; pass num_features (and window for "
                "arch='transformer'), or run it through a Trainer with ThroughputDataModule."
            )
        return self.net(x)

    def to_units(self, z: Tensor) -> Tensor:
        """Model-space values -> original units (Mbit/s for bit rates), clamped at 0 for a log target."""
        t = self.target_transform
        if t is None:
            raise RuntimeError(
                "ThroughputForecaster: the target transform is unknown; train with ThroughputDataModule (the model "
                "reads it from the datamodule) or load a checkpoint that holds it."
            )
        value = z * t["std"] + t["mean"]
        return torch.expm1(value).clamp_min(0.0) if t["log"] else value

    @override
    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        x, y, _, _ = batch
        loss = self.loss_fn(self(x), y)
        self.log("train/loss", loss, on_step=True, on_epoch=False, prog_bar=True, batch_size=len(y))
        return loss

    @override
    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y, y_true, last = batch
        z = self(x)
        pred = self.to_units(z)
        losses = nn.functional.smooth_l1_loss(z, y, reduction="none", beta=self.loss_fn.beta)
        self.val_scores.update(pred, y_true, last, losses)
        log_scores(self, self.val_score, prog_bar="mae")

    @override
    def on_validation_epoch_start(self) -> None:
        # Lightning resets the logged Scores after each pass; their source is reset here, before the pass's updates
        self.val_scores.reset()

    @override
    def predict_step(self, batch: Any, batch_idx: int) -> Tensor:
        return self.to_units(self(batch[0]))

    @override
    def configure_optimizers(self) -> torch.optim.Optimizer:
        h = self.hparams
        if h.optimizer == "sgd":
            return torch.optim.SGD(self.parameters(), lr=h.lr, momentum=h.momentum, weight_decay=h.weight_decay)
        cls = torch.optim.Adam if h.optimizer == "adam" else torch.optim.AdamW
        return cls(self.parameters(), lr=h.lr, weight_decay=h.weight_decay)


__all__ = ["ARCHS", "OPTIMIZERS", "ThroughputForecaster"]
