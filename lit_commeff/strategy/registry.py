"""Registered strategy names: ``Trainer(strategy="olga")`` and friends."""

from __future__ import annotations

from typing import TYPE_CHECKING

from lightning.pytorch.strategies import StrategyRegistry

from lit_commeff.strategy.base import CommStrategy

if TYPE_CHECKING:  # the class of Lightning's StrategyRegistry (a dict with register())
    from lightning.fabric.strategies.registry import _StrategyRegistry

#: name -> (class path, description); classes are imported lazily where possible.
DESCRIPTIONS = {
    "olga": "OLGA: unbiased compression + data similarity + acceleration (hub = rank 0)",
    "ef_olga": "EF-OLGA: biased compression with error feedback + similarity + acceleration",
    "compressed": "Compression only: DIANA (unbiased) or EF21 (biased compressor)",
    "powersgd": "DDP with torch's PowerSGD hook on every backend (CPU/gloo included), bytes metered",
    "diloco": "DiLoCo / local SGD: local steps + periodic averaging of deltas with outer Nesterov",
    "ddp_metered": "Lightning DDP with the bytes of every all-reduce metered (dense reference)",
    "gated_dane": "Gated DANE: every rank trains on its similarity-corrected subproblem; compressed, drift-gated sync",
}


def strategy_classes() -> dict[str, type[CommStrategy]]:
    """Name -> strategy class."""
    from lit_commeff.strategy.compressed import CompressedStrategy
    from lit_commeff.strategy.olga import EFOLGAStrategy, OLGAStrategy

    classes: dict[str, type[CommStrategy]] = {
        "olga": OLGAStrategy,
        "ef_olga": EFOLGAStrategy,
        "compressed": CompressedStrategy,
    }
    from lit_commeff.strategy.ddp_metered import MeteredDDPStrategy
    from lit_commeff.strategy.diloco import DiLoCoStrategy
    from lit_commeff.strategy.gated_dane import GatedDANEStrategy
    from lit_commeff.strategy.powersgd import PowerSGDStrategy

    classes.update({"powersgd": PowerSGDStrategy, "diloco": DiLoCoStrategy, "ddp_metered": MeteredDDPStrategy})
    classes["gated_dane"] = GatedDANEStrategy
    return classes


def register_strategies(registry: _StrategyRegistry | None = None) -> list[str]:
    """Register every lit_commeff strategy in Lightning's registry (idempotent); returns the names.

    Each method gets three names, as Lightning's ``ddp`` does: ``olga`` starts processes like
    ``torchrun`` (re-running the script), ``olga_spawn`` and ``olga_fork`` start them from the running
    interpreter (notebooks, tests). A name already owned by someone else's strategy is left alone.
    """
    registry = StrategyRegistry if registry is None else registry
    names = []
    for base, cls in strategy_classes().items():
        for suffix, start_method in (("", "popen"), ("_spawn", "spawn"), ("_fork", "fork")):
            name = base + suffix
            if name in registry:
                current = registry[name]["strategy"]
                if not (isinstance(current, type) and issubclass(current, CommStrategy)):
                    continue
            description = f"{DESCRIPTIONS[base]}; start_method={start_method!r}"
            registry.register(name, cls, description=description, override=True, start_method=start_method)
            names.append(name)
    return names
