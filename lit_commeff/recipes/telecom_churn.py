"""Telecom recipe: will a subscriber leave (churn)? (binary, ~26% positives).

Data: IBM sample data "Telco Customer Churn" (IBM Watson Analytics / Cognos sample; on Kaggle as
``WA_Fn-UseC_-Telco-Customer-Churn.csv``; the copy in ``IBM/telco-customer-churn-on-icp4d`` is
``data/Telco-Customer-Churn.csv``): 7,043 customers of a fictional operator, 21 columns,

* ``customerID`` (row id, ignored),
* ``gender`` (Female/Male), ``SeniorCitizen`` (0/1), ``Partner``, ``Dependents`` (Yes/No),
* ``tenure`` (months with the operator, 0–72),
* ``PhoneService`` (Yes/No), ``MultipleLines`` (Yes/No/No phone service),
  ``InternetService`` (DSL/Fiber optic/No), ``OnlineSecurity``, ``OnlineBackup``, ``DeviceProtection``,
  ``TechSupport``, ``StreamingTV``, ``StreamingMovies`` (Yes/No/No internet service),
* ``Contract`` (Month-to-month/One year/Two year), ``PaperlessBilling`` (Yes/No), ``PaymentMethod``
  (Electronic check, Mailed check, Bank transfer (automatic), Credit card (automatic)),
* ``MonthlyCharges``, ``TotalCharges`` (dollars),
* ``Churn``: the target, ``Yes`` = left within the last month.

Every text column except the id and the target is categorical (embedded); ``SeniorCitizen``,
``tenure``, ``MonthlyCharges`` and ``TotalCharges`` are numeric. Quirk of the file: ``TotalCharges`` is
a single space for the 11 customers with ``tenure`` 0 (nothing billed yet). Those blanks are missing
values, filled with ``MonthlyCharges × tenure``, which is 0 for them (the charges billed so far), see
:meth:`ChurnDataModule.fill_missing`; any other non-number there (``"abc"``) is an error that names the
column and the row. Without a ``path`` the recipe generates synthetic data of the same layout
(:func:`synthetic_churn`).
"""

from __future__ import annotations

import string
from typing import ClassVar

import numpy as np
import pandas as pd
from typing_extensions import override

from lit_commeff.recipes.tabular import TabularClassifier, TabularDataModule, TabularLayout

TARGET = "Churn"
ADDONS = ("OnlineSecurity", "OnlineBackup", "DeviceProtection", "TechSupport", "StreamingTV", "StreamingMovies")
#: Column order of ``Telco-Customer-Churn.csv``.
COLUMNS: tuple[str, ...] = (
    "customerID",
    "gender",
    "SeniorCitizen",
    "Partner",
    "Dependents",
    "tenure",
    "PhoneService",
    "MultipleLines",
    "InternetService",
    *ADDONS,
    "Contract",
    "PaperlessBilling",
    "PaymentMethod",
    "MonthlyCharges",
    "TotalCharges",
    TARGET,
)
NUMERIC = ("SeniorCitizen", "tenure", "MonthlyCharges", "TotalCharges")

# Per add-on service: share of internet customers taking it, monthly price, effect on the churn logit.
_ADDON_SHARE = dict(zip(ADDONS, (0.37, 0.44, 0.44, 0.37, 0.49, 0.5), strict=True))
_ADDON_PRICE = dict(zip(ADDONS, (5.0, 5.0, 5.0, 5.0, 10.0, 10.0), strict=True))
_ADDON_CHURN = dict(zip(ADDONS, (-0.5, -0.25, -0.15, -0.5, 0.15, 0.15), strict=True))


def synthetic_churn(rows: int = 7000, seed: int = 0) -> pd.DataFrame:
    """Synthetic subscribers in the ``Telco-Customer-Churn.csv`` layout (deterministic given ``seed``).

    Shares follow the IBM data (contracts 55% month-to-month; internet 44% fiber, 34% DSL, 22% none;
    phone service 90%; add-on services; payment methods). Tenure depends on the contract (median about
    a year for month-to-month, 3–5 years for one- and two-year contracts); monthly charges add up the
    services; total charges are about monthly × tenure, and, as in the real file, a single space for
    the few customers with tenure 0. Churn is drawn from a logistic link: month-to-month contracts, short
    tenure, fiber, electronic checks, paperless billing and seniors churn more; security and support
    add-ons, long contracts and dependents less. About 26% churn.

    Args:
        rows: Number of customers.
        seed: Seed of every random draw.

    Returns:
        A frame with the columns of :data:`COLUMNS` (``TotalCharges`` as text, like the file).
    """
    rng = np.random.default_rng(seed)
    n = rows
    yes_no = np.array(["No", "Yes"])
    letters = np.array(list(string.ascii_uppercase))
    digits = rng.integers(0, 10000, n)
    suffix = letters[rng.integers(0, 26, (n, 5))]
    ids = [f"{d:04d}-{''.join(s)}" for d, s in zip(digits, suffix, strict=True)]
    gender = rng.choice(["Female", "Male"], n)
    senior = (rng.random(n) < 0.162).astype(np.int64)
    partner = rng.random(n) < 0.48
    dependents = rng.random(n) < np.where(partner, 0.52, 0.1)
    contract = rng.choice(["Month-to-month", "One year", "Two year"], n, p=[0.55, 0.21, 0.24])
    monthly_contract = contract == "Month-to-month"
    mean_tenure = np.select([monthly_contract, contract == "One year"], [18.0, 42.0], 57.0) + 6.0 * partner
    tenure = np.clip(np.round(rng.gamma(2.0, mean_tenure / 2.0)), 1, 72).astype(np.int64)
    tenure[~monthly_contract & (rng.random(n) < 0.0035)] = 0  # signed this month: nothing billed yet
    phone = rng.random(n) < 0.903
    multiple = np.where(phone, yes_no[(rng.random(n) < 0.47).astype(int)], "No phone service")
    internet = rng.choice(["DSL", "Fiber optic", "No"], n, p=[0.27, 0.49, 0.24])
    internet[~phone] = "DSL"  # customers without phone service are DSL-only in the IBM data
    online = internet != "No"
    fiber = internet == "Fiber optic"
    monthly = 20.0 * phone + 5.0 * (multiple == "Yes") + np.select([internet == "DSL", fiber], [25.0, 50.0], 0.0)
    addons: dict[str, np.ndarray] = {}
    addon_churn = np.zeros(n)
    for name in ADDONS:
        taken = online & (rng.random(n) < _ADDON_SHARE[name] + 0.004 * (tenure - 32))
        addons[name] = np.where(online, yes_no[taken.astype(int)], "No internet service")
        monthly = monthly + _ADDON_PRICE[name] * taken
        addon_churn = addon_churn + _ADDON_CHURN[name] * taken
    monthly = np.round(np.clip(monthly + rng.normal(0.0, 2.5, n), 18.25, 118.75), 2)
    paperless = rng.random(n) < np.where(online, 0.67, 0.3)
    electronic = rng.random(n) < np.where(monthly_contract, 0.5, 0.2)
    other = rng.choice(["Mailed check", "Bank transfer (automatic)", "Credit card (automatic)"], n)
    payment = np.where(electronic, "Electronic check", other)
    total = np.round(monthly * tenure * rng.normal(1.0, 0.03, n), 2)
    total_text = np.where(tenure == 0, " ", np.char.mod("%.2f", total))

    logit = (
        0.85
        + np.select([monthly_contract, contract == "One year"], [0.9, -0.4], -1.6)
        - 0.9 * np.log1p(tenure)
        + 1.1 * fiber
        - 0.9 * (internet == "No")
        + 0.45 * electronic
        + 0.3 * paperless
        + 0.25 * senior
        - 0.15 * dependents
        + addon_churn
        + 0.6 * rng.standard_normal(n)
    )
    churn = yes_no[(rng.random(n) < 1.0 / (1.0 + np.exp(-logit))).astype(int)]
    columns = {
        "customerID": ids,
        "gender": gender,
        "SeniorCitizen": senior,
        "Partner": yes_no[partner.astype(int)],
        "Dependents": yes_no[dependents.astype(int)],
        "tenure": tenure,
        "PhoneService": yes_no[phone.astype(int)],
        "MultipleLines": multiple,
        "InternetService": internet,
        **addons,
        "Contract": contract,
        "PaperlessBilling": yes_no[paperless.astype(int)],
        "PaymentMethod": payment,
        "MonthlyCharges": monthly,
        "TotalCharges": total_text,
        TARGET: churn,
    }
    return pd.DataFrame(columns, columns=list(COLUMNS))


class ChurnDataModule(TabularDataModule):
    """Telco churn data (``Telco-Customer-Churn.csv`` layout, or synthetic) for :class:`ChurnClassifier`.

    See :class:`~lit_commeff.recipes.tabular.TabularDataModule` for the options, splitting, partitioning
    and encoding. ``group_column`` defaults to ``Contract`` (3 values, 55/24/21%): it is the strongest churn
    driver (about 43% churn month-to-month against 11% and 3% on one- and two-year contracts), so
    ``partition="by_group"`` gives strongly label-skewed shards, like separate sales channels, which is
    the hard case for methods that rely on data similarity. ``InternetService`` (DSL/Fiber optic/No) is
    the milder alternative. Either allows at most 3 ranks.

    The layout sets the option defaults: ``target_column="Churn"`` (``positive_label="Yes"``),
    ``id_column="customerID"`` (ignored), ``categorical_columns=None`` (every text column except id and
    target), ``numeric_columns`` ``SeniorCitizen``, ``tenure``, ``MonthlyCharges`` and ``TotalCharges`` (so
    that a non-number there is an error, not a category; ``TotalCharges``' blanks are missing values), a
    header row, the delimiter detected, and 7,000 rows of :func:`synthetic_churn` without a ``path``. While
    ``positive_label`` is that default ``"Yes"``, a 0/1 target is accepted too (1 = churn); any other coding
    (``Y``/``N``, ``True``/``False``) needs ``positive_label``.

    Another operator's table: set the column options to its layout, e.g. ``ChurnDataModule(path="subs.tsv",
    target_column="churned", id_column=None, numeric_columns=None, group_column="plan")``.
    """

    layout: ClassVar[TabularLayout] = TabularLayout(
        name="telco churn",
        example_file="Telco-Customer-Churn.csv",
        target_column=TARGET,
        id_column="customerID",
        numeric_columns=NUMERIC,
        positive_label="Yes",
        group_column="Contract",
        synthetic_rows=7000,
        synthetic=synthetic_churn,
    )

    @override
    def fill_missing(self, numeric: pd.DataFrame) -> pd.DataFrame:
        """Missing ``TotalCharges`` = ``MonthlyCharges × tenure`` (0 for new customers, the file's blanks).

        Rows where that cannot be computed keep NaN and get the training median, like any other column.
        """
        if {"TotalCharges", "MonthlyCharges", "tenure"} <= set(numeric.columns):
            derived = numeric["MonthlyCharges"] * numeric["tenure"]
            numeric = numeric.assign(TotalCharges=numeric["TotalCharges"].fillna(derived))
        return numeric


class ChurnClassifier(TabularClassifier):
    """Churn classifier: the tabular MLP (see :class:`~lit_commeff.recipes.tabular.TabularClassifier`).

    Class imbalance (~26% churn) is handled by the ``pos_weight`` of the loss (``balance=True``);
    monitor ``val/auroc`` (``ChurnDataModule.monitor``).
    """


__all__ = ["COLUMNS", "ChurnClassifier", "ChurnDataModule", "synthetic_churn"]
