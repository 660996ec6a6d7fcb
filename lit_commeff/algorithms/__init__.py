"""Distributed optimisation methods as round-by-round state machines.

Each method is written once over a block of workers and talks to them only through a
:class:`~lit_commeff.transport.Transport`, so the simulator and a cluster run the same code.
"""

from lit_commeff.algorithms.acc_extragradient import AccExtraGradient
from lit_commeff.algorithms.accsvrs import AccSVRS
from lit_commeff.algorithms.adiana import ADIANA
from lit_commeff.algorithms.base import Algorithm, LocalOracle, ProblemOracle
from lit_commeff.algorithms.baselines import DIANA, EF21, GradientDescent
from lit_commeff.algorithms.gated_dane import GatedDANE
from lit_commeff.algorithms.local_sgd import DiLoCo, LocalSGD
from lit_commeff.algorithms.locodl import LoCoDL
from lit_commeff.algorithms.olga import EFOLGA, OLGA
from lit_commeff.algorithms.params import PRESETS, OlgaParams, olga_params
from lit_commeff.algorithms.prox import ExactProx, NewtonProx, OptimizerProx

ALGORITHMS: dict[str, type[Algorithm]] = {
    cls.name: cls
    for cls in (
        OLGA,
        EFOLGA,
        AccExtraGradient,
        AccSVRS,
        GradientDescent,
        DIANA,
        EF21,
        ADIANA,
        LoCoDL,
        LocalSGD,
        DiLoCo,
        GatedDANE,
    )
}

__all__ = [
    "ADIANA",
    "ALGORITHMS",
    "DIANA",
    "EF21",
    "EFOLGA",
    "OLGA",
    "PRESETS",
    "AccExtraGradient",
    "AccSVRS",
    "Algorithm",
    "DiLoCo",
    "ExactProx",
    "GatedDANE",
    "GradientDescent",
    "LoCoDL",
    "LocalOracle",
    "LocalSGD",
    "NewtonProx",
    "OlgaParams",
    "OptimizerProx",
    "ProblemOracle",
    "olga_params",
]
