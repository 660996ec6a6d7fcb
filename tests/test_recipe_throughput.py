"""Recipe telecom_throughput: synthetic traces, zip loading and its errors, windows, partitions, training runs."""

from __future__ import annotations

import zipfile
from types import SimpleNamespace

import lightning.pytorch as pl
import numpy as np
import pytest
import torch

import lit_commeff  # noqa: F401  (registers the strategy names)
from lit_commeff.recipes.throughput import (
    DEFAULT_FEATURES,
    ThroughputDataModule,
    ThroughputForecaster,
    make_synthetic_traces,
    mobility_of,
    window_starts,
)

COLUMNS = [
    "Timestamp",
    "Longitude",
    "Latitude",
    "Speed",
    "Operatorname",
    "CellID",
    "NetworkMode",
    "RSRP",
    "RSRQ",
    "SNR",
    "CQI",
    "RSSI",
    "DL_bitrate",
    "UL_bitrate",
    "State",
    "PINGAVG",
    "PINGMIN",
    "PINGMAX",
    "PINGSTDEV",
    "PINGLOSS",
    "CELLHEX",
    "NODEHEX",
    "LACHEX",
    "RAWCELLID",
    "NRxRSRP",
    "NRxRSRQ",
]
ROOT = "5G-production-dataset"
MEMBERS = [
    f"{ROOT}/Download/Static/B_2019.12.16_13.40.04.csv",
    f"{ROOT}/Download/Driving/B_2019.12.16_11.49.59.csv",
    f"{ROOT}/Netflix/Static/Season3-StrangerThings/B_2019.11.26_13.50.48.csv",
    f"{ROOT}/Netflix/Driving/animated-RickandMorty/B_2019.11.23_14.30.10.csv",
    f"{ROOT}/Amazon_Prime/Driving/Season3-TheExpanse/B_2019.12.03_07.29.22.csv",
]


def trace_rows(n: int, seed: int = 0, *, dl=None) -> list[dict[str, str]]:
    """``n`` rows of a G-NetTrack trace (all 26 columns, as strings); ``dl``: DL_bitrate per row (kbit/s)."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        snr = rng.normal(8, 4)
        row = dict.fromkeys(COLUMNS, "-")
        row.update(
            Timestamp=f"2019.12.16_13.{40 + i // 60:02d}.{i % 60:02d}",
            Longitude="-8.39",
            Latitude="51.88",
            Speed=str(int(rng.integers(0, 60))),
            Operatorname="B",
            CellID="11",
            NetworkMode="5G",
            RSRP=str(int(-100 + snr)),
            RSRQ=str(int(-12 + snr / 4)),
            SNR=f"{snr:.1f}",
            CQI=str(int(np.clip(7 + snr / 2, 0, 15))),
            RSSI=str(int(-88 + snr)),
            DL_bitrate=str(int(dl[i]) if dl is not None else int(max(0.0, 2000 * snr + rng.normal(0, 500)))),
            UL_bitrate=str(int(rng.integers(0, 100))),
            State="D",
        )
        rows.append(row)
    return rows


def to_csv(rows: list[dict[str, str]], columns: list[str] = COLUMNS) -> str:
    return "\n".join([",".join(columns)] + [",".join(r[c] for c in columns) for r in rows]) + "\n"


def make_zip(path, traces: dict[str, str], *, junk: bool = True):
    """A zip laid out like the real one (folders, macOS metadata), holding the given CSV texts."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr(f"{ROOT}/", "")
        if junk:
            z.writestr(f"{ROOT}/.DS_Store", b"\x00\x01junk")
            z.writestr(f"__MACOSX/{ROOT}/._.DS_Store", b"\x00junk")
        for member, text in traces.items():
            z.writestr(member, text)
            if junk:
                folder, name = member.rsplit("/", 1)
                z.writestr(f"__MACOSX/{folder}/._{name}", b"\x00\x05junk,not,a,csv")
    return str(path)


@pytest.fixture
def small_zip(tmp_path):
    return make_zip(tmp_path / "5g.zip", {m: to_csv(trace_rows(60, seed=k)) for k, m in enumerate(MEMBERS)})


def quiet_trainer(**kw) -> pl.Trainer:
    options = {
        "accelerator": "cpu",
        "devices": 1,
        "logger": False,
        "enable_checkpointing": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "use_distributed_sampler": False,
    }
    options.update(kw)
    return pl.Trainer(**options)


class LossRecorder(pl.Callback):
    def __init__(self) -> None:
        self.losses: list[float] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.losses.append(float(outputs["loss"]))


# ------------------------------------------------------------------------------------------ synthetic data
def test_synthetic_traces_are_deterministic_and_shaped():
    a = make_synthetic_traces(6, 50, seed=3)
    b = make_synthetic_traces(6, 50, seed=3)
    c = make_synthetic_traces(6, 50, seed=4)
    assert [t.name for t in a] == [t.name for t in b]
    for x, y in zip(a, b, strict=True):
        assert x.frame.equals(y.frame)
    assert not a[0].frame.equals(c[0].frame)
    assert [t.group for t in a] == ["static", "walking", "driving"] * 2
    for t in a:
        assert t.frame.shape == (50, 11)
        assert {"Speed", "RSRP", "RSRQ", "SNR", "CQI", "RSSI", "DL_bitrate"} <= set(t.frame.columns)
        assert (t.frame["DL_bitrate"] >= 0).all() and t.frame["CQI"].between(0, 15).all()
        assert mobility_of(t.name) == t.group
    assert (a[0].frame["Speed"] == 0).all() and a[2].frame["Speed"].mean() > 20  # static vs driving


def test_synthetic_datamodule_check_is_deterministic():
    one, two = (
        ThroughputDataModule(synthetic_traces=9, synthetic_length=80),
        ThroughputDataModule(synthetic_traces=9, synthetic_length=80),
    )
    one.check(1)
    two.check(1)
    assert one.num_features == len(DEFAULT_FEATURES) == 7
    assert one.val_traces == two.val_traces and len(one.val_traces) == 2 and len(one.train_traces) == 7
    assert not set(one.val_traces) & set(one.train_traces)
    assert one.target_transform == two.target_transform and one.target_transform["log"] is True


# ------------------------------------------------------------------------------------------ windows
@pytest.mark.parametrize(("window", "horizon", "stride"), [(4, 1, 1), (3, 2, 2), (5, 3, 4)])
def test_window_target_is_horizon_steps_after_the_last_row(tmp_path, window, horizon, stride):
    n = 23
    assert window_starts(n, window, horizon, stride).tolist() == list(range(0, n - window - horizon + 1, stride))
    assert window_starts(window + horizon - 1, window, horizon, stride).tolist() == []
    # DL_bitrate = 1000 * row index (kbit/s), i.e. exactly the row index in Mbit/s
    traces = {m: to_csv(trace_rows(n, seed=k, dl=1000 * np.arange(n))) for k, m in enumerate(MEMBERS[:2])}
    dm = ThroughputDataModule(
        path=make_zip(tmp_path / "w.zip", traces),
        window=window,
        horizon=horizon,
        stride=stride,
        batch_size=1,
        log_target=False,
        val_fraction=0.5,
    )
    dm.setup("fit")
    for loader in (dm.train_dataloader(), dm.val_dataloader()):
        ds = loader.dataset
        assert len(ds) == len(window_starts(n, window, horizon, stride))
        for i in range(len(ds)):
            x, y, y_true, last = ds[i]
            start = i * stride
            assert x.shape == (window, 7)
            assert float(y_true) == start + window - 1 + horizon
            assert float(last) == start + window - 1
    # the model-space target is the standardised original value (log_target=False)
    t = dm.target_transform
    x, y, y_true, _ = dm.train_dataloader().dataset[0]
    assert float(y) * t["std"] + t["mean"] == pytest.approx(float(y_true), abs=1e-4)


# ------------------------------------------------------------------------------------------ loading
def test_loads_zip_members_and_cleans_missing_values(tmp_path):
    rows = trace_rows(40, seed=1)
    rows[0]["RSSI"] = "-"  # leading missing values: those rows are dropped
    rows[1]["RSSI"] = ""
    for i in range(3):
        rows[i]["CQI"] = "-"
    rows[10]["SNR"] = "-"  # later missing values: forward-filled
    rows[11]["SNR"] = " "
    traces = {m: to_csv(trace_rows(40, seed=k)) for k, m in enumerate(MEMBERS)}
    traces[MEMBERS[0]] = to_csv(rows)
    no_rssi = trace_rows(40, seed=9)
    for r in no_rssi:
        r["RSSI"] = "-"
    traces[f"{ROOT}/Download/Driving/B_2020.02.27_20.35.57.csv"] = to_csv(no_rssi)
    dm = ThroughputDataModule(path=make_zip(tmp_path / "d.zip", traces), window=4, batch_size=8, val_fraction=0.2)
    with pytest.warns(UserWarning, match=r"left out 1 of 6 traces.*B_2020\.02\.27_20\.35\.57\.csv.*RSSI") as caught:
        dm.check(1)
    assert [w.filename for w in caught if "left out" in str(w.message)] == [__file__]  # points at the caller
    assert set(dm.groups) == set(MEMBERS)  # macOS metadata skipped; the RSSI-less trace left out
    assert dm.groups[MEMBERS[0]] == "static" and dm.groups[MEMBERS[3]] == "driving"
    assert mobility_of(MEMBERS[2]) == "static" and mobility_of("x/Walking/a.csv") == "walking"
    assert "RSSI" in next(iter(dm.dropped.values()))
    # rows used per trace: 40 minus the 3 leading rows with a missing value in MEMBERS[0]
    data = dm._prepared()
    rows_used = {name: 40 for name in data.train_traces + data.val_traces}
    rows_used[MEMBERS[0]] = 37
    assert len(data.train[0]) == sum(rows_used[n] for n in data.train_traces)
    assert len(data.val[0]) == sum(rows_used[n] for n in data.val_traces)
    assert torch.isfinite(data.train[0]).all() and torch.isfinite(data.val[0]).all()
    part, names = (data.train, data.train_traces) if MEMBERS[0] in data.train_traces else (data.val, data.val_traces)
    offset = sum(rows_used[n] for n in names[: names.index(MEMBERS[0])])
    snr = part[0][offset : offset + 37, DEFAULT_FEATURES.index("SNR")]
    assert snr[10 - 3] == snr[9 - 3] and snr[11 - 3] == snr[9 - 3] and snr[12 - 3] != snr[9 - 3]


# ------------------------------------------------------------------------------------------ errors
def test_missing_file_names_the_path_and_the_fix(tmp_path):
    missing = tmp_path / "nowhere" / "5G.zip"
    with pytest.raises(FileNotFoundError, match=r"nowhere/5G\.zip does not exist.*data\.path=.*synthetic"):
        ThroughputDataModule(path=str(missing)).check(1)


def test_not_a_zip_and_no_csv_members(tmp_path):
    text = tmp_path / "trace.csv"
    text.write_text(to_csv(trace_rows(5)))
    with pytest.raises(ValueError, match=r"trace\.csv is not a zip archive"):
        ThroughputDataModule(path=str(text)).check(1)
    empty = tmp_path / "empty.zip"
    with zipfile.ZipFile(empty, "w") as z:
        z.writestr(f"{ROOT}/readme.txt", "nothing here")
        z.writestr(f"__MACOSX/{ROOT}/._x.csv", b"\x00")
    with pytest.raises(ValueError, match=r"empty\.zip holds no CSV traces"):
        ThroughputDataModule(path=str(empty)).check(1)


def test_missing_kpi_column_names_member_and_columns(tmp_path):
    traces = {m: to_csv(trace_rows(30, seed=k)) for k, m in enumerate(MEMBERS)}
    traces[MEMBERS[2]] = to_csv(trace_rows(30), [c for c in COLUMNS if c not in ("RSSI", "CQI")])
    path = make_zip(tmp_path / "c.zip", traces)
    with pytest.raises(ValueError, match=r"Season3-StrangerThings/B_2019\.11\.26_13\.50\.48\.csv.*\['CQI', 'RSSI'\]"):
        ThroughputDataModule(path=path, window=4).check(1)
    # features that avoid the missing columns work
    ThroughputDataModule(path=path, window=4, batch_size=4, features=["RSRP", "SNR"]).check(1)


def test_garbage_value_names_member_column_and_row(tmp_path):
    rows = trace_rows(30)
    rows[4]["SNR"] = "12,5dB".replace(",", ".")
    traces = {m: to_csv(trace_rows(30, seed=k)) for k, m in enumerate(MEMBERS)}
    traces[MEMBERS[1]] = to_csv(rows)
    with pytest.raises(
        ValueError, match=r"B_2019\.12\.16_11\.49\.59\.csv.*'12\.5dB' in column 'SNR' at data row 5 \(line 6"
    ):
        ThroughputDataModule(path=make_zip(tmp_path / "g.zip", traces), window=4).check(1)


def test_too_few_traces_for_the_validation_split(tmp_path):
    path = make_zip(tmp_path / "one.zip", {MEMBERS[0]: to_csv(trace_rows(50))})
    with pytest.raises(ValueError, match=r"val_fraction: .*one\.zip has 1 usable trace.*leaves 0 for training"):
        ThroughputDataModule(path=path, window=4).check(1)
    dm = ThroughputDataModule(synthetic_traces=3, synthetic_length=60, window=4, partition="by_group")
    dm.check(1)  # fine for one rank; the cached data is re-checked for another world size
    with pytest.raises(ValueError, match=r"leaves 2 for training \(3 ranks with partition='by_group' need one each"):
        dm.check(3)


def test_shard_smaller_than_batch_size_names_rows_ranks_and_fix():
    dm = ThroughputDataModule(synthetic_traces=6, synthetic_length=40, window=8, batch_size=100)
    with pytest.raises(
        ValueError,
        match=r"batch_size: with 2 rank\(s\) and partition='iid', rank \d's training shard holds \d+ windows "
        r"\(from 200 training rows in 5 traces .*fewer than batch_size=100.*lower data\.batch_size",
    ):
        dm.check(2)
    dm.batch_size = 16
    dm.check(2)  # fine once the batch fits


def test_unknown_partition_scheme():
    with pytest.raises(ValueError, match=r"partition: partition='by_cell' is unknown"):
        ThroughputDataModule(partition="by_cell").check(1)


def test_bad_feature_and_options():
    with pytest.raises(ValueError, match=r"synthetic traces lack the KPI column\(s\) \['NRxRSRP'\]"):
        ThroughputDataModule(features=["RSRP", "NRxRSRP"]).check(1)
    with pytest.raises(ValueError, match=r"window: window=0"):
        ThroughputDataModule(window=0).check(1)
    with pytest.raises(ValueError, match=r"arch: arch='lstm' is unknown"):
        ThroughputForecaster(arch="lstm")
    with pytest.raises(ValueError, match=r"optimizer: optimizer='rmsprop' is unknown"):
        ThroughputForecaster(optimizer="rmsprop")


# ------------------------------------------------------------------------------------------ partitions
@pytest.mark.parametrize("scheme", ["iid", "by_group"])
def test_partitions_are_disjoint_and_equal(scheme):
    dm = ThroughputDataModule(synthetic_traces=14, synthetic_length=60, window=8, batch_size=8, partition=scheme)
    dm.check(3)
    shards = dm.shards(3)
    assert len({len(s) for s in shards}) == 1 and len(shards[0]) > 0
    flat = np.concatenate(shards)
    assert len(np.unique(flat)) == len(flat)  # disjoint
    owner = dm.train_window_trace
    traces_of = [set(owner[s].tolist()) for s in shards]
    if scheme == "by_group":
        # whole traces: no trace on two ranks; ranks ordered by mobility pattern see different regimes
        assert all(not (traces_of[a] & traces_of[b]) for a in range(3) for b in range(a + 1, 3))
        regimes = [{dm.groups[dm.train_traces[k]] for k in t} for t in traces_of]
        assert regimes[0] != regimes[2]
        # cut to the smallest rank: at most one rank keeps all its windows
        totals = [int(np.isin(owner, list(t)).sum()) for t in traces_of]
        assert min(totals) == len(shards[0])
    else:
        assert len(flat) == len(owner) - len(owner) % 3
        assert all(len(t) > 3 for t in traces_of)  # windows of many traces on every rank

    # every rank builds its own loaders: same number of steps, disjoint training windows, equal validation parts
    loaders = []
    for rank in range(3):
        dm.trainer = SimpleNamespace(
            global_rank=rank, world_size=3, _accelerator_connector=SimpleNamespace(use_distributed_sampler=False)
        )
        dm.setup("fit")
        loaders.append((dm.train_dataloader(), dm.val_dataloader()))
    assert len({len(t) for t, _ in loaders}) == 1 and len({len(v.dataset) for _, v in loaders}) == 1
    starts = [set(t.dataset.starts.tolist()) for t, _ in loaders]
    assert not (starts[0] & starts[1]) and not (starts[1] & starts[2])
    first = [next(iter(t))[1] for t, _ in loaders]
    assert not torch.equal(first[0], first[1])  # shuffled with seed + rank
    dm.trainer = SimpleNamespace(
        global_rank=0, world_size=3, _accelerator_connector=SimpleNamespace(use_distributed_sampler=True)
    )
    with pytest.raises(ValueError, match=r"use_distributed_sampler=False"):
        dm.setup("fit")


# ------------------------------------------------------------------------------------------ model
def test_initialisation_is_identical_under_the_same_seed():
    torch.manual_seed(1)
    torch.rand(17)  # another rank may have drawn a different amount of random numbers
    a = ThroughputForecaster(num_features=5, hidden=8, seed=7)
    torch.manual_seed(2)
    b = ThroughputForecaster(num_features=5, hidden=8, seed=7)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))
    torch.manual_seed(3)
    c = ThroughputForecaster(arch="transformer", num_features=5, hidden=8, window=6)
    torch.manual_seed(3)
    torch.rand(5)
    d = ThroughputForecaster(arch="transformer", num_features=5, hidden=8, window=6)
    assert all(torch.equal(p, q) for p, q in zip(c.parameters(), d.parameters(), strict=True))
    lazy = ThroughputForecaster()
    assert lazy.net is None and not list(lazy.parameters())
    with pytest.raises(RuntimeError, match="not built yet"):
        lazy(torch.zeros(2, 4, 5))


@pytest.mark.parametrize("arch", ["gru", "transformer"])
def test_single_process_fit_lowers_the_loss_and_logs_val_mae(arch):
    pl.seed_everything(0)
    dm = ThroughputDataModule(window=16, synthetic_traces=6, synthetic_length=150, batch_size=32)
    model = ThroughputForecaster(arch=arch, hidden=16)
    recorder = LossRecorder()
    trainer = quiet_trainer(max_steps=45, callbacks=[recorder])
    trainer.fit(model, datamodule=dm)
    losses = recorder.losses
    assert len(losses) == 45
    assert np.mean(losses[-10:]) < 0.6 * np.mean(losses[:5]), losses
    metrics = trainer.callback_metrics
    for key in ("val/mae", "val/smape", "val/loss", "val/mae_persistence", "train/loss"):
        assert key in metrics and torch.isfinite(metrics[key]), key
    assert model.hparams.num_features == 7 and model.target_transform == dm.target_transform
    # the model's forecasts are in Mbit/s, non-negative
    x = dm.val_dataloader().dataset[0][0].unsqueeze(0)
    with torch.no_grad():
        assert float(model.to_units(model(x))) >= 0


def test_two_process_olga_run_trains_past_persistence_and_logs_val_mae():
    pl.seed_everything(0)
    dm = ThroughputDataModule(window=8, synthetic_traces=6, synthetic_length=120, batch_size=16, partition="by_group")
    dm.check(2)  # in the launching process, as the CLI does
    model = ThroughputForecaster(hidden=8)
    trainer = quiet_trainer(strategy="olga_fork", devices=2, max_steps=30)
    trainer.fit(model, datamodule=dm)
    metrics = trainer.callback_metrics
    assert "val/mae" in metrics and torch.isfinite(metrics["val/mae"])
    # it learnt: the forecasts beat the trivial predictor, the last observed value (measured 7.20 vs 7.74 Mbit/s)
    assert float(metrics["val/mae"]) < float(metrics["val/mae_persistence"]), metrics
    assert float(metrics["comm/cc1"]) > 30  # 30 training rounds (+ the setup broadcast) happened
    assert type(trainer.strategy).__name__ == "OLGAStrategy"
    # the launching process gets rank 0's trained model (built from the saved shapes) and its target transform
    assert model.net is not None and model.target_transform == dm.target_transform


def test_hydra_instantiates_both_classes():
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    cfg = OmegaConf.create(
        {
            "data": {
                "_target_": "lit_commeff.recipes.throughput.ThroughputDataModule",
                "features": ["RSRP", "SNR", "CQI", "DL_bitrate"],
                "window": 8,
                "synthetic_traces": 6,
                "synthetic_length": 60,
                "batch_size": 8,
            },
            "model": {"_target_": "lit_commeff.recipes.throughput.ThroughputForecaster", "arch": "transformer"},
        }
    )
    data, model = instantiate(cfg.data), instantiate(cfg.model)
    data.check(2)
    assert data.num_features == 4 and data.features == ["RSRP", "SNR", "CQI", "DL_bitrate"]
    assert ThroughputDataModule.monitor == "val/mae" and ThroughputDataModule.mode == "min"
    assert ThroughputDataModule.task == "regression" and model.net is None
