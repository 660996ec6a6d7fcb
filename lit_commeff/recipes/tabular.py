"""Shared code of the tabular recipes: a CSV data module with rank-local shards, and an MLP classifier.

Data layout: one CSV file with a header row, one row per example (a customer, a card holder, …): an
optional id column, a binary target column and feature columns. Numeric features may be written in any
form :func:`pandas.to_numeric` reads (``5e+05`` included); a blank cell (or ``NA``, ``NaN``, ``null``,
``None``) is a missing value. Categorical features are any strings or integer codes. The recipes
:mod:`~lit_commeff.recipes.finance_credit` (UCI "default of credit card clients") and
:mod:`~lit_commeff.recipes.telecom_churn` (IBM Telco customer churn) configure this module for their
layouts and add a synthetic generator of the same layout.

How the data becomes each rank's tensors (:class:`TabularDataModule`):

1. Read and validate the table (:meth:`TabularDataModule.check`, in the launching process too).
2. One seeded validation split (``val_fraction``), the same on every rank, before any partitioning.
3. Missing numeric values filled (recipe rule, then the training median); numeric features
   standardised and categorical values coded with statistics of all training rows, so every rank
   uses the same encoding.
4. Each rank takes its own training shard (:mod:`~lit_commeff.recipes.partition`: ``"iid"`` or
   ``"by_group"``) and an equal interleaved share of the validation rows; the validation metrics are
   torchmetrics objects that synchronise across ranks, so they are computed over the whole set.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import lightning.pytorch as pl
import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset
from torchmetrics.classification import BinaryAUROC, BinaryAveragePrecision, BinaryF1Score

from lit_commeff.recipes.partition import (
    BALANCE_SCHEMES,
    PARTITION_SCHEMES,
    check_scheme,
    interleaved_shard,
    partition_all,
)
from lit_commeff.recipes.resumable import ResumableDataLoader, trainer_progress

#: Cell texts read as a missing value (compared after stripping, case-insensitively).
MISSING_TOKENS: frozenset[str] = frozenset({"", "na", "n/a", "nan", "null", "none"})

ROW_NOTE = "1-based, header not counted"
#: Delimiters a CSV file written with the wrong one most likely uses (checked when the header looks wrong).
OTHER_DELIMITERS: dict[str, str] = {";": "semicolon", "\t": "tab", "|": "pipe"}


def record_lines(lines: Iterable[str]) -> list[int]:
    """The 1-based line on which each record of a CSV text starts, the header first, blank lines skipped.

    Records are split as :func:`pandas.read_csv` splits them (``,`` delimiter, ``"`` quoting, a quoted cell
    may span lines, lines holding only whitespace are skipped), so that data row ``r`` (0-based, header not
    counted) of the frame starts on line ``record_lines(...)[r + 1]``.

    Args:
        lines: The text, line by line with line endings (an open file, or ``text.splitlines(True)``).

    Returns:
        The start line of every record.
    """
    starts: list[int] = []
    reader = csv.reader(lines)
    previous = 0
    for fields in reader:
        if fields and not (len(fields) == 1 and not fields[0].strip()):
            starts.append(previous + 1)
        previous = reader.line_num
    return starts


def _names(value: Sequence[str] | None) -> list[str] | None:
    """A list of column names from a list, tuple or Hydra ListConfig (``None`` stays ``None``)."""
    if value is None:
        return None
    if isinstance(value, str):
        return [value]
    return [str(v) for v in value]


def _rows(count: int) -> str:
    return f"{count} row" if count == 1 else f"{count} rows"


def _missing(text: pd.Series) -> np.ndarray:
    return text.str.lower().isin(MISSING_TOKENS).to_numpy()


def _parse_numbers(text: pd.Series) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Stripped cell texts -> (values with NaN for missing, missing mask, garbage mask)."""
    missing = _missing(text)
    values = pd.to_numeric(text.where(~missing), errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan, copy=True)
    bad = ~missing & ~np.isfinite(values)
    values[missing] = np.nan
    return values, missing, bad


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

    Args:
        path: CSV file; ``None`` generates the recipe's synthetic data (offline default).
        batch_size: Training and validation batch size per rank.
        val_fraction: Share of rows held out for validation, in (0, 1).
        partition: ``"iid"`` or ``"by_group"`` (see above).
        group_column: Column whose values define the groups of ``partition="by_group"``.
        group_balance: ``"resample"`` or ``"cut"``: how ``by_group`` gives every rank the same number of steps
            per epoch (see above).
        seed: Seed of the synthetic data, the validation split, the partition and the shuffling
            (rank ``r`` shuffles with ``seed + r``).
        synthetic_rows: Number of rows the synthetic generator makes (``path=None``).
        target_column: The binary label column.
        id_column: A row identifier to ignore (``None``: there is none).
        categorical_columns: Categorical feature columns; ``None``: every feature column that is not in
            ``numeric_columns`` and holds a non-numeric value (the object-dtype columns).
        numeric_columns: Columns that must be numeric (a non-number there is an error, not a category);
            every feature column that is not categorical is numeric in any case.
        positive_label: The target value of the positive class (compared as text, or as a number when
            both are numbers); ``None``: the target must be 0/1.
    """

    #: Metric to monitor (checkpointing, early stopping) and its direction.
    monitor: ClassVar[str] = "val/auroc"
    mode: ClassVar[str] = "max"
    task: ClassVar[str] = "binary"
    #: Recipe name and file name used in messages.
    layout_name: ClassVar[str] = "tabular"
    example_file: ClassVar[str] = "data.csv"

    def __init__(
        self,
        *,
        path: str | None = None,
        batch_size: int = 64,
        val_fraction: float = 0.2,
        partition: str = "iid",
        group_column: str | None = None,
        group_balance: str = "resample",
        seed: int = 0,
        synthetic_rows: int = 10000,
        target_column: str = "target",
        id_column: str | None = None,
        categorical_columns: Sequence[str] | None = None,
        numeric_columns: Sequence[str] | None = None,
        positive_label: str | int | None = None,
    ) -> None:
        super().__init__()
        self.path = None if path is None else str(path)
        self.batch_size = batch_size
        self.val_fraction = val_fraction
        self.partition = partition
        self.group_balance = group_balance
        self.group_column = group_column
        self.seed = seed
        self.synthetic_rows = synthetic_rows
        self.target_column = target_column
        self.id_column = id_column
        self.categorical_columns = _names(categorical_columns)
        self.numeric_columns = _names(numeric_columns)
        self.positive_label = positive_label
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
        self._file: str | None = None
        self._record_lines: list[int] | None = None
        self._table_columns: list[str] | None = None

    # ------------------------------------------------------------------------------- recipe hooks
    def synthetic_frame(self) -> pd.DataFrame:
        """The recipe's synthetic table (``synthetic_rows`` rows, seeded by ``seed``), in the file layout."""
        raise ValueError(
            f"path: {type(self).__name__} has no synthetic data generator; set path to a CSV file "
            f"(e.g. data.path=/path/to/{self.example_file})."
        )

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
    def _hint(self) -> str:
        return (
            f"point data.path at the real file (e.g. data.path=/path/to/{self.example_file}), or leave path unset "
            "(null) to use the built-in synthetic data"
        )

    def _read(self) -> tuple[pd.DataFrame, str]:
        self._file, self._record_lines = None, None
        if self.path is None:
            frame = self.synthetic_frame()
            source = f"the synthetic {self.layout_name} data ({len(frame)} rows, seed={self.seed})"
            return frame.astype(str), source
        path = Path(self.path).expanduser()
        if not path.exists():
            raise FileNotFoundError(f"path: data file {str(path)!r} does not exist; {self._hint()}.")
        if path.is_dir():
            raise ValueError(f"path: {str(path)!r} is a directory, not a CSV file; {self._hint()}.")
        empty = (
            f"path: data file {str(path)!r} is empty; expected a CSV file with a header row and data rows; "
            f"{self._hint()}."
        )
        if path.stat().st_size == 0:
            raise ValueError(empty)
        try:
            frame = pd.read_csv(path, dtype=str, keep_default_na=False, na_filter=False)
        except pd.errors.EmptyDataError:
            raise ValueError(empty) from None
        except UnicodeDecodeError:
            raise ValueError(self._not_utf8(path)) from None
        except pd.errors.ParserError as error:
            raise ValueError(self._parse_error(path, error)) from None
        except OSError as error:
            raise ValueError(
                f"path: cannot read data file {str(path)!r} ({error.strerror or error}); check that the file is "
                "readable (permissions) or point data.path at a readable copy."
            ) from None
        frame.columns = [str(c).strip() for c in frame.columns]
        if len(frame) == 0:
            raise ValueError(
                f"path: data file {str(path)!r} has a header ({len(frame.columns)} columns) but no data rows; "
                "add the data rows below the header, or point data.path at the full file."
            )
        self._file = str(path)
        return frame, repr(str(path))

    @staticmethod
    def _not_utf8(path: Path) -> str:
        raw = path.read_bytes()
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError as error:
            line = raw.count(b"\n", 0, error.start) + 1
            column = error.start - (raw.rfind(b"\n", 0, error.start) + 1) + 1
            where, byte = f"{path}:{line}:{column}", f"0x{raw[error.start]:02x}"
        else:  # pandas failed where Python did not: no position to report
            where, byte = str(path), "?"
        return (
            f"path: {where}: the data file is not UTF-8 text (byte {byte} cannot be decoded); re-save it as UTF-8 "
            "CSV (e.g. pandas.read_csv(path, encoding='latin-1').to_csv(path, index=False)), or decompress it first "
            "if it is a .zip/.gz download."
        )

    @staticmethod
    def _parse_error(path: Path, error: Exception) -> str:
        found = re.search(r"Expected (\d+) fields in line (\d+), saw (\d+)", str(error))
        if found is None:
            return (
                f"path: could not read {str(path)!r} as CSV ({error}); fix the file, or re-save it as a "
                "comma-separated CSV with a header row."
            )
        expected, line, saw = found.groups()
        return (
            f"path: {path}:{line}: the row has {saw} fields but the header has {expected}; quote cells that hold a "
            'comma ("a,b"), or fix the row (a CSV needs the same number of cells on every line).'
        )

    def _line(self, row: int) -> int:
        """The line of the data file on which data row ``row`` (0-based, header not counted) starts."""
        assert self._file is not None
        if self._record_lines is None:
            with open(self._file, encoding="utf-8", newline="") as fh:
                self._record_lines = record_lines(fh)
        lines = self._record_lines
        return lines[row + 1] if row + 1 < len(lines) else row + 2

    def _at(self, row: int, column: str | None, source: str) -> str:
        """Where data row ``row`` (0-based) is: ``at FILE:LINE:COLUMN`` for a file, ``of SOURCE`` otherwise."""
        if self._file is None or self._table_columns is None:
            return f"of {source}"
        where = f"{self._file}:{self._line(row)}"
        if column is not None and column in self._table_columns:
            where += f":{self._table_columns.index(column) + 1}"
        return f"at {where}"

    def _check_delimiter(self, columns: list[str]) -> None:
        """A header that holds another delimiter than ``,`` (``;``, tab, ``|``): say so before a column is missed."""
        if self._file is None or self.target_column in columns:
            return
        header = ",".join(columns)
        counts = {sep: header.count(sep) for sep in OTHER_DELIMITERS}
        sep = max(counts, key=lambda k: counts[k])
        if counts[sep] == 0:
            return
        expected = [
            c
            for c in dict.fromkeys(
                [
                    self.id_column,
                    *(self.categorical_columns or ()),
                    *(self.numeric_columns or ()),
                    self.group_column,
                    self.target_column,
                ]
            )
            if c
        ]
        shown = header if len(header) <= 80 else header[:77] + "..."
        raise ValueError(
            f"path: {self._file}:1: the header is read as {len(columns)} column(s) ({shown!r}): the delimiter looks "
            f"wrong, the file seems {OTHER_DELIMITERS[sep]}-separated ({sep!r}) but a comma-separated CSV is expected, "
            f"with columns such as {expected}; re-save it with ',' as the delimiter (e.g. "
            f"pandas.read_csv(path, sep={sep!r}).to_csv(path, index=False))."
        )

    def _load(self) -> TabularData:
        frame, source = self._read()
        columns = list(frame.columns)
        self._table_columns = columns
        self._check_delimiter(columns)

        def need(field: str, column: str) -> None:
            if column not in columns:
                raise ValueError(
                    f"{field}: column {column!r} not found in {source}; columns found: {columns}. "
                    f"Set {field} to one of them."
                )

        need("target_column", self.target_column)
        if self.id_column is not None:
            need("id_column", self.id_column)
        for column in self.categorical_columns or ():
            need("categorical_columns", column)
        for column in self.numeric_columns or ():
            need("numeric_columns", column)
        if self.partition == "by_group":
            need("group_column", self.group_column)

        text = {c: frame[c].astype(str).str.strip() for c in columns}
        features = [c for c in columns if c not in (self.target_column, self.id_column)]
        if self.categorical_columns is not None:
            categorical = [c for c in features if c in self.categorical_columns]
        else:
            forced = set(self.numeric_columns or ())
            categorical = [c for c in features if c not in forced and _parse_numbers(text[c])[2].any()]
        numeric = [c for c in features if c not in categorical]

        parsed = {}
        for column in numeric:
            values, _, bad = _parse_numbers(text[column])
            if bad.any():
                row = int(np.flatnonzero(bad)[0])
                raise ValueError(
                    f"numeric column {column!r}: data row {row + 1} ({ROW_NOTE}) {self._at(row, column, source)} "
                    f"holds {frame[column].iloc[row]!r}, which is not a number ({_rows(int(bad.sum()))} like this); "
                    "fix the file (a blank cell is read as missing), or list the column in categorical_columns if it "
                    "is categorical."
                )
            parsed[column] = values
        y = self._labels(text[self.target_column], source)

        n = len(frame)
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

        numbers = pd.DataFrame(parsed, index=frame.index, columns=numeric, dtype=np.float64)
        numbers = self.fill_missing(numbers)
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
            seen = sorted(set(text[column].iloc[train_idx].tolist()))
            categories[column] = seen
            codes[:, j] = pd.Index(seen).get_indexer(text[column]) + 1  # unseen: -1 + 1 = 0
        groups = text[self.group_column].to_numpy(dtype=object) if self.partition == "by_group" else None
        return TabularData(
            source=source,
            numeric_columns=numeric,
            categorical_columns=categorical,
            x_num=x_num,
            x_cat=torch.from_numpy(codes),
            y=torch.from_numpy(y.astype(np.float32)),
            groups=groups,
            train_idx=train_idx,
            val_idx=val_idx,
            mean=mean,
            std=std,
            fill=fill,
            categories=categories,
            pos_weight=(len(train_idx) - positives) / positives,
        )

    def _labels(self, text: pd.Series, source: str) -> np.ndarray:
        """Target cell texts -> 0/1 labels (validated)."""
        column = self.target_column
        missing = _missing(text)
        if missing.any():
            row = int(np.flatnonzero(missing)[0])
            raise ValueError(
                f"target_column {column!r}: data row {row + 1} ({ROW_NOTE}) {self._at(row, column, source)} has no "
                f"label ({_rows(int(missing.sum()))} like this); every row needs a label: fill it in or remove the row."
            )
        distinct = sorted(set(text.tolist()))
        shown = distinct if len(distinct) <= 10 else [*distinct[:10], "…"]
        label = self.positive_label
        if label is None:
            values = pd.to_numeric(text, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
            outside = ~np.isin(values, (0.0, 1.0))
            if outside.any():
                row = int(np.flatnonzero(outside)[0])
                raise ValueError(
                    f"target_column {column!r}: with positive_label unset the labels must be 0/1, but {source} holds "
                    f"{shown} (first other value {text.iloc[row]!r} in data row {row + 1} "
                    f"{self._at(row, column, source)}); set positive_label to the positive class (e.g. "
                    "positive_label=Yes), or write the labels as 0/1."
                )
            y = values == 1.0
        else:
            if len(distinct) > 2:
                first_two = set(pd.unique(text)[:2].tolist())
                row = int(np.flatnonzero(~text.isin(first_two).to_numpy())[0])
                raise ValueError(
                    f"target_column {column!r}: a binary task needs two label values, but {source} holds "
                    f"{len(distinct)}: {shown} (a third value {text.iloc[row]!r} first in data row {row + 1} "
                    f"{self._at(row, column, source)}); map the labels to two values, or set target_column to a "
                    "binary column."
                )
            y = (text == str(label)).to_numpy()
            if isinstance(label, int | float) and not isinstance(label, bool):
                numbers = pd.to_numeric(text, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
                y = y | (numbers == float(label))
        if y.all() or not y.any():
            which = "positive" if y.all() else "negative"
            if label is not None and not y.any() and len(distinct) == 2:
                fix = (
                    f"positive_label={label!r} matches none of these values: set positive_label to the positive "
                    f"class, one of {shown}"
                )
            else:
                fix = (
                    f"use a file that holds both classes (this one has the single label value {distinct[0]!r}), "
                    "or set target_column to the label column"
                    if len(distinct) == 1
                    else "use a file that holds both classes, or set target_column to the label column"
                )
            raise ValueError(
                f"target_column {column!r}: every one of the {len(y)} rows of {source} is {which} (values found: "
                f"{shown}, positive_label={label!r}); a binary task needs both classes; {fix}."
            )
        return y

    # ------------------------------------------------------------------------------- Lightning
    def _rank_world(self) -> tuple[int, int]:
        trainer = self.trainer
        if trainer is None:
            return 0, 1
        return int(trainer.global_rank), int(trainer.world_size)

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

    def _require_setup(self) -> None:
        if self.train_dataset is None or self.val_dataset is None:
            raise RuntimeError(f"{type(self).__name__}: call setup() before asking for a dataloader.")

    def train_dataloader(self) -> DataLoader:
        """This rank's shard, shuffled per epoch from ``(seed + rank, epoch)``, incomplete last batch dropped.

        The loader resumes mid-epoch exactly from a Lightning checkpoint (see :mod:`lit_commeff.recipes.resumable`).
        """
        self._require_setup()
        return ResumableDataLoader(
            self.train_dataset,
            batch_size=self.batch_size,
            seed=self.seed + self.shard_rank,
            progress=trainer_progress(self),
            num_samples=self._epoch_rows(self._shards[self.shard_world_size, self.batch_size]),
        )

    def val_dataloader(self) -> DataLoader:
        """This rank's share of the validation rows, in order."""
        self._require_setup()
        return DataLoader(self.val_dataset, batch_size=self.batch_size, shuffle=False)


def embedding_dim(cardinality: int) -> int:
    """Embedding width of a categorical column with ``cardinality`` codes: ``min(8, (cardinality + 1) // 2)``."""
    return min(8, (cardinality + 1) // 2)


class TabularClassifier(pl.LightningModule):
    """An MLP binary classifier over standardised numeric features and embedded categorical codes.

    Input: the batches of :class:`TabularDataModule`, ``(x_num, x_cat, y)``. Each categorical column
    has an embedding of width ``min(8, (cardinality + 1) // 2)``; the embeddings and numeric features
    are concatenated and fed through ``Linear → ReLU (→ Dropout)`` layers of sizes ``hidden`` and a
    final ``Linear`` to one logit. Loss: binary cross-entropy on the logit, with ``pos_weight``
    (negatives / positives) on the positive class when ``balance`` is true.

    Input sizes: pass ``num_numeric`` and ``categorical_cardinalities`` to build the layers at once;
    otherwise they are taken from the data module, by :meth:`configure_from` or automatically in
    :meth:`configure_model` from ``trainer.datamodule`` (Lightning calls it after the data module's
    ``setup`` and before the strategy sets up the model and optimizer). Weights are initialised from
    ``init_seed`` alone, so every rank builds the same model. The resolved sizes are stored in
    ``hparams``, so a checkpoint rebuilds the same model.

    Logged: ``train/loss`` (every step), ``val/loss`` (epoch mean, synchronised), ``val/auroc``,
    ``val/ap`` (average precision) and ``val/f1`` (at probability 0.5), torchmetrics objects that
    synchronise their state across ranks.

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
        self.val_auroc = BinaryAUROC()
        self.val_ap = BinaryAveragePrecision()
        self.val_f1 = BinaryF1Score()
        if num_numeric is not None and cards is not None:
            self._build(int(num_numeric), cards)

    # ------------------------------------------------------------------------------- building
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
            datamodule: A :class:`TabularDataModule` after ``check()`` or ``setup()`` (anything with
                ``num_numeric``, ``categorical_cardinalities`` and ``pos_weight``).

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

    def configure_model(self) -> None:
        """Build the layers from ``trainer.datamodule`` if the input sizes were not given."""
        datamodule = getattr(self._trainer, "datamodule", None) if self._trainer is not None else None
        if datamodule is not None and getattr(datamodule, "num_numeric", None) is not None:
            self.configure_from(datamodule)
        elif not self.built:
            raise ValueError(
                f"num_numeric: {type(self).__name__} does not know its input sizes; pass num_numeric and "
                "categorical_cardinalities, call model.configure_from(datamodule), or fit with a TabularDataModule "
                "(trainer.fit(model, datamodule=...))."
            )

    # ------------------------------------------------------------------------------- forward and loss
    def forward(self, x_num: Tensor, x_cat: Tensor) -> Tensor:
        """Logits ``[b]`` of the positive class."""
        if self.mlp is None or self.embeddings is None:
            raise RuntimeError(f"{type(self).__name__}: the layers are not built yet (see configure_from).")
        parts = [x_num, *(emb(x_cat[:, j]) for j, emb in enumerate(self.embeddings))]
        return self.mlp(torch.cat(parts, dim=1)).squeeze(-1)

    def loss(self, logits: Tensor, y: Tensor) -> Tensor:
        """Binary cross-entropy on logits, the positive class weighted by ``pos_weight`` when ``balance``."""
        weight = self.hparams.pos_weight if self.hparams.balance else None
        pos_weight = None if weight is None else torch.tensor(weight, dtype=logits.dtype, device=logits.device)
        return F.binary_cross_entropy_with_logits(logits, y.to(logits.dtype), pos_weight=pos_weight)

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        x_num, x_cat, y = batch
        loss = self.loss(self(x_num, x_cat), y)
        self.log("train/loss", loss, on_step=True, on_epoch=False, prog_bar=True, batch_size=len(y))
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x_num, x_cat, y = batch
        logits = self(x_num, x_cat)
        self.log("val/loss", self.loss(logits, y), on_step=False, on_epoch=True, sync_dist=True, batch_size=len(y))
        probs, target = torch.sigmoid(logits.float()), y.long()
        for name, metric in (("auroc", self.val_auroc), ("ap", self.val_ap), ("f1", self.val_f1)):
            metric.update(probs, target)
            self.log(f"val/{name}", metric, on_step=False, on_epoch=True, prog_bar=name == "auroc")

    def predict_step(self, batch: Any, batch_idx: int) -> Tensor:
        """Probabilities of the positive class."""
        x_num, x_cat = batch[0], batch[1]
        return torch.sigmoid(self(x_num, x_cat))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        if not self.built:
            raise RuntimeError(f"{type(self).__name__}: the layers are not built yet (see configure_from).")
        hp = self.hparams
        if hp.optimizer == "sgd":
            return torch.optim.SGD(self.parameters(), lr=hp.lr, momentum=hp.momentum, weight_decay=hp.weight_decay)
        if hp.optimizer == "adam":
            return torch.optim.Adam(self.parameters(), lr=hp.lr, weight_decay=hp.weight_decay)
        return torch.optim.AdamW(self.parameters(), lr=hp.lr, weight_decay=hp.weight_decay)


__all__ = [
    "MISSING_TOKENS",
    "PARTITION_SCHEMES",
    "TabularClassifier",
    "TabularData",
    "TabularDataModule",
    "embedding_dim",
]
