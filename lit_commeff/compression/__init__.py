"""Compressors with exact wire accounting.

``compress(x, step=, worker=) -> Payload`` gives exactly the tensors a collective carries;
``decompress(payload)`` rebuilds the tensor. Build by name with :func:`build` or by Hydra ``_target_``.
"""

from lit_commeff.compression.base import SUPPORTED_DTYPES, Compressor, Payload, TensorSpec
from lit_commeff.compression.cast import Cast
from lit_commeff.compression.identity import Identity
from lit_commeff.compression.lowrank import LowRank
from lit_commeff.compression.qsgd import QSGD
from lit_commeff.compression.randk import RandK
from lit_commeff.compression.registry import available, build, register
from lit_commeff.compression.sign import ScaledSign
from lit_commeff.compression.topk import TopK

__all__ = [
    "QSGD",
    "SUPPORTED_DTYPES",
    "Cast",
    "Compressor",
    "Identity",
    "LowRank",
    "Payload",
    "RandK",
    "ScaledSign",
    "TensorSpec",
    "TopK",
    "available",
    "build",
    "register",
]
