"""A strict reader for LibSVM / svmlight sparse text files (binary classification).

Each data line is ``label index:value index:value ...`` with 1-based, strictly increasing indices.
Blank lines are skipped, trailing whitespace is allowed and anything after ``#`` is a comment.
"""

from __future__ import annotations

import errno
import math
import operator
import os
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
    """A LibSVM file is malformed; the message reads ``"{path}:{line_no}: {reason}"``."""


def _fmt_label(value: float) -> str:
    return f"{value:g}"


def _parse_number(text: str) -> float:
    """``float(text)``, rejecting the underscores Python would accept (``1_0``)."""
    if "_" in text:
        raise ValueError(text)
    return float(text)


class _LineError(Exception):
    """The reason one line is malformed (wrapped into a LibSVMFormatError with path and line number)."""


def _parse_line(tokens: list[str], n_features: int | None) -> tuple[float, list[int], list[float]]:
    """Parse the tokens of one data line into (label, 1-based indices, values)."""
    label_text = tokens[0]
    try:
        label = _parse_number(label_text)
    except ValueError:
        raise _LineError(f"bad label {label_text!r}: expected a number such as +1, -1, 0, 1 or 2") from None
    if not math.isfinite(label):
        raise _LineError(f"bad label {label_text!r}: labels must be finite")
    indices: list[int] = []
    values: list[float] = []
    prev = 0
    for tok in tokens[1:]:
        idx_text, sep, val_text = tok.partition(":")
        if not sep:
            raise _LineError(f"token {tok!r} has no ':' (expected index:value)")
        try:
            if "_" in idx_text:
                raise ValueError(idx_text)
            idx = int(idx_text)
        except ValueError:
            raise _LineError(f"index {idx_text!r} in token {tok!r} is not an integer") from None
        if idx < 1:
            raise _LineError(f"index {idx} in token {tok!r} is invalid: indices are 1-based")
        if idx <= prev:
            raise _LineError(
                f"index {idx} in token {tok!r} does not increase (previous index {prev}): "
                "indices must be strictly increasing"
            )
        if n_features is not None and idx > n_features:
            raise _LineError(f"index {idx} in token {tok!r} exceeds n_features={n_features}")
        try:
            val = _parse_number(val_text)
        except ValueError:
            raise _LineError(f"value {val_text!r} in token {tok!r} is not a number") from None
        if not math.isfinite(val):
            raise _LineError(f"value {val_text!r} in token {tok!r} is not finite")
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
        raise FileNotFoundError(errno.ENOENT, "LibSVM file not found", path_str)

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
                tokens = (raw if hash_pos < 0 else raw[:hash_pos]).split()
                if not tokens:
                    continue
                try:
                    label, indices, values = _parse_line(tokens, n_features)
                except _LineError as exc:
                    raise LibSVMFormatError(f"{path_str}:{line_no}: {exc}") from None
                if indices:
                    max_index = max(max_index, indices[-1])
                    rows.extend([len(labels)] * len(indices))
                    cols.extend(i - 1 for i in indices)
                    vals.extend(values)
                labels.append(label)
    except UnicodeDecodeError as exc:
        raise LibSVMFormatError(
            f"{path_str}: not UTF-8 / ASCII text (decoding failed after line {line_no}: {exc.reason})"
        ) from None
    except IsADirectoryError:
        raise FileNotFoundError(errno.EISDIR, "LibSVM path is a directory, not a file", path_str) from None
    n_rows = len(labels)

    if n_rows == 0:
        raise LibSVMFormatError(f"{path_str}: no data rows (the file is empty or holds only blank/comment lines)")
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
            f"{path}: found {len(distinct)} distinct labels {shown}; a binary problem needs 2 labels ({supported})"
        )
    raise LibSVMFormatError(f"{path}: labels {shown} are not a supported binary encoding; use {supported}")
