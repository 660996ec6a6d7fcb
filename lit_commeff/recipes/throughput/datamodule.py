"""The throughput recipe's data module: per-trace windows of radio KPIs, standardised, sharded per rank.

A sample is a window of ``window`` consecutive rows of the feature columns (radio KPIs and, by
default, the past throughput itself); its target is the throughput ``horizon`` rows after the
window's last row. Rows are used in file order (the traces have about one row per second, with an
occasional repeated timestamp; nothing is interpolated); ``sample_every=k`` keeps every k-th row, for a
k times longer sampling interval (window and horizon count the kept rows). The traces are read and cleaned by
:mod:`~lit_commeff.recipes.throughput.reading`; the ones left out are listed in
:attr:`ThroughputDataModule.dropped`.

Units and scaling: bit rates are converted to Mbit/s. Bit-rate features enter as ``log1p(Mbit/s)``
(heavy-tailed); every feature is then standardised with the mean and standard deviation of all
training traces (the same on every rank). The model predicts the standardised ``log1p(Mbit/s)`` of
the target (``log_target=True``) or the standardised Mbit/s; its metrics are in Mbit/s.

Training windows are sharded by the datamodule itself (the Trainer runs with
``use_distributed_sampler=False``): ``partition="iid"`` shuffles all training windows and cuts them into
equal parts; ``partition="by_group"`` gives each rank whole traces, ordered by mobility pattern, so
ranks see different regimes (see :meth:`ThroughputDataModule.shards`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import lightning.pytorch as pl
import numpy as np
import pandas as pd
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset
from typing_extensions import override

from lit_commeff.recipes.partition import PARTITION_SCHEMES, interleaved_shard, partition_all
from lit_commeff.recipes.resumable import ResumableDataLoader, trainer_progress
from lit_commeff.recipes.throughput.reading import (
    BITRATE_COLUMNS,
    DEFAULT_FEATURES,
    Trace,
    clean_traces,
    load_traces,
    positive_int,
)
from lit_commeff.strategy import lightning_api


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


class ThroughputDataModule(pl.LightningDataModule):
    """Per-trace windows of 5G radio KPIs -> downlink throughput ``horizon`` seconds later.

    Call :meth:`check` (the CLI does, before starting processes) to load and validate the data in the
    current process; ``setup`` does it otherwise. Each rank then builds its own training shard (see
    :meth:`shards`) and an equal interleaved part of the validation windows; the Trainer must run with
    ``use_distributed_sampler=False``.

    Args:
        path: The 5G production dataset zip; ``None`` for the built-in synthetic traces (offline default).
        features: Input columns (default :data:`DEFAULT_FEATURES`: RSRP, RSRQ, SNR, CQI, RSSI, Speed and the
            past DL_bitrate); the target column may be one of them (its past values).
        target: Column to forecast (``DL_bitrate``/``UL_bitrate`` are read as kbit/s and forecast in Mbit/s;
            any other column in its own unit).
        window: History length in rows.
        horizon: Forecast ``horizon`` rows after a window's last row.
        stride: Rows between the starts of consecutive windows.
        batch_size: Windows per batch (per rank).
        val_fraction: Share of the traces held out, whole, for validation (seeded split, so validation
            traces are unseen).
        partition: ``"iid"`` (shuffled windows, equal parts) or ``"by_group"`` (whole traces per rank,
            ordered by group; every rank cut to the smallest rank's window count).
        group_column: ``None``: a trace's group is its mobility pattern, from the zip member's path
            (``Static``, ``Driving``, …); a column name: the value that column holds throughout the trace
            (it must not change within a trace).
        sample_every: Keep every ``sample_every``-th row of each trace (after the fill): the sampling
            interval becomes ``sample_every`` times the file's (1 s in the 5G dataset).
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
        group_column: str | None = None,
        sample_every: int = 1,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.path = None if path is None else str(path)
        self.features = [str(f) for f in (DEFAULT_FEATURES if features is None else features)]
        self.target = str(target)
        self.window, self.horizon, self.stride, self.batch_size = window, horizon, stride, batch_size
        self.val_fraction, self.partition, self.seed = val_fraction, partition, seed
        self.synthetic_traces, self.synthetic_length, self.log_target = synthetic_traces, synthetic_length, log_target
        self.group_column = None if group_column is None else str(group_column)
        self.sample_every = sample_every
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
        """Trace name -> group (mobility pattern, or the group_column value), for every used trace (after check)."""
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
        positive_int("world_size", world_size)
        positive_int("window", self.window)
        positive_int("horizon", self.horizon)
        positive_int("stride", self.stride)
        positive_int("batch_size", self.batch_size)
        positive_int("seed", self.seed, minimum=0)
        positive_int("sample_every", self.sample_every)
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
            self.group_column,
            self.sample_every,
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

    def _prepare(self) -> _Prepared:
        columns = list(dict.fromkeys([*self.features, self.target]))
        traces = load_traces(
            self.path,
            columns,
            synthetic_traces=self.synthetic_traces,
            synthetic_length=self.synthetic_length,
            seed=self.seed,
            group_column=self.group_column,
        )
        source = self._source()
        # ---- clean: forward-fill within a trace, drop leading NaN rows, keep every k-th row, leave out unusable ones
        kept, dropped = clean_traces(
            traces, columns, self.window + self.horizon, source, stacklevel=3, every=self.sample_every
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
        world_size = positive_int("world_size", world_size)
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
    @override
    def setup(self, stage: str | None = None) -> None:
        trainer = self.trainer
        rank, world = (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)
        if world > 1 and lightning_api.uses_distributed_sampler(trainer):
            raise ValueError(
                "use_distributed_sampler: ThroughputDataModule gives every rank its own shard; create the Trainer "
                "with use_distributed_sampler=False."
            )
        self.check(world)
        self._rank, self._world = rank, world

    def _dataset(self, arrays: tuple[Tensor, Tensor, Tensor], starts: np.ndarray) -> WindowDataset:
        return WindowDataset(*arrays, starts, self.window, self.horizon)

    @override
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

    @override
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


__all__ = ["ThroughputDataModule", "WindowDataset", "window_starts"]
