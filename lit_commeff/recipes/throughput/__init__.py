"""Recipe ``telecom_throughput``: forecast 5G downlink throughput from radio KPIs, one time series per trace.

* :mod:`~lit_commeff.recipes.throughput.reading`: the traces, from the 5G production dataset zip
  (:func:`read_zip`) or built-in synthetic ones (:func:`make_synthetic_traces`), and their cleaning and
  checks (errors name the zip member, column and row).
* :mod:`~lit_commeff.recipes.throughput.datamodule`: :class:`ThroughputDataModule`: windows, the split
  into whole training and validation traces, standardisation, the partition over ranks, the loaders.
* :mod:`~lit_commeff.recipes.throughput.model`: :class:`ThroughputForecaster`, a GRU or a small
  Transformer with a Huber loss and metrics in Mbit/s.

Example:
    >>> import lightning.pytorch as pl
    >>> data = ThroughputDataModule(window=16, synthetic_traces=6, synthetic_length=200)
    >>> model = ThroughputForecaster(arch="gru", hidden=16)
    >>> trainer = pl.Trainer(max_steps=5, use_distributed_sampler=False, logger=False)  # doctest: +SKIP
    >>> trainer.fit(model, datamodule=data)  # doctest: +SKIP
"""

from lit_commeff.recipes.throughput.datamodule import ThroughputDataModule, WindowDataset, window_starts
from lit_commeff.recipes.throughput.model import ARCHS, OPTIMIZERS, ThroughputForecaster
from lit_commeff.recipes.throughput.reading import (
    BITRATE_COLUMNS,
    DEFAULT_FEATURES,
    MISSING_MARKERS,
    MOBILITY_NAMES,
    SYNTHETIC_MOBILITY,
    Trace,
    make_synthetic_traces,
    mobility_of,
    read_zip,
)

__all__ = [
    "ARCHS",
    "BITRATE_COLUMNS",
    "DEFAULT_FEATURES",
    "MISSING_MARKERS",
    "MOBILITY_NAMES",
    "OPTIMIZERS",
    "SYNTHETIC_MOBILITY",
    "ThroughputDataModule",
    "ThroughputForecaster",
    "Trace",
    "WindowDataset",
    "make_synthetic_traces",
    "mobility_of",
    "read_zip",
    "window_starts",
]
