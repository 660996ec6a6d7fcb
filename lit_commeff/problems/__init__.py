"""Convex finite-sum problems split over workers: the paper's ridge and logistic experiments.

:class:`Ridge` (exact L, μ, δ, x*) and :class:`Logistic` (stated bounds and a sampled δ estimate) expose
vectorised per-worker losses and gradients and the hub's prox step. :func:`load_libsvm` reads the
LibSVM datasets; :func:`synthetic_ridge` builds problems with a tunable similarity δ.
"""

from lit_commeff.problems.base import Problem, split_shards
from lit_commeff.problems.libsvm import LibSVMFormatError, load_libsvm
from lit_commeff.problems.logistic import Logistic
from lit_commeff.problems.ridge import Ridge
from lit_commeff.problems.separable import SeparableQuadratic
from lit_commeff.problems.synthetic import synthetic_ridge

__all__ = [
    "LibSVMFormatError",
    "Logistic",
    "Problem",
    "Ridge",
    "SeparableQuadratic",
    "load_libsvm",
    "split_shards",
    "synthetic_ridge",
]
