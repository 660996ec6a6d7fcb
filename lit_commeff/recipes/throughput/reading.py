"""Where the throughput recipe's traces come from, and their checks: the 5G dataset zip or synthetic traces.

Data: the 5G production dataset of Raca et al. (MMSys 2020), read straight from its zip
(``5G-production-dataset/{Amazon_Prime,Netflix,Download}/{Static,Driving}/[show/]B_<date>.csv``, 26
columns per trace, about one row per second, ``DL_bitrate``/``UL_bitrate`` in kbit/s) by :func:`read_zip`,
or built-in synthetic traces with the same columns (:func:`make_synthetic_traces`: static / walking /
driving mobility, AR(1) radio KPIs, a throughput that depends nonlinearly on SNR and CQI, with on/off
download bursts and noise).

Cleaning (:func:`clean_traces`), the same for real and synthetic traces:

* a missing value (``-`` or an empty cell) becomes NaN and is forward-filled within its trace; the
  leading rows that still hold a NaN in a used column (before that column's first value) are dropped;
* a trace in which a used column is missing throughout (in the real data: ``RSSI`` in 6 traces, and
  ``SNR``/``CQI``/``RSSI`` in one), or which is shorter than ``window + horizon`` rows after that, is
  left out with a warning;
* any other non-numeric value in a used column is an error naming the zip member, column and row;
* ``sample_every=k`` keeps every k-th row of each trace after the fill (the sampling interval becomes k
  times the file's; window and horizon count the kept rows).

A trace's group (for ``partition="by_group"``) is its mobility pattern, taken from the member's path
(:func:`mobility_of`), or, with ``group_column``, the value that column holds in every row of the trace
(a column whose value changes within a trace is an error: a trace is never split).
"""

from __future__ import annotations

import io
import math
import warnings
import zipfile
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd

from lit_commeff.recipes.tabular.reading import record_lines

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


def trace_group(values: pd.Series, name: str, column: str) -> str:
    """The group of a trace: the one value ``column`` holds in all its rows (blank and ``-`` cells ignored).

    Raises:
        ValueError: The column is empty throughout, or holds several values (a trace is never split).
    """
    text = values.astype(str).str.strip()
    found = sorted(set(text[~text.isin(MISSING_MARKERS)].tolist()))
    if len(found) != 1:
        shown = found if len(found) <= 5 else [*found[:5], "…"]
        what = "is empty throughout" if not found else f"holds {len(found)} values {shown}"
        raise ValueError(
            f"group_column: column {column!r} {what} in trace {name!r}; partition='by_group' gives every rank whole "
            "traces, so a trace's group must be one value: set group_column to a column that is constant within "
            "each trace, or to null (the mobility pattern from the member's path)."
        )
    return found[0]


def _parse_member(
    raw: bytes, member: str, columns: Sequence[str], path: str, group_column: str | None = None
) -> tuple[pd.DataFrame, str | None]:
    """The used columns of one CSV trace as float64, missing values NaN (see the module docstring).

    Returns:
        The frame, and the trace's ``group_column`` value (``None`` without ``group_column``).
    """
    wanted = set(columns) | ({group_column} if group_column else set())
    try:
        header = [str(c).strip() for c in pd.read_csv(io.BytesIO(raw), nrows=0).columns]
        missing = [c for c in columns if c not in header]
        if missing:
            raise ValueError(
                f"features: zip member {member!r} of {path} lacks the KPI column(s) {missing} in its header (line 1); "
                f"its columns are {header}. Choose data.features / data.target among them."
            )
        if group_column and group_column not in header:
            raise ValueError(
                f"group_column: zip member {member!r} of {path} has no column {group_column!r} (line 1); its columns "
                f"are {header}. Set data.group_column to one of them, or to null (the mobility pattern from the path)."
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
    group = trace_group(table[group_column], member, group_column) if group_column else None
    return pd.DataFrame(out), group


def read_zip(path: str | Path, columns: Sequence[str], group_column: str | None = None) -> list[Trace]:
    """The CSV traces of the 5G production dataset zip (``columns`` only), in member order.

    macOS metadata (``__MACOSX/``, ``._*``, ``.DS_Store``) is skipped. Nothing is extracted to disk. A
    trace's group is its mobility pattern (:func:`mobility_of`), or its ``group_column`` value
    (:func:`trace_group`).

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
                frame, group = _parse_member(raw, m, columns, str(p), group_column)
                traces.append(Trace(m, mobility_of(m) if group is None else group, frame))
            return traces
    except (zipfile.BadZipFile, EOFError) as err:
        raise ValueError(
            f"path: {p} is a damaged zip archive ({err}); download the 5G production dataset zip again."
        ) from None


# ---------------------------------------------------------------------------------------------- loading, cleaning
def load_traces(
    path: str | None,
    columns: list[str],
    *,
    synthetic_traces: int,
    synthetic_length: int,
    seed: int,
    group_column: str | None = None,
) -> list[Trace]:
    """The traces' ``columns`` as float64 (NaN where missing): from the zip at ``path``, or synthetic ones.

    Each trace's group is its mobility pattern, or (``group_column``) that column's value in the trace.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: See :func:`read_zip`; or the synthetic traces lack one of ``columns``.
    """
    if path is not None:
        return read_zip(path, columns, group_column)
    traces = make_synthetic_traces(synthetic_traces, synthetic_length, seed)
    available = list(traces[0].frame.columns)
    missing = [c for c in columns if c not in available]
    if missing:
        raise ValueError(
            f"features: the synthetic traces lack the KPI column(s) {missing}; they have {available}. "
            "Choose data.features / data.target among them, or set data.path to the real dataset zip."
        )
    if group_column and group_column not in available:
        raise ValueError(
            f"group_column: the synthetic traces have no column {group_column!r}; they have {available}. Set "
            "data.group_column to one of them, or to null (the mobility pattern)."
        )
    return [
        Trace(
            t.name,
            trace_group(t.frame[group_column], t.name, group_column) if group_column else t.group,
            t.frame[columns].astype(np.float64),
        )
        for t in traces
    ]


def clean_traces(
    traces: list[Trace], columns: list[str], need: int, source: str, *, stacklevel: int = 2, every: int = 1
) -> tuple[list[Trace], dict[str, str]]:
    """Forward-fill each trace, drop its leading NaN rows, keep every ``every``-th row, leave out unusable traces.

    Args:
        traces: The loaded traces.
        columns: The used columns.
        need: Rows a trace needs (``window + horizon``), counted after keeping every ``every``-th row.
        source: The data's name in messages.
        stacklevel: Of the warning that lists the left-out traces, counted from the caller.
        every: Keep rows ``0, every, 2 every, …`` of each filled trace (``sample_every``).

    Returns:
        The usable traces, and the left-out ones' names with the reason.

    Raises:
        ValueError: No trace is usable (the message says whether the window or the columns are the cause).
    """
    kept: list[Trace] = []
    dropped: dict[str, str] = {}
    for trace in traces:
        empty = [c for c in columns if trace.frame[c].isna().all()]
        if empty:
            dropped[trace.name] = f"column(s) {empty} missing throughout"
            continue
        frame = trace.frame.ffill().dropna().iloc[::every].reset_index(drop=True)
        if len(frame) < need:
            kept_rows = f"{len(frame)} usable rows" + (f" (one row in {every} kept)" if every > 1 else "")
            dropped[trace.name] = f"{kept_rows} < window + horizon = {need}"
            continue
        kept.append(Trace(trace.name, trace.group, frame))
    if dropped:
        shown = "; ".join(f"{k}: {v}" for k, v in list(dropped.items())[:5])
        more = f"; and {len(dropped) - 5} more" if len(dropped) > 5 else ""
        warnings.warn(
            f"ThroughputDataModule: left out {len(dropped)} of {len(traces)} traces of {source} ({shown}{more}).",
            stacklevel=stacklevel + 1,
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
    return kept, dropped


def positive_int(name: str, value: Any, minimum: int = 1) -> int:
    """``value`` as an ``int`` if it is an integer >= ``minimum``; else a ``ValueError`` naming option ``name``."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise ValueError(f"{name}: {name}={value!r} is invalid; use an integer >= {minimum}.")
    return int(value)


__all__ = [
    "BITRATE_COLUMNS",
    "DEFAULT_FEATURES",
    "MISSING_MARKERS",
    "MOBILITY_NAMES",
    "SYNTHETIC_MOBILITY",
    "Trace",
    "clean_traces",
    "load_traces",
    "make_synthetic_traces",
    "mobility_of",
    "positive_int",
    "read_zip",
    "trace_group",
]
