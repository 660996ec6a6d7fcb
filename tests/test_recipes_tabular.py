"""The tabular recipes (credit default, telco churn): synthetic data, CSV loading, errors, partitions, training.

Fixtures are written into tmp_path: a few rows in the real files' layouts (copied from the public
datasets) followed by synthetic rows of the same layout. Nothing under /work/shared is read.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import lightning.pytorch as pl
import numpy as np
import pandas as pd
import pytest
import torch

import lit_commeff  # noqa: F401  (registers strategy="olga_fork")
from lit_commeff.recipes import (
    ChurnClassifier,
    ChurnDataModule,
    CreditClassifier,
    CreditDataModule,
    finance_credit,
    partition_all,
    partition_indices,
    synthetic_churn,
    synthetic_credit,
    telecom_churn,
)
from lit_commeff.recipes.partition import assign_groups, group_assignment, interleaved_shard
from lit_commeff.recipes.tabular import TabularDataModule, TabularLayout

CREDIT_HEADER = ",".join(f'"{c}"' for c in finance_credit.COLUMNS)
CREDIT_ROWS = [  # UCI_Credit_Card.csv, rows 1-8 (R's scientific notation in rows 7 and 8)
    "1,20000,2,2,1,24,2,2,-1,-1,-2,-2,3913,3102,689,0,0,0,0,689,0,0,0,0,1",
    "2,120000,2,2,2,26,-1,2,0,0,0,2,2682,1725,2682,3272,3455,3261,0,1000,1000,1000,0,2000,1",
    "3,90000,2,2,2,34,0,0,0,0,0,0,29239,14027,13559,14331,14948,15549,1518,1500,1000,1000,1000,5000,0",
    "4,50000,2,2,1,37,0,0,0,0,0,0,46990,48233,49291,28314,28959,29547,2000,2019,1200,1100,1069,1000,0",
    "5,50000,1,2,1,57,-1,0,-1,0,0,0,8617,5670,35835,20940,19146,19131,2000,36681,10000,9000,689,679,0",
    "6,50000,1,1,2,37,0,0,0,0,0,0,64400,57069,57608,19394,19619,20024,2500,1815,657,1000,1000,800,0",
    "7,5e+05,1,1,2,29,0,0,0,0,0,0,367965,412023,445007,542653,483003,473944,55000,40000,38000,20239,13750,13770,0",
    "8,1e+05,2,2,2,23,0,-1,-1,0,0,-1,11876,380,601,221,-159,567,380,601,0,581,1687,1542,0",
]
CHURN_HEADER = ",".join(telecom_churn.COLUMNS)
CHURN_ROWS = [  # Telco-Customer-Churn.csv, rows 1-5 and 489 (tenure 0, TotalCharges " ")
    "7590-VHVEG,Female,0,Yes,No,1,No,No phone service,DSL,No,Yes,No,No,No,No,Month-to-month,Yes,"
    "Electronic check,29.85,29.85,No",
    "5575-GNVDE,Male,0,No,No,34,Yes,No,DSL,Yes,No,Yes,No,No,No,One year,No,Mailed check,56.95,1889.5,No",
    "3668-QPYBK,Male,0,No,No,2,Yes,No,DSL,Yes,Yes,No,No,No,No,Month-to-month,Yes,Mailed check,53.85,108.15,Yes",
    "7795-CFOCW,Male,0,No,No,45,No,No phone service,DSL,Yes,No,Yes,Yes,No,No,One year,No,"
    "Bank transfer (automatic),42.3,1840.75,No",
    "9237-HQITU,Female,0,No,No,2,Yes,No,Fiber optic,No,No,No,No,No,No,Month-to-month,Yes,Electronic check,"
    "70.7,151.65,Yes",
    "4472-LVYGI,Female,0,Yes,Yes,0,No,No phone service,DSL,Yes,No,Yes,Yes,Yes,No,Two year,Yes,"
    "Bank transfer (automatic),52.55, ,No",
]


def _write(path: Path, header: str, rows: list[str], extra: pd.DataFrame | None = None) -> Path:
    text = header + "\n" + "".join(row + "\n" for row in rows)
    if extra is not None:
        text += extra.to_csv(header=False, index=False)
    path.write_text(text)
    return path


def credit_csv(tmp_path: Path, rows: list[str] | None = None, synthetic: int = 400, name: str = "credit.csv") -> Path:
    extra = synthetic_credit(synthetic, seed=3) if synthetic else None
    return _write(tmp_path / name, CREDIT_HEADER, CREDIT_ROWS if rows is None else rows, extra)


def churn_csv(tmp_path: Path, rows: list[str] | None = None, synthetic: int = 400, name: str = "churn.csv") -> Path:
    extra = synthetic_churn(synthetic, seed=3) if synthetic else None
    return _write(tmp_path / name, CHURN_HEADER, CHURN_ROWS if rows is None else rows, extra)


def on_rank(datamodule, rank: int, world: int):
    """Set the data module up as rank ``rank`` of ``world`` would."""
    datamodule.trainer = SimpleNamespace(global_rank=rank, world_size=world)
    datamodule.setup("fit")
    return datamodule


def quiet_trainer(**kw) -> pl.Trainer:
    options = dict(
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        use_distributed_sampler=False,
    )
    options.update(kw)
    return pl.Trainer(**options)


# ----------------------------------------------------------------------------------------- synthetic data
def test_synthetic_credit_layout_rate_and_determinism():
    frame = synthetic_credit(4000, seed=1)
    assert list(frame.columns) == list(finance_credit.COLUMNS) and len(frame) == 4000
    assert 0.18 < frame[finance_credit.TARGET].mean() < 0.26
    assert set(frame["SEX"]) == {1, 2} and frame["PAY_0"].between(-2, 8).all()
    assert frame["AGE"].between(21, 79).all() and (frame["LIMIT_BAL"] % 10000 == 0).all()
    pd.testing.assert_frame_equal(frame, synthetic_credit(4000, seed=1))
    assert not frame.equals(synthetic_credit(4000, seed=2))


def test_synthetic_churn_layout_rate_blanks_and_determinism():
    frame = synthetic_churn(5000, seed=1)
    assert list(frame.columns) == list(telecom_churn.COLUMNS) and len(frame) == 5000
    assert 0.22 < (frame["Churn"] == "Yes").mean() < 0.30
    assert set(frame["Contract"]) == {"Month-to-month", "One year", "Two year"}
    # the file's quirk: TotalCharges is a single space exactly where tenure is 0
    blank = frame["TotalCharges"] == " "
    assert blank.any() and (blank == (frame["tenure"] == 0)).all()
    by_contract = frame.groupby("Contract")["Churn"].apply(lambda s: (s == "Yes").mean())
    assert by_contract["Month-to-month"] > 2 * by_contract["Two year"]
    pd.testing.assert_frame_equal(frame, synthetic_churn(5000, seed=1))
    assert not frame.equals(synthetic_churn(5000, seed=2))


# ----------------------------------------------------------------------------------------- loading
def test_credit_csv_loads_with_r_notation_and_codes(tmp_path):
    dm = CreditDataModule(path=str(credit_csv(tmp_path)), batch_size=16)
    dm.check(1)
    table = dm.table
    assert dm.num_numeric == 20 and table.categorical_columns == ["SEX", "EDUCATION", "MARRIAGE"]
    assert dm.categorical_cardinalities == [len(table.categories[c]) + 1 for c in table.categorical_columns]
    assert "PAY_0" in table.numeric_columns and "ID" not in table.numeric_columns
    assert dm.pos_weight == pytest.approx(
        (1 - table.y[table.train_idx].mean().item()) / table.y[table.train_idx].mean()
    )
    limit = table.numeric_columns.index("LIMIT_BAL")
    raw = table.x_num[:, limit].double() * table.std[limit] + table.mean[limit]
    assert raw[6].item() == pytest.approx(500000, rel=1e-5) and raw[0].item() == pytest.approx(20000, rel=1e-4)
    # standardised with the training rows' statistics
    train = table.x_num[table.train_idx]
    assert torch.allclose(train.mean(0), torch.zeros(20), atol=1e-4)
    dm.setup("fit")
    x_num, x_cat, y = next(iter(dm.train_dataloader()))
    assert x_num.shape == (16, 20) and x_cat.shape == (16, 3) and x_cat.dtype == torch.int64 and y.shape == (16,)


def test_churn_csv_blank_total_charges_is_imputed_and_text_columns_are_categorical(tmp_path):
    dm = ChurnDataModule(path=str(churn_csv(tmp_path)), batch_size=16)
    dm.check(1)
    table = dm.table
    assert table.numeric_columns == ["SeniorCitizen", "tenure", "MonthlyCharges", "TotalCharges"]
    assert "Contract" in table.categorical_columns and "customerID" not in table.categorical_columns
    assert len(table.categorical_columns) == 15
    col = table.numeric_columns.index("TotalCharges")
    raw = table.x_num[:, col].double() * table.std[col] + table.mean[col]
    assert raw[5].item() == pytest.approx(0.0, abs=1e-3)  # " " with tenure 0 -> MonthlyCharges x 0
    assert raw[1].item() == pytest.approx(1889.5, rel=1e-5)
    assert torch.isfinite(table.x_num).all()
    assert table.y[:5].tolist() == [0.0, 0.0, 1.0, 0.0, 1.0]


def test_unseen_category_gets_the_reserved_code(tmp_path):
    frame = synthetic_credit(300, seed=3)
    path = tmp_path / "credit.csv"
    frame.to_csv(path, index=False)
    first = CreditDataModule(path=str(path))
    first.check(1)
    val_row, train_row = int(first.table.val_idx[0]), int(first.table.train_idx[0])
    frame.loc[val_row, "EDUCATION"] = 9  # a level seen only in validation -> code 0
    frame.loc[train_row, "EDUCATION"] = 7  # a level seen in training -> a code of its own
    frame.to_csv(path, index=False)
    dm = CreditDataModule(path=str(path))
    dm.check(1)
    table = dm.table
    np.testing.assert_array_equal(table.val_idx, first.table.val_idx)  # the split depends on n and seed only
    edu = table.categorical_columns.index("EDUCATION")
    assert "9" not in table.categories["EDUCATION"] and table.x_cat[val_row, edu].item() == 0
    assert table.x_cat[train_row, edu].item() == table.categories["EDUCATION"].index("7") + 1
    assert (table.x_cat[table.train_idx] > 0).all()
    assert dm.categorical_cardinalities[edu] == len(table.categories["EDUCATION"]) + 1


def test_config_lists_and_hydra_instantiation(tmp_path):
    hydra_utils = pytest.importorskip("hydra.utils")
    path = str(credit_csv(tmp_path))
    dm = hydra_utils.instantiate(
        {"_target_": "lit_commeff.recipes.CreditDataModule", "path": path, "categorical_columns": ["SEX"]}
    )
    model = hydra_utils.instantiate({"_target_": "lit_commeff.recipes.CreditClassifier", "hidden": [8]})
    dm.check(1)
    assert dm.table.categorical_columns == ["SEX"] and dm.num_numeric == 22
    model.configure_from(dm)
    assert model.hparams.hidden == [8] and model.hparams.num_numeric == 22


def test_layout_states_the_defaults_and_a_given_option_overrides_them(tmp_path):
    credit, churn = CreditDataModule(), ChurnDataModule()
    assert (credit.target_column, credit.id_column, credit.positive_label) == (finance_credit.TARGET, "ID", None)
    assert (credit.group_column, credit.synthetic_rows, credit.numeric_columns) == ("EDUCATION", 20000, None)
    assert credit.categorical_columns == ["SEX", "EDUCATION", "MARRIAGE"]
    assert (churn.target_column, churn.id_column, churn.positive_label) == ("Churn", "customerID", "Yes")
    assert (churn.group_column, churn.synthetic_rows, churn.categorical_columns) == ("Contract", 7000, None)
    assert churn.numeric_columns == ["SeniorCitizen", "tenure", "MonthlyCharges", "TotalCharges"]
    # None passed is the option "none" (detect the categorical columns), not "the recipe's default".
    dm = CreditDataModule(path=str(credit_csv(tmp_path)), categorical_columns=None, batch_size=16)
    dm.check(1)
    assert dm.table.categorical_columns == [] and dm.num_numeric == 23

    def synthetic(rows: int, seed: int) -> pd.DataFrame:
        rng = np.random.default_rng(seed)
        return pd.DataFrame(
            {"x": rng.normal(size=rows), "kind": rng.choice(["a", "b"], rows), "y": np.arange(rows) % 2}
        )

    class Minimal(TabularDataModule):
        layout = TabularLayout(name="minimal", target_column="y", synthetic_rows=50, synthetic=synthetic)

    dm = Minimal(batch_size=8, seed=3)
    dm.check(1)
    assert len(dm.table.y) == 50 and dm.table.source == "the synthetic minimal data (50 rows, seed=3)"
    assert dm.table.categorical_columns == ["kind"] and dm.table.numeric_columns == ["x"]
    with pytest.raises(
        ValueError, match=r"path: TabularDataModule has no synthetic data generator; .*/path/to/data\.csv"
    ):
        TabularDataModule().check(1)


def test_check_caches_the_table_for_setup(tmp_path, monkeypatch):
    dm = CreditDataModule(path=str(credit_csv(tmp_path)), batch_size=16)
    dm.check(2)  # the CLI, before processes start
    table = dm.table
    monkeypatch.setattr(dm, "_load", lambda: pytest.fail("setup read the file again"))
    on_rank(dm, 1, 2)
    assert dm.table is table and len(dm.train_dataset) > 0
    monkeypatch.undo()
    dm.partition = "by_group"  # an option the table depends on: reloaded
    dm.check(2)
    assert dm.table is not table and dm.table.groups is not None


# ----------------------------------------------------------------------------------------- errors
def test_missing_file_names_the_path_and_the_fix(tmp_path):
    missing = tmp_path / "nowhere" / "UCI_Credit_Card.csv"
    with pytest.raises(FileNotFoundError, match=r"path: data file '.*nowhere/UCI_Credit_Card\.csv' does not exist"):
        CreditDataModule(path=str(missing)).check(1)
    with pytest.raises(FileNotFoundError, match=r"data\.path=/path/to/Telco-Customer-Churn\.csv.*synthetic"):
        ChurnDataModule(path=str(missing)).check(1)


def test_empty_file_and_header_only(tmp_path):
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(ValueError, match=r"path: data file '.*empty\.csv' is empty"):
        CreditDataModule(path=str(empty)).check(1)
    header_only = credit_csv(tmp_path, rows=[], synthetic=0)
    with pytest.raises(ValueError, match=r"has a header \(25 columns\) but no data rows"):
        CreditDataModule(path=str(header_only)).check(1)


def test_missing_target_column_lists_the_columns(tmp_path):
    path = churn_csv(tmp_path)
    with pytest.raises(ValueError, match=r"target_column: column 'Exited' not found .*columns found: \['customerID'"):
        ChurnDataModule(path=str(path), target_column="Exited").check(1)
    with pytest.raises(ValueError, match=r"categorical_columns: column 'REGION' not found"):
        CreditDataModule(path=str(credit_csv(tmp_path)), categorical_columns=["SEX", "REGION"]).check(1)


def test_garbage_in_numeric_column_names_column_row_and_value(tmp_path):
    rows = [*CREDIT_ROWS]
    rows[2] = rows[2].replace("3,90000,", "3,abc,")
    with pytest.raises(
        ValueError, match=r"numeric column 'LIMIT_BAL': data row 3 \(1-based, header not counted\) .* holds 'abc'"
    ):
        CreditDataModule(path=str(credit_csv(tmp_path, rows))).check(1)
    churn_rows = [*CHURN_ROWS]
    churn_rows[3] = churn_rows[3].replace(",1840.75,", ",abc,")
    with pytest.raises(ValueError, match=r"numeric column 'TotalCharges': data row 4 \(1-based.*'abc'"):
        ChurnDataModule(path=str(churn_csv(tmp_path, churn_rows))).check(1)


def test_single_class_and_bad_labels(tmp_path):
    rows = [row[:-1] + "0" for row in CREDIT_ROWS]
    with pytest.raises(ValueError, match=r"target_column 'default\.payment\.next\.month': every one of the 8 rows"):
        CreditDataModule(path=str(credit_csv(tmp_path, rows, synthetic=0))).check(1)
    churn_rows = [row.rsplit(",", 1)[0] + ",No" for row in CHURN_ROWS]
    with pytest.raises(ValueError, match=r"target_column 'Churn': every one of the 6 rows .* is negative"):
        ChurnDataModule(path=str(churn_csv(tmp_path, churn_rows, synthetic=0))).check(1)
    with pytest.raises(ValueError, match=r"every one of .* positive_label='yes'"):  # labels are case-sensitive
        ChurnDataModule(path=str(churn_csv(tmp_path)), positive_label="yes").check(1)
    blank = [*CHURN_ROWS]
    blank[1] = blank[1].rsplit(",", 1)[0] + ","
    with pytest.raises(ValueError, match=r"target_column 'Churn': data row 2 \(1-based.*has no label"):
        ChurnDataModule(path=str(churn_csv(tmp_path, blank))).check(1)


def test_partition_too_small_for_batch_size(tmp_path):
    dm = CreditDataModule(path=str(credit_csv(tmp_path, synthetic=100)), batch_size=64)
    dm.check(1)  # 86 training rows on one rank: fine
    with pytest.raises(
        ValueError, match=r"batch_size: .* over 2 ranks, each rank gets 43 training rows .*batch_size=64"
    ):
        dm.check(2)
    with pytest.raises(ValueError, match=r"lower batch_size to at most 21, use fewer devices, or use more data"):
        CreditDataModule(synthetic_rows=108, batch_size=32).check(4)


def test_unknown_partition_scheme(tmp_path):
    with pytest.raises(ValueError, match=r"partition: partition='shards' is unknown; use one of \['iid', 'by_group'\]"):
        CreditDataModule(partition="shards")
    dm = CreditDataModule(path=str(credit_csv(tmp_path)))
    dm.partition = "shards"
    with pytest.raises(ValueError, match=r"partition='shards' is unknown"):
        dm.check(1)


def test_group_column_missing_or_too_few_groups(tmp_path):
    path = str(credit_csv(tmp_path))
    with pytest.raises(ValueError, match=r"group_column: column 'REGION' not found .*columns found: \['ID'"):
        CreditDataModule(path=path, partition="by_group", group_column="REGION").check(2)
    with pytest.raises(ValueError, match=r"group_column: partition='by_group' needs group_column"):
        CreditDataModule(path=path, partition="by_group", group_column=None)
    with pytest.warns(UserWarning, match=r"over 3 ranks keeps \d+ of 326 training rows \(\d+ per rank"):
        cut = CreditDataModule(path=path, partition="by_group", group_balance="cut", batch_size=8)
        cut.check(3)  # EDUCATION 2 | 1 | 3 + rest
    with pytest.raises(ValueError, match=r"column 'SEX' has 2 distinct values .*\['1', '2'\] for 3 ranks"):
        CreditDataModule(path=path, partition="by_group", group_column="SEX", batch_size=8).check(3)


def test_by_group_resample_keeps_every_row_and_equal_epochs(tmp_path):
    """group_balance='resample': whole shards of unequal size, the same samples per epoch on every rank."""
    path = str(credit_csv(tmp_path, synthetic=1200))
    modules = [on_rank(CreditDataModule(path=path, partition="by_group", batch_size=8), r, 3) for r in range(3)]
    sizes = [len(m.train_dataset) for m in modules]
    assert sum(sizes) == len(modules[0].table.train_idx)  # nothing dropped
    assert len(set(sizes)) > 1  # the groups are unequal, and so are the shards
    loaders = [m.train_dataloader() for m in modules]
    assert len({len(loader) for loader in loaders}) == 1
    assert len(loaders[0]) == (sum(sizes) // 3) // 8
    small = min(range(3), key=lambda r: sizes[r])
    sampler = loaders[small].sampler
    sampler.set_epoch(0)
    order = list(sampler)
    assert len(order) == sum(sizes) // 3 and set(order) == set(range(sizes[small]))  # the small shard repeats
    big = max(range(3), key=lambda r: sizes[r])
    seen = set()
    for epoch in range(12):
        loaders[big].sampler.set_epoch(epoch)
        seen |= set(loaders[big].sampler)
    assert len(seen) == sizes[big]  # a fresh subset each epoch: every row of the large shard shows up
    with pytest.raises(ValueError, match=r"group_balance: group_balance='even' is unknown; use 'resample'"):
        CreditDataModule(path=path, partition="by_group", group_balance="even").check(2)


def test_option_validation():
    with pytest.raises(ValueError, match=r"val_fraction: val_fraction=1.5 is out of range"):
        CreditDataModule(val_fraction=1.5)
    with pytest.raises(ValueError, match=r"batch_size: batch_size=0 is invalid"):
        ChurnDataModule(batch_size=0)
    with pytest.raises(ValueError, match=r"optimizer: optimizer='rmsprop' is unknown"):
        CreditClassifier(optimizer="rmsprop")
    with pytest.raises(ValueError, match=r"num_numeric: CreditClassifier does not know its input sizes"):
        quiet_trainer(max_steps=1).fit(CreditClassifier(), [(torch.zeros(1, 2), torch.zeros(1, 0), torch.zeros(1))])


# ----------------------------------------------------------------------------------------- partitions
def test_iid_partition_is_disjoint_equal_and_seeded():
    shards = partition_all(103, 4, "iid", seed=5)
    assert [len(s) for s in shards] == [25] * 4
    union = np.concatenate(shards)
    assert len(np.unique(union)) == 100
    assert all(np.array_equal(partition_indices(103, 4, r, "iid", seed=5), shards[r]) for r in range(4))
    assert not np.array_equal(partition_all(103, 4, "iid", seed=6)[0], shards[0])


def test_by_group_partition_holds_whole_groups_balanced():
    groups = ["a"] * 50 + ["b"] * 30 + ["c"] * 25 + ["d"] * 10 + ["e"] * 5
    assert assign_groups({"a": 50, "b": 30, "c": 25, "d": 10, "e": 5}, 2) == [["a", "d"], ["b", "c", "e"]]
    assert group_assignment(groups, 2) == [["a", "d"], ["b", "c", "e"]]
    shards = partition_all(groups, 2, "by_group", seed=0)
    assert [len(s) for s in shards] == [60, 60]
    keys = np.asarray(groups)
    assert set(keys[shards[0]]) == {"a", "d"} and set(keys[shards[1]]) == {"b", "c", "e"}
    assert not set(shards[0]) & set(shards[1])
    with pytest.raises(ValueError, match=r"5 groups .* for 6 ranks"):
        partition_all(groups, 6, "by_group")
    assert interleaved_shard(11, 3, 1).tolist() == [1, 4, 7]


def test_datamodule_shards_iid_and_by_group(tmp_path):
    path = str(credit_csv(tmp_path, synthetic=1200))
    for partition in ("iid", "by_group"):
        modules = [on_rank(CreditDataModule(path=path, partition=partition, batch_size=16), r, 2) for r in range(2)]
        table = modules[0].table
        rows = [m.train_rows for m in modules]
        assert len(rows[0]) == len(modules[0].train_dataset) > 0
        if partition == "iid":  # by_group keeps whole groups (unequal shards) and evens out the epochs instead
            assert len(rows[0]) == len(rows[1])
        assert not set(rows[0]) & set(rows[1])
        val = [m.val_rows for m in modules]
        assert len(val[0]) == len(val[1]) == len(modules[1].val_dataset) == len(table.val_idx) // 2
        assert not set(val[0]) & set(val[1]) and set(val[0]) | set(val[1]) <= set(table.val_idx)
        if partition == "by_group":
            edu = [set(table.groups[r].tolist()) for r in rows]
            assert not edu[0] & edu[1]  # whole EDUCATION levels per rank
        # every rank uses the same scaler and codes (fitted on all training rows before partitioning)
        np.testing.assert_array_equal(modules[0].table.mean, modules[1].table.mean)
        np.testing.assert_array_equal(modules[0].table.std, modules[1].table.std)
        assert modules[0].table.categories == modules[1].table.categories
        loaders = [m.train_dataloader() for m in modules]
        assert len(loaders[0]) == len(loaders[1])


def test_val_split_is_the_same_for_any_world_size(tmp_path):
    path = str(churn_csv(tmp_path))
    one = ChurnDataModule(path=path, batch_size=8)
    three = ChurnDataModule(path=path, batch_size=8)
    one.check(1)
    three.check(3)
    np.testing.assert_array_equal(one.table.val_idx, three.table.val_idx)
    on_rank(three, 2, 3)
    assert len(three.val_dataset) == len(three.table.val_idx) // 3


# ----------------------------------------------------------------------------------------- model
def test_model_built_from_datamodule_equals_eager_build(tmp_path):
    dm = ChurnDataModule(path=str(churn_csv(tmp_path)))
    dm.check(1)
    lazy = ChurnClassifier(hidden=[16])
    assert not lazy.built
    lazy.configure_from(dm)
    eager = ChurnClassifier(
        num_numeric=dm.num_numeric, categorical_cardinalities=dm.categorical_cardinalities, hidden=[16]
    )
    for a, b in zip(lazy.parameters(), eager.parameters(), strict=True):
        assert torch.equal(a, b)  # init_seed alone decides the weights: identical on every rank
    assert lazy.hparams.pos_weight == pytest.approx(dm.pos_weight) and eager.hparams.pos_weight is None
    assert lazy.embeddings[-1].embedding_dim == min(8, (dm.categorical_cardinalities[-1] + 1) // 2)
    assert list(lazy.buffers()) == []  # nothing for a strategy to broadcast each step
    wrong = ChurnClassifier(num_numeric=3, categorical_cardinalities=[2])
    with pytest.raises(ValueError, match=r"built for num_numeric=3, .* but the data has num_numeric=4"):
        wrong.configure_from(dm)


def test_single_process_fit_loss_falls_and_auroc_logged():
    class Losses(pl.Callback):
        def __init__(self):
            self.values = []

        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
            self.values.append(float(outputs["loss"]))

    losses = Losses()
    dm = CreditDataModule(synthetic_rows=2000, batch_size=64)  # 1600 training rows: 25 steps per epoch
    model = CreditClassifier()
    trainer = quiet_trainer(max_steps=30, callbacks=[losses])
    trainer.fit(model, datamodule=dm)
    assert len(losses.values) == 30
    assert np.mean(losses.values[-5:]) < 0.9 * np.mean(losses.values[:5]), losses.values
    metrics = trainer.callback_metrics
    assert {"val/auroc", "val/ap", "val/f1", "val/loss", "train/loss"} <= set(metrics)
    assert 0.6 < float(metrics["val/auroc"]) <= 1.0
    # the resolved sizes are hyper-parameters: the same model rebuilds from them (checkpoints)
    rebuilt = CreditClassifier(**model.hparams)
    rebuilt.load_state_dict(model.state_dict())


def test_two_process_olga_fork_run():
    pl.seed_everything(0)
    dm = ChurnDataModule(synthetic_rows=2000, batch_size=32)  # 800 rows per rank: 25 steps per epoch
    trainer = quiet_trainer(strategy="olga_fork", devices=2, max_steps=40)
    trainer.fit(ChurnClassifier(), datamodule=dm)
    metrics = trainer.callback_metrics
    assert "val/auroc" in metrics and "train/loss" in metrics
    assert float(metrics["val/auroc"]) > 0.6
    assert np.isfinite(float(metrics["train/loss"]))
