"""Lightning strategies: ``Trainer(strategy="olga")`` and the other names of ``strategy.registry``.

Importing :mod:`lit_commeff` registers the names in Lightning's strategy registry.
"""

from lit_commeff.strategy.base import CommStrategy
from lit_commeff.strategy.compressed import CompressedStrategy
from lit_commeff.strategy.ddp_metered import MeteredDDPStrategy
from lit_commeff.strategy.diloco import DiLoCoStrategy
from lit_commeff.strategy.gated_dane import GatedDANEStrategy
from lit_commeff.strategy.hub import HubAlgorithmStrategy
from lit_commeff.strategy.metering import COMM_METRICS, CommMetering
from lit_commeff.strategy.olga import EFOLGAStrategy, OLGAStrategy
from lit_commeff.strategy.powersgd import PowerSGDStrategy
from lit_commeff.strategy.registry import register_strategies, strategy_classes

__all__ = [
    "COMM_METRICS",
    "CommMetering",
    "CommStrategy",
    "CompressedStrategy",
    "DiLoCoStrategy",
    "EFOLGAStrategy",
    "GatedDANEStrategy",
    "HubAlgorithmStrategy",
    "MeteredDDPStrategy",
    "OLGAStrategy",
    "PowerSGDStrategy",
    "register_strategies",
    "strategy_classes",
]
