"""Finiteness checks shared by the algorithms and the Lightning strategies' non-finite guard."""

from __future__ import annotations

import torch
from torch import Tensor


def all_finite(t: Tensor) -> bool:
    """Whether every entry of ``t`` is finite, exactly, at the cost of one sum in the common case.

    A sum is finite only if every term is (a NaN or an Inf term makes it NaN or ±Inf, whatever the order of the
    reduction), so a finite sum proves the tensor finite without the d-byte mask of ``torch.isfinite``: on a
    1M-entry float32 vector one core sums in about 0.15 ms against 2.7 ms for ``isfinite(t).all()``. A non-finite
    sum may also come from finite terms that overflow; the exact elementwise test then decides.
    """
    if not (t.is_floating_point() or t.is_complex()):
        return True
    if bool(torch.isfinite(t.sum())):
        return True
    return bool(torch.isfinite(t).all())


__all__ = ["all_finite"]
