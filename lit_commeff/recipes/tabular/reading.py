"""Reading a tabular recipe's CSV file and validating it: columns, numbers and labels, with file positions in errors.

Data layout: one CSV file with a header row, one row per example (a customer, a card holder, …): an
optional id column, a binary target column and feature columns. Numeric features may be written in any
form :func:`pandas.to_numeric` reads (``5e+05`` included); a blank cell (or ``NA``, ``NaN``, ``null``,
``None``) is a missing value. Categorical features are any strings or integer codes.

:class:`TabularLayout` names the columns' roles (a recipe states its layout once, as
:attr:`~lit_commeff.recipes.tabular.TabularDataModule.layout`); :class:`TableReader` reads the file, or the
recipe's synthetic table, and checks it against the layout: a problem is a ``ValueError`` (or
``FileNotFoundError``) naming the option or ``FILE:LINE:COLUMN`` and the fix.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

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


def column_names(value: Sequence[str] | None) -> list[str] | None:
    """A list of column names from a list, tuple, single name or Hydra ListConfig (``None`` stays ``None``)."""
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


@dataclass(frozen=True)
class TabularLayout:
    """A tabular recipe's file layout: the columns' roles, and the names used in messages.

    A :class:`~lit_commeff.recipes.tabular.TabularDataModule` subclass states its layout once, as the class
    attribute ``layout``; the data module's column options (and ``synthetic_rows``) default to its fields,
    and an option passed to the constructor overrides the field.

    Attributes:
        name: Recipe name used in messages (``"the synthetic credit default data"``).
        example_file: File name used in messages (``data.path=/path/to/UCI_Credit_Card.csv``).
        target_column: The binary label column.
        id_column: A row identifier to ignore (``None``: there is none).
        categorical_columns: Categorical feature columns; ``None``: every feature column that is not in
            ``numeric_columns`` and holds a non-numeric value.
        numeric_columns: Columns that must be numeric (a non-number there is an error, not a category).
        positive_label: The target value of the positive class; ``None``: the target must be 0/1.
        group_column: Column whose values define the groups of ``partition="by_group"``.
        synthetic_rows: Rows of synthetic data (``path=None``).
        synthetic: The synthetic generator, ``synthetic(rows, seed)`` -> a frame in the file's layout
            (``None``: the recipe has none, ``path`` is required).
    """

    name: str = "tabular"
    example_file: str = "data.csv"
    target_column: str = "target"
    id_column: str | None = None
    categorical_columns: Sequence[str] | None = None
    numeric_columns: Sequence[str] | None = None
    positive_label: str | int | None = None
    group_column: str | None = None
    synthetic_rows: int = 10000
    synthetic: Callable[[int, int], pd.DataFrame] | None = None


@dataclass
class ParsedTable:
    """A table read and validated by :class:`TableReader`, not yet split or encoded.

    Attributes:
        source: Where the rows came from (the quoted path, or the synthetic generator).
        numeric_columns: Numeric feature columns, in ``numbers``' order.
        categorical_columns: Categorical feature columns.
        numbers: ``[n, len(numeric_columns)]`` float64 values, NaN where a cell is missing.
        categories: Per categorical column, the stripped cell texts of every row.
        y: ``[n]`` bool labels (``True``: positive).
        groups: Group key (text) of every row, when the reader was asked for groups; else ``None``.
    """

    source: str
    numeric_columns: list[str]
    categorical_columns: list[str]
    numbers: pd.DataFrame
    categories: dict[str, pd.Series]
    y: np.ndarray
    groups: np.ndarray | None


class TableReader:
    """Reads one CSV file (or a recipe's synthetic table) and checks it against a :class:`TabularLayout`.

    Errors point at ``FILE:LINE:COLUMN`` where a file is read (the line found by :func:`record_lines`, so
    quoted cells spanning lines are counted as the file has them), and say what to change.

    Args:
        path: The CSV file; ``None`` reads ``synthetic()`` instead.
        layout: The columns' roles (the data module's options, resolved).
        synthetic: Makes the synthetic frame (called only when ``path=None``).
        seed: The synthetic data's seed (named in messages).
        by_group: Whether ``layout.group_column`` is required and its values returned as groups.
    """

    def __init__(
        self,
        path: str | None,
        layout: TabularLayout,
        *,
        synthetic: Callable[[], pd.DataFrame],
        seed: int,
        by_group: bool = False,
    ) -> None:
        self.path = path
        self.layout = layout
        self.synthetic = synthetic
        self.seed = seed
        self.by_group = by_group
        self._file: str | None = None
        self._record_lines: list[int] | None = None
        self._table_columns: list[str] | None = None

    def _hint(self) -> str:
        return (
            f"point data.path at the real file (e.g. data.path=/path/to/{self.layout.example_file}), or leave path "
            "unset (null) to use the built-in synthetic data"
        )

    def _read_frame(self) -> tuple[pd.DataFrame, str]:
        self._file, self._record_lines = None, None
        if self.path is None:
            frame = self.synthetic()
            source = f"the synthetic {self.layout.name} data ({len(frame)} rows, seed={self.seed})"
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
        layout = self.layout
        if self._file is None or layout.target_column in columns:
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
                    layout.id_column,
                    *(layout.categorical_columns or ()),
                    *(layout.numeric_columns or ()),
                    layout.group_column,
                    layout.target_column,
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

    def read(self) -> ParsedTable:
        """Read the table and validate every column the layout names, the numeric cells and the labels.

        Raises:
            FileNotFoundError: ``path`` does not exist.
            ValueError: An unreadable, empty or wrongly delimited file, a missing column, a non-number in a
                numeric column, a missing label, or labels that are not two classes.
        """
        layout = self.layout
        frame, source = self._read_frame()
        columns = list(frame.columns)
        self._table_columns = columns
        self._check_delimiter(columns)

        def need(field: str, column: str | None) -> None:
            if column not in columns:
                raise ValueError(
                    f"{field}: column {column!r} not found in {source}; columns found: {columns}. "
                    f"Set {field} to one of them."
                )

        need("target_column", layout.target_column)
        if layout.id_column is not None:
            need("id_column", layout.id_column)
        for column in layout.categorical_columns or ():
            need("categorical_columns", column)
        for column in layout.numeric_columns or ():
            need("numeric_columns", column)
        if self.by_group:
            need("group_column", layout.group_column)

        text = {c: frame[c].astype(str).str.strip() for c in columns}
        features = [c for c in columns if c not in (layout.target_column, layout.id_column)]
        if layout.categorical_columns is not None:
            categorical = [c for c in features if c in layout.categorical_columns]
        else:
            forced = set(layout.numeric_columns or ())
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
        y = self._labels(text[layout.target_column], source)
        groups = text[layout.group_column].to_numpy(dtype=object) if self.by_group else None
        return ParsedTable(
            source=source,
            numeric_columns=numeric,
            categorical_columns=categorical,
            numbers=pd.DataFrame(parsed, index=frame.index, columns=numeric, dtype=np.float64),
            categories={c: text[c] for c in categorical},
            y=y,
            groups=groups,
        )

    def _labels(self, text: pd.Series, source: str) -> np.ndarray:
        """Target cell texts -> 0/1 labels (validated)."""
        column = self.layout.target_column
        missing = _missing(text)
        if missing.any():
            row = int(np.flatnonzero(missing)[0])
            raise ValueError(
                f"target_column {column!r}: data row {row + 1} ({ROW_NOTE}) {self._at(row, column, source)} has no "
                f"label ({_rows(int(missing.sum()))} like this); every row needs a label: fill it in or remove the row."
            )
        distinct = sorted(set(text.tolist()))
        shown = distinct if len(distinct) <= 10 else [*distinct[:10], "…"]
        label = self.layout.positive_label
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


__all__ = [
    "MISSING_TOKENS",
    "ParsedTable",
    "TableReader",
    "TabularLayout",
    "column_names",
    "record_lines",
]
