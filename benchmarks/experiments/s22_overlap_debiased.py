"""Session 22 experiment: the gated round length under overlap with the raw or the debiased similarity estimate.

In the simulator (exact gradients), B8 part 2d's eight cases, Gated DANE with ``sync="gated"`` (the drift gate alone:
the simulator has no link, ``link_aware`` is off), ``correction="averaged"``, DiLoCo-style outer step of the case,
synchronous or under overlap (``eager=once``, ``correction_memory=0.2``, full precision), with
``delta_estimate="raw"`` or ``"debiased"``. Under overlap each rank's gradients come from its own start and path,
not from the anchor the estimate divides by, so the raw δ̂ holds the spread of the ranks' paths even without noise;
the debiased one subtracts the round's spread of gradients. Reported: rounds and local steps to 1e-8 and their
ratio, the mean round length.

    python benchmarks/experiments/s22_overlap_debiased.py --out benchmarks/results/s22_overlap_debiased.json
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import b8_gated_dane as b8

from lit_commeff import sim


def main() -> None:
    args = b8.experiment_parser(__doc__).parse_args()
    torch.set_num_threads(1)
    rows = []
    for case in b8.noprox_cases(args.data):
        _, problem, step, lr, momentum = case
        for late in (False, True):
            for estimate in ("raw", "debiased"):
                options = {"overlap": late}
                if late:
                    options.update(message_dtype="model", eager="once", correction_memory=0.2)
                history = sim.run(
                    problem, "gated_dane", compressor="identity", outer_lr=lr, outer_momentum=momentum,
                    delta=None, lr=step / problem.L, rounds=args.rounds, tol=1e-8, sync="gated",
                    correction="averaged", outer="nesterov", delta_estimate=estimate, **options,
                )  # fmt: skip
                row = b8.experiment_row(case, history, f"overlap={late} {estimate}", overlap=late,
                                        delta_estimate=estimate)  # fmt: skip
                reached = row["to_1e8"]
                mean_h = reached["steps"] / reached["cc1"] if reached["cc1"] not in (0, float("inf")) else None
                row.update(mean_h_to_1e8=mean_h, final_cc1=history.final["cc1"], final_steps=history.final["round"])
                rows.append(row)
    b8.write_experiment(args, rows)


if __name__ == "__main__":
    main()
