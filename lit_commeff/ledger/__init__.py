"""Communication accounting: :class:`CommLedger` records every transfer and derives CC-1/2/3, bytes and γ."""

from lit_commeff.ledger.deferred import DeferredLedger
from lit_commeff.ledger.ledger import CommLedger, Direction, RoundStats, ring_wire_bytes

__all__ = ["CommLedger", "DeferredLedger", "Direction", "RoundStats", "ring_wire_bytes"]
