"""lit_commeff: communication-efficient distributed training for PyTorch Lightning.

Implements OLGA / EF-OLGA (Bylinkin & Beznosikov, AAAI'25, "Accelerated Methods with Compressed
Communications for Distributed Optimization Problems under Data Similarity") on top of a compressor
library with exact wire accounting.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("lit_commeff")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0+unknown"

from lit_commeff.strategy import register_strategies

STRATEGIES = register_strategies()  # Trainer(strategy="olga") works after `import lit_commeff`

__all__ = ["STRATEGIES", "__version__"]
