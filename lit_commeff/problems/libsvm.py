"""A strict reader for LibSVM / svmlight sparse text files (binary classification).

Each data line is ``label index:value index:value ...`` with 1-based, strictly increasing indices.
Blank lines are skipped, trailing whitespace is allowed and anything after ``#`` is a comment.
"""

from __future__ import annotations

import errno
import math
import operator
import os
import re
from array import array

import torch
from torch import Tensor

#: Binary label encodings :func:`load_libsvm` understands, as (accepted labels, label mapped to -1).
_BINARY_ENCODINGS: tuple[tuple[frozenset[float], float | None], ...] = (
    (frozenset({-1.0, 1.0}), None),  # kept as is
    (frozenset({0.0, 1.0}), 0.0),  # 1 -> +1, 0 -> -1
    (frozenset({1.0, 2.0}), 2.0),  # 1 -> +1, 2 -> -1 (mushrooms)
)


class LibSVMFormatError(ValueError):
    """A LibSVM file is malformed.

    A malformed line reads ``"{path}:{line_no}: {reason} (at {path}:{line_no}:{column}); {fix}"``, where
    ``column`` is the 1-based character offset of the bad token in the line; a file-level problem reads
    ``"{path}: {reason}; {fix}"``.
    """


def _fmt_label(value: float) -> str:
    return f"{value:g}"


def _parse_number(text: str) -> float:
    """``float(text)``, rejecting the underscores Python would accept (``1_0``)."""
    if "_" in text:
        raise ValueError(text)
    return float(text)


_TOKEN = re.compile(r"\S+")


class _LineError(Exception):
    """Why one line is malformed: the reason, the 1-based column of the bad token and how to fix it.

    Wrapped into a :class:`LibSVMFormatError` with the path and line number.
    """

    def __init__(self, reason: str, column: int, fix: str) -> None:
        super().__init__(reason)
        self.reason, self.column, self.fix = reason, column, fix


def _parse_line(content: str, n_features: int | None) -> tuple[float, list[int], list[float]]:
    """Parse one data line (comment removed, at least one token) into (label, 1-based indices, values)."""
    tokens = [(m.group(), m.start() + 1) for m in _TOKEN.finditer(content)]
    label_text, label_col = tokens[0]
    label_fix = "start every line with its label, a number such as +1, -1, 0, 1 or 2"
    if ":" in label_text:
        raise _LineError(
            f"the line starts with {label_text!r}, an index:value token, not a label", label_col, label_fix
        )
    try:
        label = _parse_number(label_text)
    except ValueError:
        raise _LineError(f"bad label {label_text!r}: not a number", label_col, label_fix) from None
    if not math.isfinite(label):
        raise _LineError(f"bad label {label_text!r}: labels must be finite", label_col, label_fix)
    indices: list[int] = []
    values: list[float] = []
    prev = 0
    for tok, col in tokens[1:]:
        idx_text, sep, val_text = tok.partition(":")
        if not sep:
            raise _LineError(
                f"token {tok!r} has no ':' (expected index:value)", col, "write each feature as index:value, e.g. 3:0.5"
            )
        try:
            if "_" in idx_text:
                raise ValueError(idx_text)
            idx = int(idx_text)
        except ValueError:
            raise _LineError(
                f"index {idx_text!r} in token {tok!r} is not an integer",
                col,
                "use a positive integer feature index (1, 2, ...) before the ':'",
            ) from None
        if idx < 1:
            raise _LineError(
                f"index {idx} in token {tok!r} is invalid: indices are 1-based",
                col,
                "number the features from 1 (add 1 to every index of a 0-based file)",
            )
        if idx <= prev:
            raise _LineError(
                f"index {idx} in token {tok!r} does not increase (previous index {prev}): "
                "indices must be strictly increasing",
                col,
                "sort each line's features by index and list every index once",
            )
        if n_features is not None and idx > n_features:
            raise _LineError(
                f"index {idx} in token {tok!r} exceeds n_features={n_features}",
                col,
                f"pass n_features >= {idx} (or n_features=None to use the largest index in the file)",
            )
        try:
            val = _parse_number(val_text)
        except ValueError:
            raise _LineError(
                f"value {val_text!r} in token {tok!r} is not a number",
                col,
                "write the value as a decimal number, e.g. 3:0.5 or 3:1e-3",
            ) from None
        if not math.isfinite(val):
            raise _LineError(
                f"value {val_text!r} in token {tok!r} is not finite",
                col,
                "replace it with a finite number, or leave the feature out of the line (it is then 0)",
            )
        prev = idx
        indices.append(idx)
        values.append(val)
    return label, indices, values


def load_libsvm(
    path: str | os.PathLike[str],
    *,
    n_features: int | None = None,
    dtype: torch.dtype = torch.float64,
) -> tuple[Tensor, Tensor]:
    """Read a binary-classification LibSVM file into a dense design matrix and ±1 labels.

    Labels are mapped to {+1, -1}: ``{-1, +1}`` is kept, ``{0, 1}`` maps 1 -> +1 and 0 -> -1,
    ``{1, 2}`` (mushrooms) maps 1 -> +1 and 2 -> -1. A file whose labels are a subset of one of these
    encodings is mapped by the first that fits, in that order.

    Args:
        path: File to read (UTF-8 / ASCII text).
        n_features: Number of columns d. Default: the largest index in the file. Give it when the file
            may not use the last feature (a9a.t uses at most 122 of a9a's 123 features).
        dtype: Floating dtype of the returned tensors.

    Returns:
        ``(A, b)``: ``A`` of shape (n, d) with the listed entries (all others zero) and ``b`` of shape
        (n,) with values in {+1, -1}, both of ``dtype`` on the CPU.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        LibSVMFormatError: A malformed line (bad label, a token without ``:``, a non-integer, zero,
            negative or non-increasing index, a non-numeric or non-finite value, an index above
            ``n_features``), a file without data rows, or labels that are not a binary encoding.
        ValueError: ``n_features`` is not a positive integer or ``dtype`` is not a floating dtype.
    """
    if n_features is not None:
        if isinstance(n_features, bool):
            raise ValueError(f"n_features must be a positive int or None, got {n_features!r}")
        try:
            n_features = operator.index(n_features)
        except TypeError:
            raise ValueError(f"n_features must be a positive int or None, got {n_features!r}") from None
        if n_features < 1:
            raise ValueError(f"n_features must be >= 1 (the number of feature columns), got {n_features}")
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise ValueError(f"dtype must be a floating torch.dtype (e.g. torch.float64), got {dtype!r}")
    path_str = os.fspath(path)
    if not os.path.exists(path_str):
        raise FileNotFoundError(errno.ENOENT, "LibSVM file not found; pass the path of an existing file", path_str)

    labels = array("d")
    rows = array("q")
    cols = array("q")
    vals = array("d")
    max_index = 0
    line_no = 0
    try:
        with open(path_str, encoding="utf-8") as fh:
            for line_no, raw in enumerate(fh, start=1):
                hash_pos = raw.find("#")
                content = raw if hash_pos < 0 else raw[:hash_pos]
                if not content.strip():
                    continue
                try:
                    label, indices, values = _parse_line(content, n_features)
                except _LineError as exc:
                    raise LibSVMFormatError(
                        f"{path_str}:{line_no}: {exc.reason} (at {path_str}:{line_no}:{exc.column}); {exc.fix}."
                    ) from None
                if indices:
                    max_index = max(max_index, indices[-1])
                    rows.extend([len(labels)] * len(indices))
                    cols.extend(i - 1 for i in indices)
                    vals.extend(values)
                labels.append(label)
    except UnicodeDecodeError as exc:
        raise LibSVMFormatError(_not_text(path_str, exc)) from None
    except IsADirectoryError:
        raise FileNotFoundError(
            errno.EISDIR, "LibSVM path is a directory, not a file; pass the path of the data file inside it", path_str
        ) from None
    n_rows = len(labels)

    if n_rows == 0:
        raise LibSVMFormatError(
            f"{path_str}: no data rows (the file is empty or holds only blank/comment lines); pass a file with "
            "lines 'label index:value ...' (e.g. '+1 3:0.5 7:1')."
        )
    d = n_features if n_features is not None else max_index
    if d == 0:
        raise LibSVMFormatError(f"{path_str}: no feature entries in any row; pass n_features to set the width")

    A = torch.zeros(n_rows, d, dtype=dtype)
    if len(vals):
        A[torch.tensor(rows, dtype=torch.long), torch.tensor(cols, dtype=torch.long)] = torch.tensor(
            vals, dtype=torch.float64
        ).to(dtype)
    b = torch.tensor(labels, dtype=torch.float64)
    b = _map_binary_labels(b, path_str).to(dtype)
    return A, b


def _not_text(path: str, exc: UnicodeDecodeError) -> str:
    """The message for a file that is not UTF-8, with the line and column of the first bad byte."""
    with open(path, "rb") as fh:
        raw = fh.read()
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as err:
        exc = err
        line = raw.count(b"\n", 0, err.start) + 1
        column = err.start - (raw.rfind(b"\n", 0, err.start) + 1) + 1
        where = f"{path}:{line}:{column}"
    else:
        where = path
    return (
        f"{where}: not UTF-8 / ASCII text ({exc.reason}: byte 0x{exc.object[exc.start]:02x}); pass a LibSVM text "
        "file (decompress .bz2/.xz downloads first) or re-save it as UTF-8."
    )


def _map_binary_labels(b: Tensor, path: str) -> Tensor:
    distinct = sorted(set(b.unique().tolist()))
    shown = "{" + ", ".join(_fmt_label(v) for v in distinct) + "}"
    supported = "{-1, +1}, {0, 1} or {1, 2}"
    for accepted, negative in _BINARY_ENCODINGS:
        if set(distinct) <= accepted:
            if negative is None:
                return b
            return torch.where(b == negative, -1.0, 1.0).to(b.dtype)
    if len(distinct) > 2:
        raise LibSVMFormatError(
            f"{path}: found {len(distinct)} distinct labels {shown}; a binary problem needs 2 labels ({supported}); "
            "use a binary dataset or map the labels to one of these encodings"
        )
    raise LibSVMFormatError(f"{path}: labels {shown} are not a supported binary encoding; use {supported}")
