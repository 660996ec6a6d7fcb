"""Recipe ``telecom_throughput``: forecast 5G downlink throughput from radio KPIs, one time series per trace.

Data: the 5G production dataset of Raca et al. (MMSys 2020), read straight from its zip
(``5G-production-dataset/{Amazon_Prime,Netflix,Download}/{Static,Driving}/[show/]B_<date>.csv``, 26
columns per trace, about one row per second, ``DL_bitrate``/``UL_bitrate`` in kbit/s), or, by default,
built-in synthetic traces with the same columns (static / walking / driving mobility, AR(1) radio
KPIs, a throughput that depends nonlinearly on SNR and CQI, with on/off download bursts and noise).

A sample is a window of ``window`` consecutive rows of the feature columns (radio KPIs and, by
default, the past throughput itself); its target is the throughput ``horizon`` rows after the
window's last row. Rows are used in file order (the traces have about one row per second, with an
occasional repeated timestamp; nothing is resampled).

Cleaning, the same for real and synthetic traces:

* a missing value (``-`` or an empty cell) becomes NaN and is forward-filled within its trace; the
  leading rows that still hold a NaN in a used column (before that column's first value) are dropped;
* a trace in which a used column is missing throughout (in the real data: ``RSSI`` in 6 traces, and
  ``SNR``/``CQI``/``RSSI`` in one), or which is shorter than ``window + horizon`` rows after that, is
  left out with a warning (listed in :attr:`ThroughputDataModule.dropped`);
* any other non-numeric value in a used column is an error naming the zip member, column and row.

Units and scaling: bit rates are converted to Mbit/s. Bit-rate features enter as ``log1p(Mbit/s)``
(heavy-tailed); every feature is then standardised with the mean and standard deviation of all
training traces (the same on every rank). The model predicts the standardised ``log1p(Mbit/s)`` of
the target (``log_target=True``) or the standardised Mbit/s; its metrics are in Mbit/s.

Training windows are sharded by the datamodule itself (the Trainer runs with
``use_distributed_sampler=False``): ``partition="iid"`` shuffles all training windows and cuts them into
equal parts; ``partition="by_group"`` gives each rank whole traces, ordered by mobility pattern, so
ranks see different regimes (see :meth:`ThroughputDataModule.shards`).

Example:
    >>> import lightning.pytorch as pl
    >>> data = ThroughputDataModule(window=16, synthetic_traces=6, synthetic_length=200)
    >>> model = ThroughputForecaster(arch="gru", hidden=16)
    >>> trainer = pl.Trainer(max_steps=5, use_distributed_sampler=False, logger=False)  # doctest: +SKIP
    >>> trainer.fit(model, datamodule=data)  # doctest: +SKIP
"""

from __future__ import annotations

import io
import math
import warnings
import zipfile
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, NamedTuple

import lightning.pytorch as pl
import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset
from torchmetrics import MeanAbsoluteError, SymmetricMeanAbsolutePercentageError

from lit_commeff.recipes.partition import PARTITION_SCHEMES, interleaved_shard, partition_all
from lit_commeff.recipes.resumable import ResumableDataLoader, trainer_progress
from lit_commeff.recipes.tabular import record_lines

#: Default inputs: radio KPIs, speed and the past downlink throughput.
DEFAULT_FEATURES: tuple[str, ...] = ("RSRP", "RSRQ", "SNR", "CQI", "RSSI", "Speed", "DL_bitrate")
#: Columns recorded in kbit/s; the recipe works in Mbit/s.
BITRATE_COLUMNS: frozenset[str] = frozenset({"DL_bitrate", "UL_bitrate"})
#: Cell values that mark a missing value.
MISSING_MARKERS: tuple[str, ...] = ("-", "")
#: Directory names in a member path that name the mobility pattern (compared in lower case).
MOBILITY_NAMES: frozenset[str] = frozenset(
    {"static", "walking", "pedestrian", "driving", "car", "bus", "train", "tram"}
)
#: The synthetic generator's mobility patterns: AR(1) parameters of speed (km/h) and SNR (dB).
SYNTHETIC_MOBILITY: dict[str, dict[str, float]] = {
    "static": {"speed": 0.0, "speed_phi": 0.0, "speed_sd": 0.0, "snr_phi": 0.97, "snr_sd": 0.8},
    "walking": {"speed": 5.0, "speed_phi": 0.9, "speed_sd": 0.6, "snr_phi": 0.93, "snr_sd": 1.5},
    "driving": {"speed": 50.0, "speed_phi": 0.95, "speed_sd": 3.0, "snr_phi": 0.85, "snr_sd": 2.5},
}
_SYNTHETIC_APPS: tuple[str, ...] = ("Download", "Netflix", "Amazon_Prime")


class Trace(NamedTuple):
    """One time series: its name (zip member or synthetic path), mobility pattern and rows."""

    name: str
    group: str
    frame: pd.DataFrame


# ---------------------------------------------------------------------------------------------- synthetic
def _ar1(rng: np.random.Generator, n: int, mean: float, phi: float, sd: float) -> np.ndarray:
    """An AR(1) series ``x_t = mean + phi (x_{t-1} - mean) + sd e_t``, started in its stationary law."""
    noise = rng.standard_normal(n) * sd
    x = np.empty(n)
    x[0] = mean + (sd / math.sqrt(1.0 - phi * phi) * rng.standard_normal() if sd > 0 else 0.0)
    for t in range(1, n):
        x[t] = mean + phi * (x[t - 1] - mean) + noise[t]
    return x


def make_synthetic_traces(num_traces: int = 24, length: int = 600, seed: int = 0) -> list[Trace]:
    """Synthetic traces with the real traces' columns and units (deterministic in ``seed``).

    Trace ``i`` has mobility pattern ``("static", "walking", "driving")[i % 3]``. Per trace: a mean SNR
    drawn in [2, 20] dB; SNR, speed and the other KPIs follow AR(1) dynamics (faster and noisier when
    moving); RSRP, RSRQ, RSSI and CQI follow SNR with their own noise; the download alternates between
    on and off bursts (a two-state Markov chain, ``State`` ``D``/``I``); while on, the throughput is
    ``8 log2(1 + SNR) (0.4 + CQI/25) / (1 + speed/120)`` Mbit/s times log-normal noise, with rare spikes.

    Args:
        num_traces: Number of traces.
        length: Rows per trace (one per second).
        seed: Seed of every draw.

    Returns:
        The traces; ``frame`` holds ``Timestamp, Speed, NetworkMode, RSRP, RSRQ, SNR, CQI, RSSI,
        DL_bitrate, UL_bitrate, State`` with bit rates in kbit/s, as in the real traces.
    """
    if isinstance(num_traces, bool) or not isinstance(num_traces, int) or num_traces < 1:
        raise ValueError(f"synthetic_traces: synthetic_traces={num_traces!r} is invalid; use an integer >= 1.")
    if isinstance(length, bool) or not isinstance(length, int) or length < 2:
        raise ValueError(f"synthetic_length: synthetic_length={length!r} is invalid; use an integer >= 2.")
    rng = np.random.default_rng(seed)
    patterns = tuple(SYNTHETIC_MOBILITY)
    start = pd.Timestamp("2020-01-01 08:00:00")
    traces = []
    for i in range(num_traces):
        mobility = patterns[i % len(patterns)]
        p = SYNTHETIC_MOBILITY[mobility]
        n = length
        speed = np.clip(_ar1(rng, n, p["speed"], p["speed_phi"], p["speed_sd"]), 0.0, None)
        snr = np.clip(_ar1(rng, n, rng.uniform(2.0, 20.0), p["snr_phi"], p["snr_sd"]) - speed / 25.0, -10.0, 30.0)
        rsrp = np.clip(np.round(-95.0 + 1.5 * (snr - 10.0) + _ar1(rng, n, 0.0, 0.7, 1.5)), -140, -44)
        rssi = np.round(rsrp + 14.0 + rng.normal(0.0, 2.0, n))
        rsrq = np.clip(np.round(-11.0 + 0.35 * (snr - 10.0) + rng.normal(0.0, 1.0, n)), -20, -3)
        cqi = np.clip(np.round(7.0 + 0.45 * snr + rng.normal(0.0, 1.0, n)), 0, 15)
        on = np.empty(n, dtype=bool)
        on[0] = rng.random() < 0.6
        flips = rng.random(n)
        for t in range(1, n):  # on -> off with probability 0.04, off -> on with 0.08
            on[t] = flips[t] >= 0.04 if on[t - 1] else flips[t] < 0.08
        capacity = 8.0 * np.log2(1.0 + 10.0 ** (snr / 10.0)) * (0.4 + cqi / 25.0) / (1.0 + speed / 120.0)
        spikes = np.where(rng.random(n) < 0.02, rng.uniform(2.0, 4.0, n), 1.0)
        mbps = np.where(on, capacity * rng.lognormal(0.0, 0.35, n) * spikes, rng.uniform(0.0, 0.05, n))
        ul = np.where(on, 0.02 * mbps + rng.uniform(0.0, 0.1, n), rng.uniform(0.0, 0.01, n))
        stamps = start + pd.Timedelta(hours=i) + pd.to_timedelta(np.arange(n), unit="s")
        frame = pd.DataFrame(
            {
                "Timestamp": stamps.strftime("%Y.%m.%d_%H.%M.%S"),
                "Speed": np.round(speed),
                "NetworkMode": "5G",
                "RSRP": rsrp,
                "RSRQ": rsrq,
                "SNR": np.round(snr, 1),
                "CQI": cqi,
                "RSSI": rssi,
                "DL_bitrate": np.round(mbps * 1000.0),
                "UL_bitrate": np.round(ul * 1000.0),
                "State": np.where(on, "D", "I"),
            }
        )
        app = _SYNTHETIC_APPS[(i // len(patterns)) % len(_SYNTHETIC_APPS)]
        traces.append(Trace(f"synthetic/{app}/{mobility.capitalize()}/S_{i:03d}.csv", mobility, frame))
    return traces


# ---------------------------------------------------------------------------------------------- zip reading
def _ignored_member(name: str) -> bool:
    parts = name.split("/")
    return parts[0] == "__MACOSX" or any(p.startswith("._") or p == ".DS_Store" for p in parts)


def mobility_of(member: str) -> str:
    """The mobility pattern of a zip member: its first directory named like one (``Static``, ``Driving``, …).

    Falls back to the member's parent directory (or ``"unknown"``), in lower case.
    """
    dirs = member.split("/")[:-1]
    for d in dirs:
        if d.lower() in MOBILITY_NAMES:
            return d.lower()
    return dirs[-1].lower() if dirs else "unknown"


def _parse_member(raw: bytes, member: str, columns: Sequence[str], path: str) -> pd.DataFrame:
    """The used columns of one CSV trace as float64, missing values NaN (see the module docstring)."""
    wanted = set(columns)
    try:
        header = [str(c).strip() for c in pd.read_csv(io.BytesIO(raw), nrows=0).columns]
        missing = [c for c in columns if c not in header]
        if missing:
            raise ValueError(
                f"features: zip member {member!r} of {path} lacks the KPI column(s) {missing} in its header (line 1); "
                f"its columns are {header}. Choose data.features / data.target among them."
            )
        table = pd.read_csv(
            io.BytesIO(raw), dtype=str, keep_default_na=False, usecols=lambda c: str(c).strip() in wanted
        )
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise ValueError(f"path: zip member {member!r} of {path} is not a readable CSV trace ({err}).") from err
    table.columns = [str(c).strip() for c in table.columns]
    out = {}
    lines: list[int] | None = None
    for column in columns:
        text = table[column].str.strip()
        missing_cell = text.isin(MISSING_MARKERS).to_numpy()
        values = pd.to_numeric(text.where(~missing_cell), errors="coerce").to_numpy(dtype=np.float64)
        bad = ~missing_cell & ~np.isfinite(values)
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            if lines is None:
                lines = record_lines(io.StringIO(raw.decode("utf-8", errors="replace"), newline=""))
            line = lines[row + 1] if row + 1 < len(lines) else row + 2
            raise ValueError(
                f"data: zip member {member!r} of {path} has the non-numeric value {text.iloc[row]!r} in column "
                f"{column!r} at data row {row + 1} (line {line}, column {header.index(column) + 1} of the CSV, "
                f"{int(bad.sum())} such cell(s) in that column); fix the cell, or write '-' or leave it empty for a "
                "missing value."
            )
        out[column] = values
    return pd.DataFrame(out)


def read_zip(path: str | Path, columns: Sequence[str]) -> list[Trace]:
    """The CSV traces of the 5G production dataset zip (``columns`` only), in member order.

    macOS metadata (``__MACOSX/``, ``._*``, ``.DS_Store``) is skipped. Nothing is extracted to disk.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: Not a zip, no CSV members, a member without a used column, or a non-numeric value.
    """
    p = Path(path)
    if p.is_dir():
        raise ValueError(
            f"path: {p} is a directory; pass the 5G production dataset as its original zip "
            "(data.path=/path/to/5G-production-dataset.zip), not the extracted folder."
        )
    if not p.is_file():
        raise FileNotFoundError(
            f"path: {p} does not exist; point data.path at the 5G production dataset zip "
            "(e.g. data.path=/path/to/5G-production-dataset.zip), or leave data.path out to train on the "
            "built-in synthetic traces."
        )
    if not zipfile.is_zipfile(p):
        raise ValueError(
            f"path: {p} is not a zip archive; pass the 5G production dataset as its original zip "
            "(5G-production-dataset.zip, with CSV traces inside), not an extracted file."
        )
    try:
        with zipfile.ZipFile(p) as archive:
            members = [n for n in archive.namelist() if n.lower().endswith(".csv") and not _ignored_member(n)]
            if not members:
                raise ValueError(
                    f"path: the zip {p} holds no CSV traces (entries: {len(archive.namelist())}); expected members "
                    "like '5G-production-dataset/Download/Driving/B_2019.12.16_13.40.04.csv'."
                )
            traces = []
            for m in sorted(members):
                try:
                    raw = archive.read(m)
                except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError) as err:
                    raise ValueError(
                        f"path: zip member {m!r} of {p} cannot be read ({err}); the zip is corrupt or truncated: "
                        "download it again (and compare its checksum)."
                    ) from None
                traces.append(Trace(m, mobility_of(m), _parse_member(raw, m, columns, str(p))))
            return traces
    except (zipfile.BadZipFile, EOFError) as err:
        raise ValueError(
            f"path: {p} is a damaged zip archive ({err}); download the 5G production dataset zip again."
        ) from None


# ---------------------------------------------------------------------------------------------- windows
def window_starts(length: int, window: int, horizon: int, stride: int) -> np.ndarray:
    """First rows of the windows of a trace of ``length`` rows.

    Window ``i`` covers rows ``s_i .. s_i + window - 1`` with ``s_i = i * stride``; its target is row
    ``s_i + window - 1 + horizon``, which must exist.
    """
    last = length - window - horizon
    return np.arange(0, last + 1, stride, dtype=np.int64) if last >= 0 else np.zeros(0, dtype=np.int64)


class WindowDataset(Dataset):
    """Windows over concatenated traces: ``(x, y, y_true, last)`` per window.

    ``x``: ``(window, features)`` standardised inputs; ``y``: the model-space target (standardised,
    log or not); ``y_true``: the target in original units (Mbit/s for bit rates); ``last``: the target
    column's value at the window's last row, in original units (the persistence forecast).

    Args:
        x: ``(rows, features)`` inputs of all traces, concatenated.
        y: ``(rows,)`` model-space target.
        y_true: ``(rows,)`` target in original units.
        starts: First row (into the concatenation) of each window; a window never crosses a trace.
        window: History length.
        horizon: Steps ahead.
    """

    def __init__(self, x: Tensor, y: Tensor, y_true: Tensor, starts: np.ndarray, window: int, horizon: int) -> None:
        self.x, self.y, self.y_true = x, y, y_true
        self.starts = torch.as_tensor(np.asarray(starts, dtype=np.int64))
        self.window, self.horizon = window, horizon

    def __len__(self) -> int:
        return len(self.starts)

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        s = int(self.starts[i])
        end = s + self.window - 1
        return self.x[s : end + 1], self.y[end + self.horizon], self.y_true[end + self.horizon], self.y_true[end]


@dataclass
class _Prepared:
    """Loaded, cleaned, split and standardised data (independent of the world size)."""

    source: str
    train_traces: list[str]
    val_traces: list[str]
    groups: dict[str, str]
    dropped: dict[str, str]
    train: tuple[Tensor, Tensor, Tensor]
    val: tuple[Tensor, Tensor, Tensor]
    train_starts: np.ndarray
    train_window_trace: np.ndarray
    val_starts: np.ndarray
    train_rows: int
    feature_mean: np.ndarray
    feature_std: np.ndarray
    target_transform: dict[str, Any]


def _positive_int(name: str, value: Any, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise ValueError(f"{name}: {name}={value!r} is invalid; use an integer >= {minimum}.")
    return int(value)


class ThroughputDataModule(pl.LightningDataModule):
    """Per-trace windows of 5G radio KPIs -> downlink throughput ``horizon`` seconds later.

    Call :meth:`check` (the CLI does, before starting processes) to load and validate the data in the
    current process; ``setup`` does it otherwise. Each rank then builds its own training shard (see
    :meth:`shards`) and an equal interleaved part of the validation windows; the Trainer must run with
    ``use_distributed_sampler=False``.

    Args:
        path: The 5G production dataset zip; ``None`` for the built-in synthetic traces (offline default).
        features: Input columns (default :data:`DEFAULT_FEATURES`: RSRP, RSRQ, SNR, CQI, RSSI, Speed and the
            past DL_bitrate).
        target: Column to forecast.
        window: History length in rows.
        horizon: Forecast ``horizon`` rows after a window's last row.
        stride: Rows between the starts of consecutive windows.
        batch_size: Windows per batch (per rank).
        val_fraction: Share of the traces held out, whole, for validation (seeded split, so validation
            traces are unseen).
        partition: ``"iid"`` (shuffled windows, equal parts) or ``"by_group"`` (whole traces per rank,
            ordered by mobility pattern; every rank cut to the smallest rank's window count).
        seed: Seed of the split, the partition, the synthetic traces and the shuffling (``seed + rank``).
        synthetic_traces: Number of synthetic traces (``path=None``).
        synthetic_length: Rows per synthetic trace.
        log_target: Model ``log1p`` of the target (metrics stay in original units).
    """

    monitor: ClassVar[str] = "val/mae"
    mode: ClassVar[str] = "min"
    task: ClassVar[str] = "regression"

    def __init__(
        self,
        path: str | None = None,
        features: list[str] | None = None,
        target: str = "DL_bitrate",
        window: int = 32,
        horizon: int = 1,
        stride: int = 1,
        batch_size: int = 64,
        val_fraction: float = 0.2,
        partition: str = "iid",
        seed: int = 0,
        synthetic_traces: int = 24,
        synthetic_length: int = 600,
        log_target: bool = True,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.path = None if path is None else str(path)
        self.features = [str(f) for f in (DEFAULT_FEATURES if features is None else features)]
        self.target = str(target)
        self.window, self.horizon, self.stride, self.batch_size = window, horizon, stride, batch_size
        self.val_fraction, self.partition, self.seed = val_fraction, partition, seed
        self.synthetic_traces, self.synthetic_length, self.log_target = synthetic_traces, synthetic_length, log_target
        self._data: _Prepared | None = None
        self._data_key: tuple | None = None
        self._shards: dict[tuple[int, str], list[np.ndarray]] = {}
        self._rank, self._world = 0, 1

    # ------------------------------------------------------------------------------------ properties
    @property
    def num_features(self) -> int:
        """Number of input columns (the model's input size)."""
        return len(self.features)

    @property
    def target_transform(self) -> dict[str, Any] | None:
        """``{"log": bool, "mean": float, "std": float}``: model space -> original units (after check)."""
        return None if self._data is None else dict(self._data.target_transform)

    @property
    def train_traces(self) -> list[str]:
        """Names of the training traces (after check)."""
        return list(self._prepared().train_traces)

    @property
    def val_traces(self) -> list[str]:
        """Names of the validation traces (after check)."""
        return list(self._prepared().val_traces)

    @property
    def groups(self) -> dict[str, str]:
        """Trace name -> mobility pattern, for every used trace (after check)."""
        return dict(self._prepared().groups)

    @property
    def dropped(self) -> dict[str, str]:
        """Traces left out, with the reason (after check)."""
        return dict(self._prepared().dropped)

    @property
    def train_window_trace(self) -> np.ndarray:
        """For each training window, the index of its trace in :attr:`train_traces` (after check)."""
        return self._prepared().train_window_trace.copy()

    def _prepared(self) -> _Prepared:
        if self._data is None:
            raise RuntimeError("ThroughputDataModule: call check(world_size) or setup() first.")
        return self._data

    # ------------------------------------------------------------------------------------ validation
    def _check_options(self, world_size: int) -> None:
        _positive_int("world_size", world_size)
        _positive_int("window", self.window)
        _positive_int("horizon", self.horizon)
        _positive_int("stride", self.stride)
        _positive_int("batch_size", self.batch_size)
        _positive_int("seed", self.seed, minimum=0)
        self._check_scheme()
        vf = self.val_fraction
        if isinstance(vf, bool) or not isinstance(vf, int | float) or not 0.0 < vf < 1.0:
            raise ValueError(
                f"val_fraction: val_fraction={vf!r} is out of range; use a share of the traces in (0, 1), e.g. 0.2."
            )
        if not self.features:
            raise ValueError("features: no input columns given; list KPI columns such as ['RSRP', 'SNR', 'CQI'].")
        if len(set(self.features)) != len(self.features):
            raise ValueError(f"features: {self.features} lists a column twice; list each column once.")

    def _key(self) -> tuple:
        return (
            self.path,
            tuple(self.features),
            self.target,
            self.window,
            self.horizon,
            self.stride,
            self.val_fraction,
            self.seed,
            self.synthetic_traces,
            self.synthetic_length,
            bool(self.log_target),
        )

    def check(self, world_size: int = 1) -> None:
        """Load and validate the data and the partition for ``world_size`` ranks, in this process.

        The result is cached for :meth:`setup`. Raises ``FileNotFoundError`` (missing zip) or
        ``ValueError`` naming the problem and its fix: not a zip or no CSV members, missing KPI columns
        (member and columns), a non-numeric value (member, column, row), too few traces for the
        validation split, a rank's training shard smaller than ``batch_size``, an unknown partition.
        """
        self._check_options(world_size)
        if self._data is None or self._data_key != self._key():
            self._data = self._prepare()
            self._data_key = self._key()
            self._shards = {}
        data = self._data
        n_train, n_val = len(data.train_traces), len(data.val_traces)
        if self.partition == "by_group" and n_train < world_size:
            why = f"{world_size} ranks with partition='by_group' need one each"
            raise ValueError(self._split_message(data.source, n_train + n_val, n_val, len(data.dropped), why))
        if len(data.val_starts) < world_size:
            raise ValueError(
                f"val_fraction: the {n_val} validation trace(s) of {data.source} give {len(data.val_starts)} "
                f"window(s), fewer than the {world_size} ranks; raise val_fraction or use more or longer traces."
            )
        self.shards(world_size)

    def _split_message(self, source: str, n: int, n_val: int, dropped: int, why: str) -> str:
        return (
            f"val_fraction: {source} has {n} usable trace(s) ({dropped} left out); holding out {n_val} whole "
            f"trace(s) for validation (val_fraction={self.val_fraction}) leaves {n - n_val} for training ({why}); "
            "use more traces (data.synthetic_traces), a smaller val_fraction, a shorter window, fewer devices or "
            "partition='iid'."
        )

    def _source(self) -> str:
        if self.path is None:
            return (
                f"the synthetic traces (synthetic_traces={self.synthetic_traces}, "
                f"synthetic_length={self.synthetic_length})"
            )
        return str(self.path)

    def _load(self, columns: list[str]) -> list[Trace]:
        if self.path is not None:
            return read_zip(self.path, columns)
        traces = make_synthetic_traces(self.synthetic_traces, self.synthetic_length, self.seed)
        available = list(traces[0].frame.columns)
        missing = [c for c in columns if c not in available]
        if missing:
            raise ValueError(
                f"features: the synthetic traces lack the KPI column(s) {missing}; they have {available}. "
                "Choose data.features / data.target among them, or set data.path to the real dataset zip."
            )
        return [Trace(t.name, t.group, t.frame[columns].astype(np.float64)) for t in traces]

    def _prepare(self) -> _Prepared:
        columns = list(dict.fromkeys([*self.features, self.target]))
        traces = self._load(columns)
        source = self._source()
        # ---- clean: forward-fill within a trace, drop leading NaN rows, leave out unusable traces
        kept: list[Trace] = []
        dropped: dict[str, str] = {}
        need = self.window + self.horizon
        for trace in traces:
            empty = [c for c in columns if trace.frame[c].isna().all()]
            if empty:
                dropped[trace.name] = f"column(s) {empty} missing throughout"
                continue
            frame = trace.frame.ffill().dropna().reset_index(drop=True)
            if len(frame) < need:
                dropped[trace.name] = f"{len(frame)} usable rows < window + horizon = {need}"
                continue
            kept.append(Trace(trace.name, trace.group, frame))
        if dropped:
            shown = "; ".join(f"{k}: {v}" for k, v in list(dropped.items())[:5])
            more = f"; and {len(dropped) - 5} more" if len(dropped) > 5 else ""
            warnings.warn(
                f"ThroughputDataModule: left out {len(dropped)} of {len(traces)} traces of {source} ({shown}{more}).",
                stacklevel=3,
            )
        if not kept:
            short = [k for k, v in dropped.items() if "usable rows" in v]
            field, fix = (
                ("window", f"use a shorter data.window or data.horizon (a trace needs window + horizon = {need} rows)")
                if short
                else ("features", "choose data.features / data.target among the columns the traces do hold")
            )
            shown = "; ".join(f"{k}: {v}" for k, v in list(dropped.items())[:3])
            raise ValueError(
                f"{field}: none of the {len(traces)} trace(s) of {source} is usable ({shown}"
                f"{'; ...' if len(dropped) > 3 else ''}); {fix}, or use longer traces."
            )
        # ---- split whole traces
        n = len(kept)
        n_val = max(1, round(self.val_fraction * n))
        n_train = n - n_val
        if n_train < 1:
            raise ValueError(self._split_message(source, n, n_val, len(dropped), "need >= 1"))
        order = np.random.default_rng(self.seed).permutation(n)
        val_set = set(order[:n_val].tolist())
        train = [kept[i] for i in range(n) if i not in val_set]
        val = [kept[i] for i in range(n) if i in val_set]
        # ---- transforms and statistics of the training traces
        target_in_units = (lambda v: v / 1000.0) if self.target in BITRATE_COLUMNS else (lambda v: v)

        def inputs(frame: pd.DataFrame) -> np.ndarray:
            cols = []
            for f in self.features:
                v = frame[f].to_numpy(np.float64)
                cols.append(np.log1p(np.clip(v / 1000.0, 0.0, None)) if f in BITRATE_COLUMNS else v)
            return np.stack(cols, axis=1)

        def target_space(v: np.ndarray) -> np.ndarray:
            return np.log1p(v) if self.log_target else v

        train_true = [target_in_units(t.frame[self.target].to_numpy(np.float64)) for t in train]
        val_true = [target_in_units(t.frame[self.target].to_numpy(np.float64)) for t in val]
        if self.log_target:
            for t, v in zip(train + val, train_true + val_true, strict=True):
                if (v < 0).any():
                    raise ValueError(
                        f"log_target: the target {self.target!r} is negative in {t.name!r} (min {v.min():g}), so "
                        "log1p cannot be taken; set data.log_target=false."
                    )
        x_train = [inputs(t.frame) for t in train]
        stacked = np.concatenate(x_train)
        mean, std = stacked.mean(axis=0), stacked.std(axis=0)
        std = np.where(std > 1e-12, std, 1.0)
        y_all = np.concatenate([target_space(v) for v in train_true])
        y_mean, y_std = float(y_all.mean()), float(y_all.std())
        y_std = y_std if y_std > 1e-12 else 1.0
        transform = {"log": bool(self.log_target), "mean": y_mean, "std": y_std}

        def assemble(
            part: list[Trace], xs: list[np.ndarray], trues: list[np.ndarray]
        ) -> tuple[tuple[Tensor, Tensor, Tensor], np.ndarray, np.ndarray]:
            starts, owner, offset = [], [], 0
            for k, t in enumerate(part):
                s = window_starts(len(t.frame), self.window, self.horizon, self.stride)
                starts.append(s + offset)
                owner.append(np.full(len(s), k, dtype=np.int64))
                offset += len(t.frame)
            x = torch.from_numpy(((np.concatenate(xs) - mean) / std).astype(np.float32))
            y_true = np.concatenate(trues)
            y = torch.from_numpy(((target_space(y_true) - y_mean) / y_std).astype(np.float32))
            return (x, y, torch.from_numpy(y_true.astype(np.float32))), np.concatenate(starts), np.concatenate(owner)

        train_arrays, train_starts, train_owner = assemble(train, x_train, train_true)
        val_arrays, val_starts, _ = assemble(val, [inputs(t.frame) for t in val], val_true)
        return _Prepared(
            source=source,
            train_traces=[t.name for t in train],
            val_traces=[t.name for t in val],
            groups={t.name: t.group for t in kept},
            dropped=dropped,
            train=train_arrays,
            val=val_arrays,
            train_starts=train_starts,
            train_window_trace=train_owner,
            val_starts=val_starts,
            train_rows=int(sum(len(t.frame) for t in train)),
            feature_mean=mean,
            feature_std=std,
            target_transform=transform,
        )

    # ------------------------------------------------------------------------------------ partition
    def shards(self, world_size: int) -> list[np.ndarray]:
        """Every rank's training windows (indices into the training windows, sorted); same length on every rank.

        ``"iid"``: a permutation seeded by ``seed`` cut into equal parts
        (:func:`lit_commeff.recipes.partition.partition_all`). ``"by_group"``: the training traces, ordered
        by (mobility pattern, name), are cut into ``world_size`` contiguous runs of whole traces chosen
        greedily to make the smallest rank's window count as large as possible; each rank is then cut to
        that count (a seeded random subset of its windows). Ranks thus see different mobility regimes.

        Raises:
            ValueError: Some rank would hold fewer windows than ``batch_size`` (it would take no step).
        """
        data = self._prepared()
        world_size = _positive_int("world_size", world_size)
        key = (world_size, self.partition)
        shards = self._shards.get(key)
        if shards is None:
            shards = self._partition(data, world_size)
            self._shards[key] = shards
        smallest = min(range(world_size), key=lambda r: len(shards[r]))
        if len(shards[smallest]) < self.batch_size:
            raise ValueError(
                f"batch_size: with {world_size} rank(s) and partition={self.partition!r}, rank {smallest}'s training "
                f"shard holds {len(shards[smallest])} windows (from {data.train_rows} training rows in "
                f"{len(data.train_traces)} traces of {data.source}), fewer than batch_size={self.batch_size}, so it "
                "would take no training step (drop_last=True); lower data.batch_size, use fewer devices, a shorter "
                "window or a smaller stride, or more data (a longer/larger dataset, data.synthetic_traces, "
                "data.synthetic_length)."
            )
        return shards

    def _check_scheme(self) -> None:
        if self.partition not in PARTITION_SCHEMES:
            raise ValueError(
                f"partition: partition={self.partition!r} is unknown; use 'iid' (shuffled windows, equal parts per "
                "rank) or 'by_group' (whole traces per rank, ordered by mobility pattern)."
            )

    def _partition(self, data: _Prepared, world_size: int) -> list[np.ndarray]:
        self._check_scheme()
        if self.partition == "iid":
            return partition_all(len(data.train_starts), world_size, "iid", self.seed)
        counts = np.bincount(data.train_window_trace, minlength=len(data.train_traces))
        runs = _contiguous_max_min(data.train_traces, data.groups, counts, world_size)
        shards = [np.flatnonzero(np.isin(data.train_window_trace, run)) for run in runs]
        size = min(len(s) for s in shards)
        for r, idx in enumerate(shards):
            if len(idx) > size:  # a seeded random subset, so every trace of the rank keeps its share
                shards[r] = np.sort(np.random.default_rng([self.seed, r]).choice(idx, size=size, replace=False))
        return shards

    # ------------------------------------------------------------------------------------ Lightning hooks
    def setup(self, stage: str | None = None) -> None:
        trainer = self.trainer
        rank, world = (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)
        if world > 1 and getattr(getattr(trainer, "_accelerator_connector", None), "use_distributed_sampler", False):
            raise ValueError(
                "use_distributed_sampler: ThroughputDataModule gives every rank its own shard; create the Trainer "
                "with use_distributed_sampler=False."
            )
        self.check(world)
        self._rank, self._world = rank, world

    def _dataset(self, arrays: tuple[Tensor, Tensor, Tensor], starts: np.ndarray) -> WindowDataset:
        return WindowDataset(*arrays, starts, self.window, self.horizon)

    def train_dataloader(self) -> DataLoader:
        data = self._prepared()
        shard = self.shards(self._world)[self._rank]
        return ResumableDataLoader(
            self._dataset(data.train, data.train_starts[shard]),
            batch_size=self.batch_size,
            seed=self.seed + self._rank,
            progress=trainer_progress(self),
            num_workers=0,
        )

    def val_dataloader(self) -> DataLoader:
        data = self._prepared()
        part = interleaved_shard(len(data.val_starts), self._world, self._rank)
        return DataLoader(
            self._dataset(data.val, data.val_starts[part]), batch_size=self.batch_size, shuffle=False, num_workers=0
        )


def _contiguous_max_min(
    names: list[str], groups: dict[str, str], counts: np.ndarray, world_size: int
) -> list[list[int]]:
    """Cut traces ordered by (group, name) into ``world_size`` contiguous runs, maximising the smallest run's count.

    Returns, per rank, indices into ``names``. Binary search on the smallest count ``m``: a greedy pass
    closes a run as soon as it holds ``>= m`` windows; ``m`` is feasible if it closes ``world_size`` runs
    (the rest joins the last run).
    """
    order = sorted(range(len(names)), key=lambda k: (groups[names[k]], names[k]))
    sizes = [int(counts[k]) for k in order]

    def cut(m: int) -> list[list[int]] | None:
        runs: list[list[int]] = []
        current: list[int] = []
        acc = 0
        for k, size in zip(order, sizes, strict=True):
            current.append(k)
            acc += size
            if acc >= m and len(runs) < world_size - 1:
                runs.append(current)
                current, acc = [], 0
        if len(runs) < world_size - 1 or not current or acc < m:
            return None
        return [*runs, current]

    best = cut(0)
    if best is None:
        raise ValueError(
            f"partition: partition='by_group' needs at least one training trace per rank, but there are "
            f"{len(names)} for {world_size} ranks; use fewer devices, more traces or partition='iid'."
        )
    lo, hi = 1, int(sum(sizes)) // world_size
    while lo <= hi:
        mid = (lo + hi) // 2
        runs = cut(mid)
        if runs is not None:
            best, lo = runs, mid + 1
        else:
            hi = mid - 1
    return best


# ---------------------------------------------------------------------------------------------- model
#: Optimizers :class:`ThroughputForecaster` accepts.
OPTIMIZERS: tuple[str, ...] = ("sgd", "adam", "adamw")
#: Architectures :class:`ThroughputForecaster` accepts.
ARCHS: tuple[str, ...] = ("gru", "transformer")


class _GRUNet(nn.Module):
    """GRU over the window; a linear head on the last step's output."""

    def __init__(self, num_features: int, hidden: int, layers: int) -> None:
        super().__init__()
        self.gru = nn.GRU(num_features, hidden, num_layers=layers, batch_first=True)
        self.head = nn.Linear(hidden, 1)

    def forward(self, x: Tensor) -> Tensor:
        out, _ = self.gru(x)
        return self.head(out[:, -1]).squeeze(-1)


class _TransformerNet(nn.Module):
    """Linear embedding + learned positional embedding + pre-norm TransformerEncoder; head on the last token."""

    def __init__(self, num_features: int, hidden: int, layers: int, window: int) -> None:
        super().__init__()
        heads = next(h for h in (4, 2, 1) if hidden % h == 0)
        self.embed = nn.Linear(num_features, hidden)
        self.pos = nn.Parameter(torch.randn(window, hidden) * 0.02)
        layer = nn.TransformerEncoderLayer(
            hidden, heads, dim_feedforward=2 * hidden, dropout=0.0, batch_first=True, norm_first=True
        )
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(hidden)
        self.head = nn.Linear(hidden, 1)

    def forward(self, x: Tensor) -> Tensor:
        length = x.shape[1]
        if length > self.pos.shape[0]:
            raise ValueError(
                f"window: the model was built for windows of {self.pos.shape[0]} rows, got {length}; build it "
                "with the datamodule's window."
            )
        h = self.encoder(self.embed(x) + self.pos[-length:])
        return self.head(self.norm(h[:, -1])).squeeze(-1)


class ThroughputForecaster(pl.LightningModule):
    """Forecast throughput from a window of KPIs: a GRU or a small Transformer, Huber loss, metrics in Mbit/s.

    The layers are built in ``configure_model`` from the datamodule's ``num_features`` (and ``window``
    for the Transformer's positional embedding) unless given here, so the model can be instantiated
    before the data is loaded. They are initialised from a private generator seeded with ``seed`` (or,
    when ``None``, with ``torch.initial_seed()``, i.e. the ``seed_everything`` seed), so every rank builds
    the same parameters regardless of what else drew random numbers before.

    Loss: SmoothL1 (Huber, ``beta=huber_beta``) on the datamodule's model-space target (standardised
    ``log1p`` Mbit/s). Logged: ``train/loss`` (per step), ``val/loss`` (``sync_dist``), and torchmetrics
    ``val/mae``, ``val/smape`` and ``val/mae_persistence`` (the last observed value as the forecast, a
    naive baseline independent of the model: the same every epoch) in original units.

    Args:
        arch: ``"gru"`` or ``"transformer"``.
        hidden: Hidden size (GRU state, Transformer width).
        layers: GRU layers or Transformer encoder layers.
        lr: Learning rate.
        optimizer: ``"sgd"``, ``"adam"`` or ``"adamw"``.
        momentum: SGD momentum.
        weight_decay: Weight decay.
        num_features: Input columns; ``None``: the datamodule's ``num_features``.
        window: Longest window (Transformer positional embedding); ``None``: the datamodule's ``window``.
        seed: Seed of the initialisation; ``None``: ``torch.initial_seed()``.
        huber_beta: Where the SmoothL1 loss turns from quadratic to linear, in standard deviations of the
            model-space target. Small values make it close to L1, whose minimiser is the conditional
            median: the forecast that minimises the MAE in any monotone transform of the target, Mbit/s
            included (with ``beta=1`` the model learns a mean in log space and loses to persistence on the
            real traces, which are idle about 44% of the time).
    """

    def __init__(
        self,
        arch: str = "gru",
        hidden: int = 64,
        layers: int = 1,
        lr: float = 0.01,
        optimizer: str = "adam",
        momentum: float = 0.0,
        weight_decay: float = 0.0,
        num_features: int | None = None,
        window: int | None = None,
        seed: int | None = None,
        huber_beta: float = 0.1,
    ) -> None:
        super().__init__()
        if arch not in ARCHS:
            raise ValueError(f"arch: arch={arch!r} is unknown; use one of {list(ARCHS)}.")
        if optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer: optimizer={optimizer!r} is unknown; use one of {list(OPTIMIZERS)}.")
        _positive_int("hidden", hidden)
        _positive_int("layers", layers)
        for name, value in (
            ("lr", lr),
            ("momentum", momentum),
            ("weight_decay", weight_decay),
            ("huber_beta", huber_beta),
        ):
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
                raise ValueError(f"{name}: {name}={value!r} is out of range; use a finite value >= 0.")
        if lr <= 0:
            raise ValueError(f"lr: lr={lr!r} is out of range; use a value > 0.")
        if num_features is not None:
            _positive_int("num_features", num_features)
        if window is not None:
            _positive_int("window", window)
        if seed is not None:
            _positive_int("seed", seed, minimum=0)
        self.save_hyperparameters()
        self.net: nn.Module | None = None
        self.target_transform: dict[str, Any] | None = None
        self.loss_fn = nn.SmoothL1Loss(beta=float(huber_beta))
        self.val_mae = MeanAbsoluteError()
        self.val_smape = SymmetricMeanAbsolutePercentageError()
        self.val_mae_persistence = MeanAbsoluteError()
        if num_features is not None and (arch == "gru" or window is not None):
            self._build(num_features, window)

    # ------------------------------------------------------------------------------------ building
    def _build(self, num_features: int, window: int | None) -> None:
        seed = self.hparams.seed if self.hparams.seed is not None else torch.initial_seed()
        # On the CPU and from a private generator: identical on every rank under the same seed (the
        # strategy moves the module to its device afterwards).
        with torch.device("cpu"), torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            if self.hparams.arch == "gru":
                net: nn.Module = _GRUNet(num_features, self.hparams.hidden, self.hparams.layers)
            else:
                net = _TransformerNet(num_features, self.hparams.hidden, self.hparams.layers, window)
        self.net = net
        self.hparams.num_features, self.hparams.window = num_features, window

    def configure_model(self) -> None:
        datamodule = getattr(self._trainer, "datamodule", None) if self._trainer is not None else None
        if self.target_transform is None and getattr(datamodule, "target_transform", None) is not None:
            self.target_transform = dict(datamodule.target_transform)
        if self.net is not None:
            return
        num_features = self.hparams.num_features or getattr(datamodule, "num_features", None)
        window = self.hparams.window or getattr(datamodule, "window", None)
        if num_features is None:
            raise ValueError(
                "num_features: ThroughputForecaster(num_features=None) takes its input size from the datamodule, "
                "but the Trainer has none with num_features; pass num_features (and window) or use "
                "ThroughputDataModule."
            )
        if self.hparams.arch == "transformer" and window is None:
            raise ValueError("window: arch='transformer' needs the window length; pass window or use the datamodule.")
        self._build(int(num_features), None if window is None else int(window))

    def load_state_dict(self, state_dict: Any, strict: bool = True, assign: bool = False) -> Any:
        """As ``nn.Module.load_state_dict``; builds the layers first from the saved shapes if not built yet."""
        if self.net is None:
            if "net.gru.weight_ih_l0" in state_dict and self.hparams.arch == "gru":
                self._build(int(state_dict["net.gru.weight_ih_l0"].shape[1]), self.hparams.window)
            elif "net.embed.weight" in state_dict and self.hparams.arch == "transformer":
                self._build(int(state_dict["net.embed.weight"].shape[1]), int(state_dict["net.pos"].shape[0]))
        return super().load_state_dict(state_dict, strict=strict, assign=assign)

    def get_extra_state(self) -> Any:
        return {"target_transform": self.target_transform}

    def set_extra_state(self, state: Any) -> None:
        if isinstance(state, dict) and state.get("target_transform") is not None:
            self.target_transform = dict(state["target_transform"])

    # ------------------------------------------------------------------------------------ compute
    def forward(self, x: Tensor) -> Tensor:
        """Model-space forecasts ``(batch,)`` for windows ``(batch, window, features)``."""
        if self.net is None:
            raise RuntimeError(
                "ThroughputForecaster: the layers are not built yet; pass num_features (and window for "
                "arch='transformer'), or run it through a Trainer with ThroughputDataModule."
            )
        return self.net(x)

    def to_units(self, z: Tensor) -> Tensor:
        """Model-space values -> original units (Mbit/s for bit rates), clamped at 0 for a log target."""
        t = self.target_transform
        if t is None:
            raise RuntimeError(
                "ThroughputForecaster: the target transform is unknown; train with ThroughputDataModule (the model "
                "reads it from the datamodule) or load a checkpoint that holds it."
            )
        value = z * t["std"] + t["mean"]
        return torch.expm1(value).clamp_min(0.0) if t["log"] else value

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        x, y, _, _ = batch
        loss = self.loss_fn(self(x), y)
        self.log("train/loss", loss, on_step=True, on_epoch=False, prog_bar=True, batch_size=len(y))
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y, y_true, last = batch
        z = self(x)
        pred = self.to_units(z)
        self.log("val/loss", self.loss_fn(z, y), on_step=False, on_epoch=True, sync_dist=True, batch_size=len(y))
        self.val_mae.update(pred, y_true)
        self.val_smape.update(pred, y_true)
        self.val_mae_persistence.update(last, y_true)
        self.log("val/mae", self.val_mae, on_step=False, on_epoch=True, prog_bar=True)
        self.log("val/smape", self.val_smape, on_step=False, on_epoch=True)
        self.log("val/mae_persistence", self.val_mae_persistence, on_step=False, on_epoch=True)

    def predict_step(self, batch: Any, batch_idx: int) -> Tensor:
        return self.to_units(self(batch[0]))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        h = self.hparams
        if h.optimizer == "sgd":
            return torch.optim.SGD(self.parameters(), lr=h.lr, momentum=h.momentum, weight_decay=h.weight_decay)
        cls = torch.optim.Adam if h.optimizer == "adam" else torch.optim.AdamW
        return cls(self.parameters(), lr=h.lr, weight_decay=h.weight_decay)


__all__ = [
    "DEFAULT_FEATURES",
    "ThroughputDataModule",
    "ThroughputForecaster",
    "Trace",
    "WindowDataset",
    "make_synthetic_traces",
    "mobility_of",
    "read_zip",
    "window_starts",
]
