"""The tabular recipes' model: an MLP binary classifier over standardised numbers and embedded categories."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar, cast

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from lightning.pytorch.utilities import AttributeDict
from torch import Tensor, nn
from typing_extensions import override

from lit_commeff.recipes.scores import log_scores, score_views
from lit_commeff.recipes.tabular.metrics import BinaryScores
from lit_commeff.strategy import lightning_api


def embedding_dim(cardinality: int) -> int:
    """Embedding width of a categorical column with ``cardinality`` codes: ``min(8, (cardinality + 1) // 2)``."""
    return min(8, (cardinality + 1) // 2)


class TabularClassifier(pl.LightningModule):
    """An MLP binary classifier over standardised numeric features and embedded categorical codes.

    Input: the batches of :class:`~lit_commeff.recipes.tabular.TabularDataModule`, ``(x_num, x_cat, y)``.
    Each categorical column has an embedding of width ``min(8, (cardinality + 1) // 2)``; the embeddings
    and numeric features are concatenated and fed through ``Linear → ReLU (→ Dropout)`` layers of sizes ``hidden`` and a
    final ``Linear`` to one logit. Loss: binary cross-entropy on the logit, with ``pos_weight``
    (negatives / positives) on the positive class when ``balance`` is true.

    Input sizes: pass ``num_numeric`` and ``categorical_cardinalities`` to build the layers at once;
    otherwise they are taken from the data module, by :meth:`configure_from` or automatically in
    :meth:`configure_model` from ``trainer.datamodule`` (Lightning calls it after the data module's
    ``setup`` and before the strategy sets up the model and optimizer). Weights are initialised from
    ``init_seed`` alone, so every rank builds the same model. The resolved sizes are stored in
    ``hparams``, so a checkpoint rebuilds the same model.

    Logged: ``train/loss`` (every step), and over every rank's validation samples ``val/loss`` (the mean per
    sample), ``val/auroc``, ``val/ap`` (average precision) and ``val/f1`` (at probability 0.5), all from one
    :class:`~lit_commeff.recipes.tabular.metrics.BinaryScores` state gathered once a validation pass.

    Args:
        num_numeric: Number of numeric features (``None``: from the data module).
        categorical_cardinalities: Codes per categorical column, the reserved 0 included (``None``: from
            the data module).
        pos_weight: Weight of the positive class in the loss (``None``: the data module's negatives /
            positives ratio).
        hidden: Hidden layer sizes.
        dropout: Dropout probability after each hidden layer.
        balance: Weight the positive class by ``pos_weight`` (class imbalance); ``False``: plain BCE.
        lr: Learning rate.
        optimizer: ``"sgd"``, ``"adam"`` or ``"adamw"`` (the default ``lr=0.1`` suits SGD; use about
            ``1e-3`` with Adam).
        momentum: SGD momentum.
        weight_decay: Weight decay (L2 for SGD and Adam, decoupled for AdamW).
        init_seed: Seed of the weight initialisation.
    """

    OPTIMIZERS: ClassVar[tuple[str, ...]] = ("sgd", "adam", "adamw")

    def __init__(
        self,
        *,
        num_numeric: int | None = None,
        categorical_cardinalities: Sequence[int] | None = None,
        pos_weight: float | None = None,
        hidden: Sequence[int] = (64, 64),
        dropout: float = 0.0,
        balance: bool = True,
        lr: float = 0.1,
        optimizer: str = "sgd",
        momentum: float = 0.0,
        weight_decay: float = 0.0,
        init_seed: int = 0,
    ) -> None:
        super().__init__()
        hidden = [int(h) for h in hidden]
        if not all(h >= 1 for h in hidden):
            raise ValueError(f"hidden: hidden={hidden!r} is invalid; use a list of layer sizes >= 1 (or []).")
        if optimizer not in self.OPTIMIZERS:
            raise ValueError(f"optimizer: optimizer={optimizer!r} is unknown; use one of {list(self.OPTIMIZERS)}.")
        if not lr > 0:
            raise ValueError(f"lr: lr={lr!r} is invalid; use a learning rate > 0.")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout: dropout={dropout!r} is out of range; use a probability in [0, 1).")
        if pos_weight is not None and not pos_weight > 0:
            raise ValueError(f"pos_weight: pos_weight={pos_weight!r} is invalid; use a weight > 0 (or null).")
        cards = None if categorical_cardinalities is None else [int(c) for c in categorical_cardinalities]
        self.save_hyperparameters()
        self.hparams["hidden"] = hidden
        self.hparams["categorical_cardinalities"] = cards
        self.embeddings: nn.ModuleList | None = None
        self.mlp: nn.Sequential | None = None
        self.val_scores = BinaryScores()
        self.val_score = score_views(self.val_scores)
        if num_numeric is not None and cards is not None:
            self._build(int(num_numeric), cards)

    # ------------------------------------------------------------------------------- building
    @property
    @override
    def hparams(self) -> AttributeDict:
        """The saved hyper-parameters, read as attributes (Lightning's annotation is a plain mapping)."""
        return cast(AttributeDict, super().hparams)  # save_hyperparameters() stores an AttributeDict

    @property
    def built(self) -> bool:
        """Whether the layers exist."""
        return self.mlp is not None

    def _build(self, num_numeric: int, cards: list[int]) -> None:
        if num_numeric < 0 or any(c < 1 for c in cards) or num_numeric + len(cards) == 0:
            raise ValueError(
                f"num_numeric: the inputs num_numeric={num_numeric}, categorical_cardinalities={cards} are invalid; "
                "the model needs at least one feature and cardinalities >= 1."
            )
        # The same weights on every rank, wherever Lightning's init context would put them: CPU, own seed.
        with torch.random.fork_rng(devices=[]), torch.device("cpu"):
            torch.manual_seed(self.hparams.init_seed)
            self.embeddings = nn.ModuleList(nn.Embedding(c, embedding_dim(c)) for c in cards)
            width = num_numeric + sum(embedding_dim(c) for c in cards)
            layers: list[nn.Module] = []
            for size in self.hparams.hidden:
                layers += [nn.Linear(width, size), nn.ReLU()]
                if self.hparams.dropout > 0:
                    layers.append(nn.Dropout(self.hparams.dropout))
                width = size
            layers.append(nn.Linear(width, 1))
            self.mlp = nn.Sequential(*layers)
        self.hparams["num_numeric"] = num_numeric
        self.hparams["categorical_cardinalities"] = list(cards)

    def configure_from(self, datamodule: Any) -> TabularClassifier:
        """Take the input sizes (and ``pos_weight``, unless given) from a checked data module; build the layers.

        Args:
            datamodule: A :class:`~lit_commeff.recipes.tabular.TabularDataModule` after ``check()`` or
                ``setup()`` (anything with ``num_numeric``, ``categorical_cardinalities`` and ``pos_weight``).

        Returns:
            The model itself.

        Raises:
            ValueError: The data module has not been checked, or the model was built for other sizes.
        """
        num_numeric = getattr(datamodule, "num_numeric", None)
        cards = getattr(datamodule, "categorical_cardinalities", None)
        if num_numeric is None or cards is None:
            raise ValueError(
                f"datamodule: {type(datamodule).__name__} has no input sizes yet; call datamodule.check(world_size) "
                "or datamodule.setup() before configure_from()."
            )
        cards = [int(c) for c in cards]
        if self.built:
            if (self.hparams.num_numeric, list(self.hparams.categorical_cardinalities)) != (num_numeric, cards):
                raise ValueError(
                    f"num_numeric: the model was built for num_numeric={self.hparams.num_numeric}, "
                    f"categorical_cardinalities={self.hparams.categorical_cardinalities}, but the data has "
                    f"num_numeric={num_numeric}, categorical_cardinalities={cards}; leave both unset (null) to "
                    "take them from the data module."
                )
        else:
            self._build(int(num_numeric), cards)
        if self.hparams.pos_weight is None and getattr(datamodule, "pos_weight", None) is not None:
            self.hparams["pos_weight"] = float(datamodule.pos_weight)
        return self

    @override
    def configure_model(self) -> None:
        """Build the layers from ``trainer.datamodule`` if the input sizes were not given."""
        datamodule = getattr(lightning_api.attached_trainer(self), "datamodule", None)
        if datamodule is not None and getattr(datamodule, "num_numeric", None) is not None:
            self.configure_from(datamodule)
        elif not self.built:
            raise ValueError(
                f"num_numeric: {type(self).__name__} does not know its input sizes; pass num_numeric and "
                "categorical_cardinalities, call model.configure_from(datamodule), or fit with a TabularDataModule "
                "(trainer.fit(model, datamodule=...))."
            )

    # ------------------------------------------------------------------------------- forward and loss
    @override
    def forward(self, x_num: Tensor, x_cat: Tensor) -> Tensor:
        """Logits ``[b]`` of the positive class."""
        if self.mlp is None or self.embeddings is None:
            raise RuntimeError(f"{type(self).__name__}: the layers are not built yet (see configure_from).")
        parts = [x_num, *(emb(x_cat[:, j]) for j, emb in enumerate(self.embeddings))]
        return self.mlp(torch.cat(parts, dim=1)).squeeze(-1)

    def loss(self, logits: Tensor, y: Tensor, *, reduction: str = "mean") -> Tensor:
        """Binary cross-entropy on logits, the positive class weighted by ``pos_weight`` when ``balance``.

        ``reduction``: ``"mean"`` over the batch, or ``"none"`` for one loss per sample.
        """
        weight = self.hparams.pos_weight if self.hparams.balance else None
        pos_weight = None if weight is None else torch.tensor(weight, dtype=logits.dtype, device=logits.device)
        target = y.to(logits.dtype)
        return F.binary_cross_entropy_with_logits(logits, target, pos_weight=pos_weight, reduction=reduction)

    @override
    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        x_num, x_cat, y = batch
        loss = self.loss(self(x_num, x_cat), y)
        self.log("train/loss", loss, on_step=True, on_epoch=False, prog_bar=True, batch_size=len(y))
        return loss

    @override
    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x_num, x_cat, y = batch
        logits = self(x_num, x_cat)
        self.val_scores.update(torch.sigmoid(logits.float()), y.long(), self.loss(logits.float(), y, reduction="none"))
        log_scores(self, self.val_score, prog_bar="auroc")

    @override
    def on_validation_epoch_start(self) -> None:
        # Lightning resets the logged Scores after each pass; their source is reset here, before the pass's updates
        self.val_scores.reset()

    @override
    def predict_step(self, batch: Any, batch_idx: int) -> Tensor:
        """Probabilities of the positive class."""
        x_num, x_cat = batch[0], batch[1]
        return torch.sigmoid(self(x_num, x_cat))

    @override
    def configure_optimizers(self) -> torch.optim.Optimizer:
        if not self.built:
            raise RuntimeError(f"{type(self).__name__}: the layers are not built yet (see configure_from).")
        hp = self.hparams
        if hp.optimizer == "sgd":
            return torch.optim.SGD(self.parameters(), lr=hp.lr, momentum=hp.momentum, weight_decay=hp.weight_decay)
        if hp.optimizer == "adam":
            return torch.optim.Adam(self.parameters(), lr=hp.lr, weight_decay=hp.weight_decay)
        return torch.optim.AdamW(self.parameters(), lr=hp.lr, weight_decay=hp.weight_decay)


__all__ = ["TabularClassifier", "embedding_dim"]
