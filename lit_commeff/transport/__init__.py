"""Transports: how messages travel between workers and the hub, each transfer recorded in the ledger.

:class:`Transport` is the interface algorithms use; :class:`SimulatorTransport` runs M virtual
workers in one process. The ``torch.distributed`` transport (hub = rank 0) implements the same
interface (planned with the Lightning strategy).
"""

from lit_commeff.transport.base import Transport
from lit_commeff.transport.simulator import SimulatorTransport

__all__ = ["SimulatorTransport", "Transport"]
