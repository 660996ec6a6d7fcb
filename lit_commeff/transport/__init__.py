"""Transports: how messages travel between workers and the hub, each transfer recorded in the ledger.

:class:`Transport` is the interface algorithms use; :class:`SimulatorTransport` runs M virtual
workers in one process; :class:`DistributedTransport` runs one worker per ``torch.distributed`` rank
with the hub on rank 0. Algorithms cannot tell them apart.
"""

from lit_commeff.transport.base import Transport
from lit_commeff.transport.distributed import DistributedTransport
from lit_commeff.transport.simulator import SimulatorTransport

__all__ = ["DistributedTransport", "SimulatorTransport", "Transport"]
