"""Transports: how messages travel (single-process simulator, ``torch.distributed``).

Planned (issues "Optimization core" and "Lightning strategy"): send-to-hub, broadcast and dense
gather, each recording its bytes in a :class:`lit_commeff.ledger.CommLedger`.
"""
