r"""Two B3 methods seed by seed: the validation metric over the late validations, and the step each reached a target.

Reaching a tight target is decided by one validation, and on the throughput GRU under Adam the MAE moves by 0.1-0.3
between validations, so "reached on k of 3 seeds" cannot tell apart two variants whose quality differs less than
that. This compares the two on the same seeds, pair by pair: the mean of each run's validations from ``--from-step``
on (the late mean), the difference B - A per seed, and the median of those differences. A metric history does not
depend on the link when the round lengths do not (under Adam Gated DANE's rounds stay at their floor of 5 on every
link), so ``lan`` runs answer the quality question; their times do not. Example::

    python benchmarks/tools/b3_paired.py benchmarks/results/b3/s24_tput_bf16_lan.json \
        --a gated_dane --b gated_dane+bf16 --target 4.4748 --partition by_group
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path


def late_means(results: list[dict], method: str, partition: str | None, from_step: int) -> dict[int, dict]:
    """``{seed: {"late", "history"}}`` of one method's runs (the first run of a seed if repeated)."""
    out: dict[int, dict] = {}
    for run in results:
        if run["method"] != method or (partition is not None and run.get("partition") != partition):
            continue
        history = run["history"]
        late = [row["value"] for row in history if row["step"] >= from_step]
        if not late or run["seed"] in out:
            continue
        out[run["seed"]] = {
            "late": statistics.fmean(late),
            "history": history,
        }
    return out


def compare(results: list[dict], a: str, b: str, *, partition: str | None, from_step: int, target: float | None,
            higher: bool) -> dict:  # fmt: skip
    """The per-seed pairs and the median difference of the late means (B - A)."""
    runs_a = late_means(results, a, partition, from_step)
    runs_b = late_means(results, b, partition, from_step)
    rows = []
    for seed in sorted(set(runs_a) & set(runs_b)):
        row = {"seed": seed, "late_a": runs_a[seed]["late"], "late_b": runs_b[seed]["late"]}
        row["difference"] = row["late_b"] - row["late_a"]
        if target is not None:
            for key, run in (("reached_a", runs_a[seed]), ("reached_b", runs_b[seed])):
                hit = (r["step"] for r in run["history"] if (r["value"] >= target if higher else r["value"] <= target))
                row[key] = next(hit, None)
        rows.append(row)
    differences = [row["difference"] for row in rows]
    return {
        "a": a,
        "b": b,
        "partition": partition,
        "from_step": from_step,
        "pairs": rows,
        "median_difference": statistics.median(differences) if differences else None,
        "b_lower_in": sum(d < 0 for d in differences),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results", type=Path, nargs="+", help="B3 results JSON files (their runs are pooled)")
    parser.add_argument("--a", required=True, help="the method (row name) to compare against, e.g. gated_dane")
    parser.add_argument("--b", required=True, help="the method compared, e.g. gated_dane+bf16")
    parser.add_argument("--partition", default=None, help="only runs of this partition (by_group, iid)")
    parser.add_argument("--from-step", type=int, default=600, help="the late mean averages validations from here")
    parser.add_argument("--target", type=float, default=None, help="also report the step each run reached it")
    parser.add_argument("--higher", action="store_true", help="the metric is better higher (AUC); default: lower")
    parser.add_argument("--out", type=Path, default=None, help="write the comparison as JSON")
    args = parser.parse_args()
    results = [run for path in args.results for run in json.loads(path.read_text())["results"]]
    report = compare(
        results, args.a, args.b, partition=args.partition, from_step=args.from_step, target=args.target,
        higher=args.higher,
    )  # fmt: skip
    print(f"{args.b} against {args.a} ({args.partition or 'all partitions'}; late mean: steps >= {args.from_step})")
    for row in report["pairs"]:
        reach = f"  reached at {row.get('reached_a')} / {row.get('reached_b')}" if args.target is not None else ""
        print(f"  seed {row['seed']}: {row['late_a']:.4f} -> {row['late_b']:.4f} ({row['difference']:+.4f}){reach}")
    median = report["median_difference"]
    if median is not None:
        print(f"  median difference {median:+.4f}; B lower on {report['b_lower_in']} of {len(report['pairs'])} seeds")
    if args.out is not None:
        args.out.write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
