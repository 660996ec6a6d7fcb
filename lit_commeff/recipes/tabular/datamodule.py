"""The tabular recipes' data module: a binary-classification CSV as rank-local training shards.

How the data becomes each rank's tensors (:class:`TabularDataModule`):

1. Read and validate the table (:class:`~lit_commeff.recipes.tabular.reading.TableReader`, from
   :meth:`TabularDataModule.check`, in the launching process too).
2. One seeded validation split (``val_fraction``), the same on every rank, before any partitioning.
3. Missing numeric values filled (recipe rule, then the training median); numeric features
   standardised and categorical values coded with statistics of all training rows, so every rank
   uses the same encoding.
4. Each rank takes its own training shard (:mod:`~lit_commeff.recipes.partition`: ``"iid"`` or
   ``"by_group"``) and an equal interleaved share of the validation rows; the validation metrics are
   torchmetrics objects that synchronise across ranks, so they are computed over the whole set.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Final

import lightning.pytorch as pl
import numpy as np
import pandas as pd
import torch
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor
from torch.utils.data import DataLoader, TensorDataset
from typing_extensions import override

from lit_commeff.recipes.partition import BALANCE_SCHEMES, check_scheme, interleaved_shard, partition_all
from lit_commeff.recipes.resumable import ResumableDataLoader, trainer_progress
from lit_commeff.recipes.tabular.reading import (
    ParsedTable,
    TableReader,
    TabularLayout,
    delimiter_option,
)
from lit_commeff.recipes.tabular.reading import column_names as as_names


class _LayoutDefault(enum.Enum):
    """The default of a constructor option that comes from the recipe's :attr:`TabularDataModule.layout`."""

    LAYOUT = "layout"

    def __repr__(self) -> str:
        return "LAYOUT"


#: Default of the :class:`TabularDataModule` options that a recipe's :class:`TabularLayout` sets.
LAYOUT: Final = _LayoutDefault.LAYOUT


def _is_auto(value: Any) -> bool:
    """``categorical_columns=None`` or ``"auto"``: found from the data."""
    return value is None or (isinstance(value, str) and value.lower() == "auto")


@dataclass
class TabularData:
    """The loaded, validated and encoded table; the same on every rank.

    Attributes:
        source: Where the rows came from (the path, or the synthetic generator).
        numeric_columns: Numeric feature columns, in ``x_num``'s order.
        categorical_columns: Categorical feature columns, in ``x_cat``'s order.
        x_num: ``[n, len(numeric_columns)]`` float32, missing values filled, standardised.
        x_cat: ``[n, len(categorical_columns)]`` int64 codes; 0 is reserved for values unseen in training.
        y: ``[n]`` float32 labels in {0, 1}.
        groups: Group key (text) of every row for ``partition="by_group"``, else ``None``.
        train_idx: Rows of the training split (sorted).
        val_idx: Rows of the validation split (sorted).
        mean: Per numeric column, the training mean used to standardise.
        std: Per numeric column, the training standard deviation (1 where it is 0).
        fill: Per numeric column, the training median that replaces missing values.
        categories: Per categorical column, its training values; value ``categories[c][i]`` has code ``i + 1``.
        pos_weight: Negatives / positives over the training split.
    """

    source: str
    numeric_columns: list[str]
    categorical_columns: list[str]
    x_num: Tensor
    x_cat: Tensor
    y: Tensor
    groups: np.ndarray | None
    train_idx: np.ndarray
    val_idx: np.ndarray
    mean: np.ndarray
    std: np.ndarray
    fill: np.ndarray
    categories: dict[str, list[str]]
    pos_weight: float


class TabularDataModule(pl.LightningDataModule):
    """A binary-classification CSV as rank-local training shards and a shared validation set.

    Each rank builds its own training shard in :meth:`setup` (run the Trainer with
    ``use_distributed_sampler=False``), from ``self.trainer.global_rank`` and ``world_size`` (rank 0 of 1
    without a Trainer):

    * ``partition="iid"``: a seeded random permutation of the training rows cut into equal contiguous
      parts (the remainder is dropped so every rank has the same size).
    * ``partition="by_group"``: the training rows grouped by ``group_column``'s values; whole groups go
      to ranks, largest first, each to the rank with the fewest rows so far. All ranks must take the same
      number of steps per epoch. ``group_balance="resample"`` (default) keeps every row and has every rank
      draw ``rows // world_size`` samples per epoch from its own shard: a small shard repeats, and a
      large one shows a fresh random subset each epoch. ``group_balance="cut"`` instead cuts every shard to the
      smallest rank's size; with imbalanced groups on many ranks that leaves far fewer rows than the file holds.

    The validation split (``val_fraction`` of the rows, seeded, not stratified) is made once, before
    partitioning, identically on every rank; each rank then evaluates an equal interleaved share
    (rows ``rank, rank + world_size, …``; up to ``world_size - 1`` rows are left out so shares are
    equal). Numeric features are standardised with the mean and standard deviation of all training rows
    (before partitioning, so every rank uses the same scaler); missing numeric values (blank cells) are
    filled first by the recipe's rule (:meth:`fill_missing`), then with the training median.
    Categorical values are coded ``1..K`` from the training rows' values; 0 is reserved for values
    unseen in training.

    After :meth:`setup`, ``train_rows`` and ``val_rows`` are the rows of ``table`` (the cached
    :class:`TabularData`) this rank trains and validates on, and ``shard_rank``/``shard_world_size``
    the rank they were built for.

    Batches are ``(x_num, x_cat, y)``: float32 ``[b, num_numeric]``, int64 ``[b, len(categorical)]``,
    float32 ``[b]``. After :meth:`check` or :meth:`setup`, ``num_numeric``,
    ``categorical_cardinalities`` (codes per column, the reserved 0 included) and ``pos_weight``
    (negatives / positives in training) describe the inputs for the model.

    A recipe subclasses this module and states its file layout once, as the class attribute :attr:`layout`
    (a :class:`~lit_commeff.recipes.tabular.reading.TabularLayout`): the options marked ``LAYOUT`` below
    default to its fields.

    Args:
        path: CSV file; ``None`` generates the recipe's synthetic data (offline default).
        batch_size: Training and validation batch size per rank.
        val_fraction: Share of rows held out for validation, in (0, 1).
        partition: ``"iid"`` or ``"by_group"`` (see above).
        group_column: Column whose values define the groups of ``partition="by_group"`` (``LAYOUT``).
        group_balance: ``"resample"`` or ``"cut"``: how ``by_group`` gives every rank the same number of steps
            per epoch (see above).
        seed: Seed of the synthetic data, the validation split, the partition and the shuffling
            (rank ``r`` shuffles with ``seed + r``).
        synthetic_rows: Number of rows the synthetic generator makes (``path=None``; ``LAYOUT``).
        target_column: The binary label column (``LAYOUT``).
        id_column: A row identifier to ignore (``None``: there is none; ``LAYOUT``).
        categorical_columns: Categorical feature columns; ``None`` or ``"auto"``: every feature column that
            is not in ``numeric_columns`` and holds a non-numeric value (the object-dtype columns; ``LAYOUT``).
        numeric_columns: Columns that must be numeric (a non-number there is an error, not a category);
            every feature column that is not categorical is numeric in any case (``LAYOUT``).
        positive_label: The target value of the positive class (compared as text, or as a number when
            both are numbers; the other value is negative); ``None``: the target must be 0/1, 1 positive
            (``LAYOUT``). Two other values (1/2, Y/N, good/bad) without it are an error, not a guess. While it
            is the recipe's own default (churn: ``"Yes"``), a 0/1 target is accepted too (1 positive).
        delimiter: ``"auto"`` (detect comma, semicolon, tab, pipe or whitespace from the file's start),
            ``"comma"``, ``"semicolon"``, ``"tab"``, ``"pipe"``, ``"whitespace"`` (runs of spaces/tabs), or
            the character itself (``LAYOUT``).
        header: Whether the first row names the columns; ``False``: every row is data and
            ``column_names`` names the columns (``LAYOUT``).
        column_names: The columns' names in file order, for ``header=False`` (``LAYOUT``).
    """

    #: Metric to monitor (checkpointing, early stopping) and its direction.
    monitor: ClassVar[str] = "val/auroc"
    mode: ClassVar[str] = "max"
    task: ClassVar[str] = "binary"
    #: The recipe's file layout: the defaults of the options marked ``LAYOUT``, and the names used in messages.
    layout: ClassVar[TabularLayout] = TabularLayout()

    def __init__(
        self,
        *,
        path: str | None = None,
        batch_size: int = 64,
        val_fraction: float = 0.2,
        partition: str = "iid",
        group_column: str | _LayoutDefault | None = LAYOUT,
        group_balance: str = "resample",
        seed: int = 0,
        synthetic_rows: int | _LayoutDefault = LAYOUT,
        target_column: str | _LayoutDefault = LAYOUT,
        id_column: str | _LayoutDefault | None = LAYOUT,
        categorical_columns: Sequence[str] | _LayoutDefault | None = LAYOUT,
        numeric_columns: Sequence[str] | _LayoutDefault | None = LAYOUT,
        positive_label: str | int | _LayoutDefault | None = LAYOUT,
        delimiter: str | _LayoutDefault = LAYOUT,
        header: bool | _LayoutDefault = LAYOUT,
        column_names: Sequence[str] | _LayoutDefault | None = LAYOUT,
    ) -> None:
        super().__init__()
        self.path = None if path is None else str(path)
        self.batch_size = batch_size
        self.val_fraction = val_fraction
        self.partition = partition
        self.group_balance = group_balance
        self.group_column = self._or_layout("group_column", group_column)
        self.seed = seed
        self.synthetic_rows = self._or_layout("synthetic_rows", synthetic_rows)
        self.target_column = self._or_layout("target_column", target_column)
        self.id_column = self._or_layout("id_column", id_column)
        categorical = self._or_layout("categorical_columns", categorical_columns)
        self.categorical_columns = None if _is_auto(categorical) else as_names(categorical)
        self.numeric_columns = as_names(self._or_layout("numeric_columns", numeric_columns))
        self.positive_label = self._or_layout("positive_label", positive_label)
        self.delimiter = self._or_layout("delimiter", delimiter)
        self.header = self._or_layout("header", header)
        self.column_names = as_names(self._or_layout("column_names", column_names))
        self._check_options()
        self.table: TabularData | None = None
        self.num_numeric: int | None = None
        self.categorical_cardinalities: list[int] | None = None
        self.pos_weight: float | None = None
        self.train_dataset: TensorDataset | None = None
        self.val_dataset: TensorDataset | None = None
        self.train_rows: np.ndarray | None = None
        self.val_rows: np.ndarray | None = None
        self.shard_rank = 0
        self.shard_world_size = 1
        self._table_key: tuple[Any, ...] | None = None
        self._shards: dict[tuple[int, int], list[np.ndarray]] = {}

    def _or_layout(self, name: str, value: Any) -> Any:
        """``value``, or the recipe layout's field ``name`` where the option was not given."""
        return getattr(self.layout, name) if value is LAYOUT else value

    # ------------------------------------------------------------------------------- recipe hooks
    def synthetic_frame(self) -> pd.DataFrame:
        """The recipe's synthetic table (``synthetic_rows`` rows, seeded by ``seed``), in the file layout."""
        if self.layout.synthetic is None:
            raise ValueError(
                f"path: {type(self).__name__} has no synthetic data generator; set path to a CSV file "
                f"(e.g. data.path=/path/to/{self.layout.example_file})."
            )
        return self.layout.synthetic(self.synthetic_rows, self.seed)

    def fill_missing(self, numeric: pd.DataFrame) -> pd.DataFrame:
        """Recipe-specific, row-wise filling of missing numeric values (NaN), before the median fill.

        Args:
            numeric: The numeric feature columns, parsed, with NaN for missing cells (all rows).

        Returns:
            The frame with the values the recipe can derive filled in (default: unchanged).
        """
        return numeric

    # ------------------------------------------------------------------------------- checks
    def _check_options(self) -> None:
        check_scheme(self.partition)
        if self.group_balance not in BALANCE_SCHEMES:
            raise ValueError(
                f"group_balance: group_balance={self.group_balance!r} is unknown; use 'resample' (keep every row; "
                "equal samples per epoch on every rank) or 'cut' (cut every rank's shard to the smallest)."
            )
        for name, low in (("batch_size", 1), ("synthetic_rows", 2), ("seed", 0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{name}: {name}={value!r} is invalid; use an integer >= {low}.")
        fraction = self.val_fraction
        if isinstance(fraction, bool) or not isinstance(fraction, int | float) or not 0.0 < fraction < 1.0:
            raise ValueError(
                f"val_fraction: val_fraction={fraction!r} is out of range; use a share in (0, 1) such as 0.2."
            )
        if self.partition == "by_group" and not self.group_column:
            raise ValueError(
                "group_column: partition='by_group' needs group_column, the column whose values define the groups."
            )
        delimiter_option(self.delimiter)
        if not isinstance(self.header, bool):
            raise ValueError(
                f"header: header={self.header!r} is invalid; use true (the first row names the columns) or false "
                "(every row is data; give column_names)."
            )
        if not self.header and not self.column_names:
            raise ValueError(
                "column_names: header=false needs column_names, the columns' names in file order (e.g. "
                "column_names=[id,x1,x2,y]); or set header=true if the first row names the columns."
            )
        if self.header and self.column_names is not None:
            raise ValueError(
                f"column_names: column_names={self.column_names} is given but header=true (the first row names the "
                "columns); set header=false if the file has no header row, or column_names=null."
            )
        if self.column_names is not None and len(set(self.column_names)) != len(self.column_names):
            twice = sorted({c for c in self.column_names if self.column_names.count(c) > 1})
            raise ValueError(f"column_names: {twice} appear more than once in column_names; name each column once.")
        both = set(self.categorical_columns or ()) & set(self.numeric_columns or ())
        if both:
            raise ValueError(
                f"categorical_columns: {sorted(both)} are listed in both categorical_columns and numeric_columns; "
                "list each column in one of them."
            )

    def check(self, world_size: int = 1) -> None:
        """Load and validate the data in this process, and check that ``world_size`` ranks can train on it.

        Called by the CLI before any process is started, and by :meth:`setup`. The table is loaded once
        and cached (reloaded only if an option it depends on changed), so processes forked after a check
        and the ``setup`` that follows do not read the file again. Sets ``num_numeric``,
        ``categorical_cardinalities`` and ``pos_weight``.

        Args:
            world_size: Number of ranks that will train.

        Raises:
            FileNotFoundError: ``path`` does not exist.
            ValueError: An empty file, a missing column, a non-number in a numeric column, a target with
                one class, a partition scheme that is unknown or leaves some rank too few rows.
        """
        if isinstance(world_size, bool) or not isinstance(world_size, int) or world_size < 1:
            raise ValueError(f"world_size: world_size={world_size!r} is invalid; use an integer >= 1.")
        self._check_options()
        key = self._load_key()
        if self.table is None or key != self._table_key:
            self.table, self._table_key, self._shards = self._load(), key, {}
            self.num_numeric = len(self.table.numeric_columns)
            self.categorical_cardinalities = [len(self.table.categories[c]) + 1 for c in self.table.categorical_columns]
            self.pos_weight = self.table.pos_weight
        shard_key = (world_size, self.batch_size)
        if shard_key not in self._shards:
            self._shards[shard_key] = self._partition(self.table, world_size)

    def _load_key(self) -> tuple[Any, ...]:
        """The options the cached table depends on (changing one reloads it)."""
        return (
            self.path,
            self.seed,
            self.synthetic_rows,
            self.val_fraction,
            self.partition,
            self.group_column if self.partition == "by_group" else None,
            self.group_balance if self.partition == "by_group" else None,
            self.target_column,
            self.id_column,
            None if self.categorical_columns is None else tuple(self.categorical_columns),
            None if self.numeric_columns is None else tuple(self.numeric_columns),
            self.positive_label,
            self.delimiter,
            self.header,
            None if self.column_names is None else tuple(self.column_names),
        )

    def _partition(self, table: TabularData, world_size: int) -> list[np.ndarray]:
        n_train, n_val = len(table.train_idx), len(table.val_idx)
        if n_val < world_size:
            raise ValueError(
                f"val_fraction: the validation split holds {n_val} rows, fewer than the {world_size} ranks, so some "
                f"rank would have no validation row; raise val_fraction (now {self.val_fraction}) or use more data."
            )
        scheme = f"partition={self.partition!r}"
        if self.partition == "by_group":
            assert table.groups is not None
            keys = sorted(set(table.groups[table.train_idx].tolist()))
            if len(keys) < world_size:
                shown = keys if len(keys) <= 10 else [*keys[:10], "…"]
                raise ValueError(
                    f"group_column: partition='by_group' gives every rank whole groups, but column "
                    f"{self.group_column!r} has {len(keys)} distinct values in the training rows {shown} for "
                    f"{world_size} ranks; pick a column with at least {world_size} values, use fewer devices, or "
                    "use partition='iid'."
                )
            groups = table.groups[table.train_idx]
            shards = partition_all(groups, world_size, "by_group", self.seed, self.group_balance)
            scheme += f" on group_column={self.group_column!r}"
        else:
            shards = partition_all(n_train, world_size, "iid", self.seed)
        rows = self._epoch_rows(shards)
        if rows < self.batch_size:
            raise ValueError(
                f"batch_size: with {scheme} over {world_size} ranks, each rank gets {rows} training rows (of "
                f"{n_train} after holding out val_fraction={self.val_fraction}), fewer than batch_size="
                f"{self.batch_size}, so with drop_last=True it would get no batch; lower batch_size to at most "
                f"{max(rows, 1)}, use fewer devices, or use more data"
                + (" (synthetic_rows)." if self.path is None else ".")
            )
        if self.partition == "by_group" and self.group_balance == "cut" and rows * world_size < n_train / 2:
            rank_zero_warn(
                f"partition='by_group' on group_column={self.group_column!r} over {world_size} ranks keeps "
                f"{rows * world_size} of {n_train} training rows ({rows} per rank: every rank is cut to the smallest "
                "rank's size); use fewer ranks, a column with more even groups, or partition='iid'."
            )
        return shards

    def _epoch_rows(self, shards: list[np.ndarray]) -> int:
        """Samples per rank per epoch: the shards' size, or their mean where ``by_group`` resamples."""
        if self.partition == "by_group" and self.group_balance == "resample":
            return sum(len(s) for s in shards) // len(shards)
        return len(shards[0])

    # ------------------------------------------------------------------------------- loading
    def _load(self) -> TabularData:
        """Read and validate the table, split it and encode it (the same on every rank)."""
        columns = dataclasses.replace(
            self.layout,
            target_column=self.target_column,
            id_column=self.id_column,
            categorical_columns=self.categorical_columns,
            numeric_columns=self.numeric_columns,
            positive_label=self.positive_label,
            group_column=self.group_column,
            delimiter=self.delimiter,
            header=self.header,
            column_names=self.column_names,
        )
        reader = TableReader(
            self.path,
            columns,
            synthetic=self.synthetic_frame,
            seed=self.seed,
            by_group=self.partition == "by_group",
            default_positive_label=self.layout.positive_label,
        )
        return self._encode(reader.read())

    def _encode(self, parsed: ParsedTable) -> TabularData:
        """Split the rows, fill missing numbers, standardise them and code the categories (training statistics)."""
        source, numeric, categorical = parsed.source, parsed.numeric_columns, parsed.categorical_columns
        y = parsed.y
        n = len(y)
        n_val = min(max(1, round(n * self.val_fraction)), n - 1) if n > 1 else 0
        if n_val == 0:
            raise ValueError(
                f"path: {source} holds a single data row; a train/validation split needs at least 2, so add data "
                "rows or point data.path at the full file."
            )
        perm = np.random.default_rng(self.seed).permutation(n)
        val_idx, train_idx = np.sort(perm[:n_val]), np.sort(perm[n_val:])
        positives = int(y[train_idx].sum())
        if positives in (0, len(train_idx)):
            raise ValueError(
                f"target_column: after holding out val_fraction={self.val_fraction}, the {len(train_idx)} training "
                f"rows of {source} hold only one class (positives: {positives}); use more data or another seed."
            )

        numbers = self.fill_missing(parsed.numbers)
        train_numbers = numbers.iloc[train_idx]
        fill = train_numbers.median().fillna(0.0).to_numpy(dtype=np.float64)
        values = numbers.fillna(dict(zip(numeric, fill, strict=True))).to_numpy(dtype=np.float64).reshape(n, -1)
        mean = values[train_idx].mean(axis=0) if numeric else np.zeros(0)
        std = values[train_idx].std(axis=0) if numeric else np.ones(0)
        std = np.where(std > 0, std, 1.0)
        x_num = torch.from_numpy(((values - mean) / std).astype(np.float32))

        categories: dict[str, list[str]] = {}
        codes = np.zeros((n, len(categorical)), dtype=np.int64)
        for j, column in enumerate(categorical):
            text = parsed.categories[column]
            seen = sorted(set(text.iloc[train_idx].tolist()))
            categories[column] = seen
            codes[:, j] = pd.Index(seen).get_indexer(text) + 1  # unseen: -1 + 1 = 0
        return TabularData(
            source=source,
            numeric_columns=numeric,
            categorical_columns=categorical,
            x_num=x_num,
            x_cat=torch.from_numpy(codes),
            y=torch.from_numpy(y.astype(np.float32)),
            groups=parsed.groups,
            train_idx=train_idx,
            val_idx=val_idx,
            mean=mean,
            std=std,
            fill=fill,
            categories=categories,
            pos_weight=(len(train_idx) - positives) / positives,
        )

    # ------------------------------------------------------------------------------- Lightning
    def _rank_world(self) -> tuple[int, int]:
        trainer = self.trainer
        if trainer is None:
            return 0, 1
        return int(trainer.global_rank), int(trainer.world_size)

    @override
    def setup(self, stage: str | None = None) -> None:
        """Build this rank's training shard and validation share (see the class docstring)."""
        rank, world = self._rank_world()
        self.check(world)
        table = self.table
        assert table is not None
        train_rows = table.train_idx[self._shards[world, self.batch_size][rank]]
        val_rows = table.val_idx[interleaved_shard(len(table.val_idx), world, rank)]
        self.train_dataset = TensorDataset(table.x_num[train_rows], table.x_cat[train_rows], table.y[train_rows])
        self.val_dataset = TensorDataset(table.x_num[val_rows], table.x_cat[val_rows], table.y[val_rows])
        self.train_rows, self.val_rows = train_rows, val_rows
        self.shard_rank, self.shard_world_size = rank, world

    def _require_setup(self) -> tuple[TensorDataset, TensorDataset]:
        """The training and validation datasets, which ``setup()`` builds."""
        if self.train_dataset is None or self.val_dataset is None:
            raise RuntimeError(f"{type(self).__name__}: call setup() before asking for a dataloader.")
        return self.train_dataset, self.val_dataset

    @override
    def train_dataloader(self) -> DataLoader:
        """This rank's shard, shuffled per epoch from ``(seed + rank, epoch)``, incomplete last batch dropped.

        The loader resumes mid-epoch exactly from a Lightning checkpoint (see :mod:`lit_commeff.recipes.resumable`).
        """
        train_dataset, _ = self._require_setup()
        return ResumableDataLoader(
            train_dataset,
            batch_size=self.batch_size,
            seed=self.seed + self.shard_rank,
            progress=trainer_progress(self),
            num_samples=self._epoch_rows(self._shards[self.shard_world_size, self.batch_size]),
        )

    @override
    def val_dataloader(self) -> DataLoader:
        """This rank's share of the validation rows, in order."""
        _, val_dataset = self._require_setup()
        return DataLoader(val_dataset, batch_size=self.batch_size, shuffle=False)


__all__ = ["LAYOUT", "TabularData", "TabularDataModule"]
