"""What the tabular recipes share: reading and validating a CSV, the data module with rank-local shards, the MLP.

* :mod:`~lit_commeff.recipes.tabular.reading`: the file layout (:class:`TabularLayout`) and the reader that
  checks a CSV against it (:class:`TableReader`; errors name the option or ``FILE:LINE:COLUMN``).
* :mod:`~lit_commeff.recipes.tabular.datamodule`: :class:`TabularDataModule` (split, encoding, partition,
  loaders) and the encoded table :class:`TabularData`.
* :mod:`~lit_commeff.recipes.tabular.model`: :class:`TabularClassifier`, the MLP with embeddings.

The recipes :mod:`~lit_commeff.recipes.finance_credit` (UCI "default of credit card clients") and
:mod:`~lit_commeff.recipes.telecom_churn` (IBM Telco customer churn) subclass the data module with their
:class:`TabularLayout` (which also holds their synthetic generator of the same layout).
"""

from lit_commeff.recipes.partition import PARTITION_SCHEMES
from lit_commeff.recipes.tabular.datamodule import LAYOUT, TabularData, TabularDataModule
from lit_commeff.recipes.tabular.model import TabularClassifier, embedding_dim
from lit_commeff.recipes.tabular.reading import (
    MISSING_TOKENS,
    ParsedTable,
    TableReader,
    TabularLayout,
    column_names,
    record_lines,
)

__all__ = [
    "LAYOUT",
    "MISSING_TOKENS",
    "PARTITION_SCHEMES",
    "ParsedTable",
    "TableReader",
    "TabularClassifier",
    "TabularData",
    "TabularDataModule",
    "TabularLayout",
    "column_names",
    "embedding_dim",
    "record_lines",
]
