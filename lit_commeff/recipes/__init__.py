"""Recipes: realistic tasks to train with the lit_commeff strategies, one data module + one model each.

* :mod:`~lit_commeff.recipes.finance_credit`: credit-card default (UCI "default of credit card
  clients", ``UCI_Credit_Card.csv`` layout) — :class:`CreditDataModule`, :class:`CreditClassifier`.
* :mod:`~lit_commeff.recipes.telecom_churn`: customer churn (IBM Telco, ``Telco-Customer-Churn.csv``
  layout) — :class:`ChurnDataModule`, :class:`ChurnClassifier`.
* :mod:`~lit_commeff.recipes.throughput`: downlink throughput forecasting from radio KPIs (5G production
  traces zip layout) — :class:`ThroughputDataModule`, :class:`ThroughputForecaster` (GRU or Transformer);
  a package of ``reading`` (zip and synthetic traces, cleaning, checks), ``datamodule`` and ``model``.
* :mod:`~lit_commeff.recipes.tabular`: what the tabular recipes share, a package of ``reading`` (CSV
  loading and validation against a :class:`TabularLayout`), ``datamodule`` (split, encoding, rank-local
  shards) and ``model`` (the MLP). A tabular recipe is a :class:`TabularDataModule` subclass that states
  its layout, and so its defaults, once (``layout = TabularLayout(...)``).
* :mod:`~lit_commeff.recipes.partition`: the partitioning schemes.

Every data module works offline (``path=None`` generates synthetic data of the file's layout), has
``monitor``/``mode``/``task`` class attributes, a ``check(world_size)`` that validates the data before
processes start, and builds each rank's own shard in ``setup``; run the Trainer with
``use_distributed_sampler=False``::

    import lightning.pytorch as pl
    import lit_commeff  # registers strategy="olga" & co.
    from lit_commeff.recipes import CreditClassifier, CreditDataModule

    data = CreditDataModule(path="UCI_Credit_Card.csv", partition="by_group")
    trainer = pl.Trainer(strategy="olga", devices=2, max_epochs=5, use_distributed_sampler=False)
    trainer.fit(CreditClassifier(), datamodule=data)
"""

from lit_commeff.recipes.finance_credit import CreditClassifier, CreditDataModule, synthetic_credit
from lit_commeff.recipes.partition import PARTITION_SCHEMES, interleaved_shard, partition_all, partition_indices
from lit_commeff.recipes.tabular import TabularClassifier, TabularData, TabularDataModule, TabularLayout
from lit_commeff.recipes.telecom_churn import ChurnClassifier, ChurnDataModule, synthetic_churn
from lit_commeff.recipes.throughput import ThroughputDataModule, ThroughputForecaster

__all__ = [
    "PARTITION_SCHEMES",
    "ChurnClassifier",
    "ChurnDataModule",
    "CreditClassifier",
    "CreditDataModule",
    "TabularClassifier",
    "TabularData",
    "TabularDataModule",
    "TabularLayout",
    "ThroughputDataModule",
    "ThroughputForecaster",
    "interleaved_shard",
    "partition_all",
    "partition_indices",
    "synthetic_churn",
    "synthetic_credit",
]
