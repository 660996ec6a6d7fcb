"""Reading a tabular recipe's CSV file and validating it: columns, numbers and labels, with file positions in errors.

Data layout: one delimited text file (comma, semicolon, tab, pipe or whitespace separated, detected unless
``delimiter`` is set), with a header row or (``header=False``) with the column names given as
``column_names``; one row per example (a customer, a card holder, …): an optional id column, a binary
target column and feature columns. Numeric features may be written in any form :func:`pandas.to_numeric`
reads (``5e+05`` included); a blank cell (or ``NA``, ``NaN``, ``null``, ``None``) is a missing value.
Categorical features are any strings or integer codes. The target is 0/1 (1 positive), or any two values
with ``positive_label`` naming the positive one: two other codes (1/2, Y/N, good/bad) without
``positive_label`` are an error, never a guess.

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
#: The ``delimiter`` option's values: a name, or the character itself; ``"whitespace"`` is any run of spaces/tabs.
WHITESPACE = "whitespace"
DELIMITERS: dict[str, str] = {"comma": ",", "semicolon": ";", "tab": "\t", "pipe": "|", WHITESPACE: WHITESPACE}
#: ``delimiter="auto"``: the characters tried, in order of preference (then whitespace).
DETECTED: tuple[str, ...] = (",", ";", "\t", "|")
#: Bytes of the file's start read to detect the delimiter.
SNIFF_BYTES = 1 << 16


def delimiter_option(value: object) -> str:
    r"""The ``delimiter`` option as a character (``","``) or ``"whitespace"``; ``"auto"`` stays ``"auto"``.

    Accepts ``auto``, the names of :data:`DELIMITERS` (``comma``, ``semicolon``, ``tab``, ``pipe``,
    ``whitespace``, in any case) and the characters ``,`` ``;`` ``|`` and a tab (``\t`` written out, too).

    Raises:
        ValueError: Any other value, naming the option and the values it takes.
    """
    text = value if isinstance(value, str) else None
    if text is not None:
        if text.lower() in ("auto", *DELIMITERS):
            return "auto" if text.lower() == "auto" else DELIMITERS[text.lower()]
        if text in (",", ";", "|", "\t", "\\t"):
            return "\t" if text == "\\t" else text
        if text and not text.strip():
            return WHITESPACE
    raise ValueError(
        f"delimiter: delimiter={value!r} is unknown; use auto (detect comma, semicolon, tab, pipe or whitespace) or "
        f"one of {list(DELIMITERS)} (e.g. delimiter=semicolon)."
    )


def delimiter_name(delimiter: str) -> str:
    """``";"`` -> ``"semicolon"`` (the option value that selects it)."""
    return next((k for k, v in DELIMITERS.items() if v == delimiter), delimiter)


def detect_delimiter(text: str, *, complete: bool = True) -> str:
    """The delimiter of a delimited text: a character of :data:`DETECTED`, or ``"whitespace"``.

    A candidate fits when every record of ``text`` splits into the same number (>= 2) of fields with it
    (quotes respected); of the fitting characters the one giving the most fields wins (ties: the order of
    :data:`DETECTED`, comma first). If none fits, runs of whitespace are tried. If nothing fits (a ragged
    row), the character splitting the first record into the most fields is taken, so that the ragged row is
    reported with its line; a single column is read as comma-separated.

    Args:
        text: The start of the file.
        complete: Whether ``text`` is the whole file (otherwise its last, maybe cut, line is ignored).
    """
    lines = text.splitlines()
    if not complete and len(lines) > 1:
        lines = lines[:-1]
    lines = [line for line in lines if line.strip()][:200]
    if not lines:
        return ","
    first: dict[str, int] = {}
    fitting: dict[str, int] = {}
    for sep in DETECTED:
        counts = [len(record) for record in csv.reader(lines, delimiter=sep)]
        first[sep] = counts[0] if counts else 1
        if counts and min(counts) == max(counts) >= 2:
            fitting[sep] = counts[0]
    if fitting:
        return max(fitting, key=lambda k: (fitting[k], -DETECTED.index(k)))
    words = {len(line.split()) for line in lines}
    if len(words) == 1 and min(words) >= 2:
        return WHITESPACE
    best = max(first, key=lambda k: (first[k], -DETECTED.index(k)))
    return best if first[best] >= 2 else ","


def record_lines(lines: Iterable[str], delimiter: str = ",") -> list[int]:
    """The 1-based line on which each record of a CSV text starts, the header first, blank lines skipped.

    Records are split as :func:`pandas.read_csv` splits them (``"`` quoting, a quoted cell may span lines,
    lines holding only whitespace are skipped), so that data row ``r`` (0-based, header not counted) of the
    frame starts on line ``record_lines(...)[r + 1]`` (``[r]`` for a file without a header).

    Args:
        lines: The text, line by line with line endings (an open file, or ``text.splitlines(True)``).
        delimiter: The field delimiter, or ``"whitespace"``.

    Returns:
        The start line of every record.
    """
    starts: list[int] = []
    if delimiter == WHITESPACE:
        reader = csv.reader(lines, delimiter=" ", skipinitialspace=True)
    else:
        reader = csv.reader(lines, delimiter=delimiter)
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
        positive_label: The target value of the positive class (the other value is negative); ``None``:
            the target must be 0/1, 1 positive. Any other pair of values (1/2, Y/N, good/bad) needs it.
        group_column: Column whose values define the groups of ``partition="by_group"``.
        synthetic_rows: Rows of synthetic data (``path=None``).
        synthetic: The synthetic generator, ``synthetic(rows, seed)`` -> a frame in the file's layout
            (``None``: the recipe has none, ``path`` is required).
        delimiter: ``"auto"`` (detect comma, semicolon, tab, pipe or whitespace, see
            :func:`detect_delimiter`), a name of :data:`DELIMITERS` or the character.
        header: Whether the file's first row names the columns; ``False``: every row is data, and
            ``column_names`` names the columns.
        column_names: The columns' names in file order, for a file without a header (``header=False``).
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
    delimiter: str = "auto"
    header: bool = True
    column_names: Sequence[str] | None = None


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
        default_positive_label: The recipe's own default of ``positive_label`` (``"Yes"`` for churn): while
            ``layout.positive_label`` is that default, a 0/1 target is also accepted (1 positive); a value
            the user chose must match one of the labels.
    """

    def __init__(
        self,
        path: str | None,
        layout: TabularLayout,
        *,
        synthetic: Callable[[], pd.DataFrame],
        seed: int,
        by_group: bool = False,
        default_positive_label: str | int | None = None,
    ) -> None:
        self.path = path
        self.layout = layout
        self.synthetic = synthetic
        self.seed = seed
        self.by_group = by_group
        self.default_positive_label = default_positive_label
        self.delimiter = delimiter_option(layout.delimiter)
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
        if self.layout.delimiter == "auto" or self.delimiter == "auto":
            self.delimiter = self._detect(path)
        sep = r"\s+" if self.delimiter == WHITESPACE else self.delimiter
        try:
            frame = pd.read_csv(
                path,
                sep=sep,
                header=0 if self.layout.header else None,
                dtype=str,
                keep_default_na=False,
                na_filter=False,
            )
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
        if not self.layout.header:
            frame.columns = self._given_names(path, len(frame.columns))
        frame.columns = [str(c).strip() for c in frame.columns]
        if len(frame) == 0:
            raise ValueError(
                f"path: data file {str(path)!r} has a header ({len(frame.columns)} columns) but no data rows; "
                "add the data rows below the header, or point data.path at the full file."
            )
        self._file = str(path)
        return frame, repr(str(path))

    def _detect(self, path: Path) -> str:
        """``delimiter="auto"``: the delimiter of the file's start (see :func:`detect_delimiter`)."""
        try:
            with open(path, "rb") as fh:
                raw = fh.read(SNIFF_BYTES + 1)
        except OSError:
            return ","  # pandas reports the unreadable file
        text = raw[:SNIFF_BYTES].decode("utf-8", errors="replace")
        return detect_delimiter(text, complete=len(raw) <= SNIFF_BYTES)

    def _given_names(self, path: Path, count: int) -> list[str]:
        """``header=False``: ``column_names``, checked against the ``count`` columns the file has."""
        names = column_names(self.layout.column_names) or []
        if len(names) != count:
            raise ValueError(
                f"column_names: {len(names)} column name(s) given for {str(path)!r}, which has {count} column(s) "
                f"per row (read as {delimiter_name(self.delimiter)}-separated, header=false); give one name per "
                "column, in file order (e.g. column_names=[id,x1,x2,y]), or set delimiter if it was detected wrong."
            )
        return names

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

    def _parse_error(self, path: Path, error: Exception) -> str:
        found = re.search(r"Expected (\d+) fields in line (\d+), saw (\d+)", str(error))
        name = delimiter_name(self.delimiter)
        if found is None:
            return (
                f"path: could not read {str(path)!r} as {name}-separated text ({error}); fix the file, or set "
                "delimiter (and header) to how it is written."
            )
        expected, line, saw = found.groups()
        first = "header" if self.layout.header else "first row"
        cell = "a space" if self.delimiter == WHITESPACE else repr(self.delimiter)
        example = '"a b"' if self.delimiter == WHITESPACE else f'"a{self.delimiter}b"'
        return (
            f"path: {path}:{line}: the row has {saw} fields but the {first} has {expected} (read as {name}-separated"
            f"{', detected' if self.layout.delimiter == 'auto' else ''}); quote cells that hold {cell} ({example}), "
            "set delimiter if the file uses another one, or fix the row (every line needs the same number of cells)."
        )

    def _line(self, row: int) -> int:
        """The line of the data file on which data row ``row`` (0-based, header not counted) starts."""
        assert self._file is not None
        if self._record_lines is None:
            with open(self._file, encoding="utf-8", newline="") as fh:
                self._record_lines = record_lines(fh, self.delimiter)
        lines = self._record_lines
        first = 1 if self.layout.header else 0
        return lines[row + first] if row + first < len(lines) else row + 1 + first

    def _at(self, row: int, column: str | None, source: str) -> str:
        """Where data row ``row`` (0-based) is: ``at FILE:LINE:COLUMN`` for a file, ``of SOURCE`` otherwise."""
        if self._file is None or self._table_columns is None:
            return f"of {source}"
        where = f"{self._file}:{self._line(row)}"
        if column is not None and column in self._table_columns:
            where += f":{self._table_columns.index(column) + 1}"
        return f"at {where}"

    def _check_delimiter(self, columns: list[str]) -> None:
        """A header that holds another delimiter than the one read with: say so before a column is missed."""
        layout = self.layout
        if self._file is None or layout.target_column in columns or not layout.header:
            return
        header = (" " if self.delimiter == WHITESPACE else self.delimiter).join(columns)
        others = {sep: name for sep in DETECTED if sep != self.delimiter for name in [delimiter_name(sep)]}
        counts = {sep: header.count(sep) for sep in others}
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
        read_as = delimiter_name(self.delimiter)
        raise ValueError(
            f"path: {self._file}:1: the header is read as {len(columns)} column(s) ({shown!r}): the delimiter looks "
            f"wrong, the file seems {others[sep]}-separated ({sep!r}) but it is read as {read_as}-separated "
            f"({'detected' if layout.delimiter == 'auto' else f'delimiter={layout.delimiter!r}'}), with columns "
            f"such as {expected} expected; set delimiter={others[sep]} (or delimiter=auto to detect it)."
        )

    def _looks_like_data(self, columns: list[str]) -> str:
        """A hint when the header row holds only numbers: the file probably has no header."""
        if not self.layout.header or self._file is None or not columns:
            return ""
        values, missing, _ = _parse_numbers(pd.Series(columns, dtype=str))
        if not (np.isfinite(values) & ~missing).any():  # no cell is a number: a header
            return ""
        return (
            f" The first line ({columns[:5]}{'...' if len(columns) > 5 else ''}) looks like data, not a header: if the "
            f"file has none, set header=false and column_names to the {len(columns)} columns' names in file order."
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
                other = {
                    "id_column": " (or null: no id column)",
                    "categorical_columns": " (or auto: every non-numeric feature column)",
                    "numeric_columns": " (or null)",
                }.get(field, "")
                raise ValueError(
                    f"{field}: column {column!r} not found in {source}; columns found: {columns}. "
                    f"Set {field} to one of them{other}.{self._looks_like_data(columns)}"
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
        """Target cell texts -> labels (``True``: positive), validated.

        A 0/1 target (numbers: ``1``, ``1.0``) needs no ``positive_label``: 1 is positive. Any other two values
        need ``positive_label`` to name the positive one; without it they are an error, not a guess (taking the
        wrong code as positive inverts every metric).
        """
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
        if len(distinct) > 2:
            first_two = set(pd.unique(text)[:2].tolist())
            row = int(np.flatnonzero(~text.isin(first_two).to_numpy())[0])
            raise ValueError(
                f"target_column {column!r}: a binary task needs two label values, but {source} holds "
                f"{len(distinct)}: {shown} (a third value {text.iloc[row]!r} first in data row {row + 1} "
                f"{self._at(row, column, source)}); map the labels to two values, or set target_column to a "
                "binary column."
            )
        label = self.layout.positive_label
        numbers = pd.to_numeric(text, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
        zero_one = bool(np.isin(numbers, (0.0, 1.0)).all())
        y = None if label is None else _matches(text, numbers, label)
        if y is not None and not y.any() and zero_one and label == self.default_positive_label:
            y = None  # the recipe's default label (churn's "Yes") on a 0/1 target: 1 is positive
        if y is None:
            if not zero_one and len(distinct) == 2:
                a, b = distinct
                raise ValueError(
                    f"positive_label: target_column {column!r} of {source} holds the values {shown}, not 0/1, and "
                    "positive_label is unset, so which value is the positive class is unknown (guessing wrong would "
                    f"invert every metric); set positive_label to the value that marks the positive class: "
                    f"recipe.data.positive_label={a} or recipe.data.positive_label={b} (positive_label= in Python), "
                    "or write the labels as 0/1 with 1 positive."
                )
            y = numbers == 1.0
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


def _matches(text: pd.Series, numbers: np.ndarray, label: object) -> np.ndarray:
    """Which target cells equal ``positive_label``: as text; as a number where both are numbers; a bool any case."""
    if isinstance(label, bool):
        return (text.str.lower() == str(label).lower()).to_numpy()
    wanted = str(label).strip()
    y = (text == wanted).to_numpy()
    number = pd.to_numeric(pd.Series([wanted]), errors="coerce").iloc[0]
    if pd.notna(number):
        y = y | (numbers == float(number))
    return y


__all__ = [
    "DELIMITERS",
    "MISSING_TOKENS",
    "ParsedTable",
    "TableReader",
    "TabularLayout",
    "column_names",
    "delimiter_name",
    "delimiter_option",
    "detect_delimiter",
    "record_lines",
]
