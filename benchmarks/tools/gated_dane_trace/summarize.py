"""Summarise a Gated DANE trace (``sitecustomize.py`` here): one line per sync, and medians of the late rounds.

``python benchmarks/tools/gated_dane_trace/summarize.py TRACE_DIR [TRACE_DIR ...]``
"""

import json
import statistics
import sys
from pathlib import Path


def main(folders: list[str]) -> None:
    for folder in folders:
        ranks = [[json.loads(line) for line in path.open()] for path in sorted(Path(folder).glob("rank*.jsonl"))]
        rounds = min(len(r) for r in ranks)
        print(f"{folder}: {len(ranks)} ranks, {rounds} syncs")
        print("  step   H  anchor_move  |mom|  per rank ‖c_m‖/‖ĝ‖ and ‖Δ_m‖")
        step = 0
        for i in range(rounds):
            first = ranks[0][i]
            step += first["H"]
            per = "  ".join(f"{(r[i]['corr'] or 0) / (r[i]['ghat'] or 1):4.2f}/{r[i]['delta_m']:5.3f}" for r in ranks)
            print(f"  {step:4d} {first['H']:3d}  {first['anchor_move']:11.3f}  {first['mom'] or 0:5.2f}  {per}")
        late = ranks[0][rounds // 3 :]
        move = statistics.median(r["anchor_move"] / r["H"] for r in late)
        own = statistics.median(r["delta_m"] / r["H"] for r in late)
        mom = statistics.median(r["mom"] or 0.0 for r in late)
        print(
            f"  late rounds (the last two thirds of the syncs): anchor move per step {move:.3f}, rank 0's change per "
            f"step {own:.3f} (ratio {move / own:.2f}), |momentum| {mom:.2f}"
        )


if __name__ == "__main__":
    main(sys.argv[1:])
