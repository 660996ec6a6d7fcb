"""Per-rank step timings from a profiled B3 run (session 29's instrumentation patch).

The patch ``benchmarks/results/b3/s29_profile/profile.patch`` makes every rank of a hub strategy write, at exit,
one JSON list per process to ``$LCE_PROF/rank<r>_<pid>.json``: per optimizer step ``[step, communicates, phase, k,
entered, algorithm start, algorithm end, left]``; per overlapped sync ``["sync", before, after, waited, exchange s]``;
per logged step ``["log", start, comm/* logged, diagnostics logged, 0]`` (``perf_counter`` seconds). This prints,
per rank, the median milliseconds of a silent step, of a communicating step, of a step by its place after a
validation pass, and of the logging calls. Example::

    python benchmarks/tools/b3_step_profile.py benchmarks/results/b3/s29_profile/h30
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections import defaultdict
from pathlib import Path

VALIDATION_GAP_S = 0.5  # a pause between two steps this long is a validation pass, not training


def _ms(values: list[float]) -> str:
    return f"{statistics.median(values) * 1000:.1f}" if values else "-"


def summarize(path: Path) -> str:
    """One rank's file as text lines."""
    records = json.loads(path.read_text())
    steps = [r for r in records if r[0] not in ("sync", "log")]
    logs = [r for r in records if r[0] == "log"]
    silent = [r[7] - r[4] for r in steps if r[1] == 0]
    comm = [r[7] - r[4] for r in steps if r[1] == 1]
    by_place: dict[int, list[float]] = defaultdict(list)
    place = None
    for i, r in enumerate(steps):
        if i and r[4] - steps[i - 1][7] >= VALIDATION_GAP_S:
            place = 0
        elif place is not None:
            place += 1
        if place is not None:
            by_place[place].append(r[7] - r[4])
    lines = [
        f"{path.name}: {len(steps)} steps; silent {_ms(silent)} ms, communicating {_ms(comm)} ms (medians)",
        "  by place after a validation pass (ms): "
        + " ".join(f"{p}:{_ms(v)}" for p, v in sorted(by_place.items()) if len(v) > 3),
    ]
    if logs:
        lines.append(
            f"  logged steps {len(logs)}: comm/* {_ms([r[2] - r[1] for r in logs])} ms, "
            f"diagnostics {_ms([r[3] - r[2] for r in logs])} ms (medians)"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path, help="a folder of rank<r>_<pid>.json files")
    args = parser.parse_args()
    for path in sorted(args.folder.glob("rank*.json")):
        print(summarize(path))


if __name__ == "__main__":
    main()
