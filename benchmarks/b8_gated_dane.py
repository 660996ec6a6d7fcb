"""B8: Gated DANE on convex problems (simulator): drift floors, the δ sweep, and the B1 ridge configurations.

Three parts, one JSON (``benchmarks/results/b8_gated_dane.json``) and a printed table each:

1. **Shards that differ** — a9a ridge (λ = L/100), M = 10, IID and label-sorted shards (as
   ``../shared/reference/local_dane_reference.py``): rounds (CC-1 / 2 for the two-collective rounds of Gated
   DANE) and CC-3 units to relative suboptimality 1e-6 and 1e-8, and the floor (best value reached) of local
   SGD and DiLoCo, which have no correction.
2. **δ sweep** — synthetic ridge with controlled similarity (``synthetic_ridge``), fixed H: rounds to 1e-6
   with the extrapolated outer step (β from μ and θ) and without (β = 0), and the slope of log(rounds) against
   log(δ/μ) for each (theory: 1/2 accelerated, 1 without).
2b. **δ sweep at fixed μ** (``--parts sweep_fixed_mu``) — the same family on nearly square shards (45 rows,
   d = 40), where the data barely bound μ: λ is set per s so that μ = 2.5 exactly, and s from 0.5 to 8 moves δ
   alone, δ/μ over more than two decades (0.26–66). H = 100; slope fitted as in part 2.
2c. **Overlap** (``--parts overlap``) — a9a ridge, M = 10, label-sorted shards (part 1's): Gated DANE with fixed
   rounds of 10 and ``averaged`` corrections, each outer step (plain averaging; DiLoCo's 0.7 with momentum 0.8 and
   0.9) with and without ``overlap`` (the reply taken one round late, the eager start), and with ``overlap`` and
   ``message_dtype=bf16`` (values in bfloat16, gradients as changes to shared shifts), and with ``overlap`` and
   ``eager=share`` (each rank's next round starts from its own change as its 1/M share, Kale et al.'s weighting,
   instead of all of it): rounds to 1e-6 and 1e-8.
2d. **Overlap without a prox term** (``--parts overlap_noprox``) — Lightning's configuration (``delta`` not given:
   no prox term, local steps of ``lr``·1/L): label-sorted a9a (part 1's, M = 10) and the synthetic ridge with
   similarity 1 (M = 4), local steps of 1/L and 0.3/L, rounds of 10, plain averaging and DiLoCo's (0.7, 0.9): the
   synchronous sync, and overlap with each eager start (``full``, ``share``, ``once``) and ``correction_memory``.
   Rounds to 1e-6 and 1e-8, the best value reached and the last one (a diverged run stops at its first non-finite
   value).
2e. **A prox term from the estimate** (``--parts overlap_prox``) — part 2d's eight cases with ``prox_rho`` (θ_m =
   1/(2ρ·δ̂_m) from each rank's own estimate, the local step s/(L + 1/θ_m)), ρ = 0.25, 0.5, 1, synchronous and
   overlapped (``eager=once``, ``correction_memory=0.2``, full precision), beside no prox term: rounds to 1e-6 and
   1e-8, best and last value.
3. **B1 ridge configurations** (``--b1``; a9a M=100, mushrooms M=75, K=1): CC-3 units to 1e-6 and 1e-8 of
   Gated DANE variants, beside every method of ``benchmarks/results/b1_quick.json`` (the committed B1 run).

    python benchmarks/b8_gated_dane.py                # parts 1 and 2 (a few minutes on 2 cores)
    python benchmarks/b8_gated_dane.py --b1           # and part 3
    python benchmarks/b8_gated_dane.py --parts sweep_fixed_mu --out benchmarks/results/b8_sweep_fixed_mu.json
    python benchmarks/b8_gated_dane.py --parts overlap --out benchmarks/results/b8_overlap.json
    python benchmarks/b8_gated_dane.py --parts overlap_noprox --out benchmarks/results/b8_overlap_noprox.json
    python benchmarks/b8_gated_dane.py --parts overlap_prox --out benchmarks/results/b8_overlap_prox.json
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from lit_commeff import sim
from lit_commeff.problems import Ridge, synthetic_ridge
from lit_commeff.problems.libsvm import load_libsvm

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "datasets"
OUT = ROOT / "benchmarks" / "results" / "b8_gated_dane.json"


def reached(history: sim.History, tol: float) -> dict[str, float]:
    """CC-1 rounds, CC-3 units and steps at the first row at or below ``tol`` (inf if never)."""
    for row in history.rows:
        if row["rel_subopt"] <= tol:
            return {"cc1": row["cc1"], "cc3": row["cc3"], "steps": row["round"]}
    return {"cc1": math.inf, "cc3": math.inf, "steps": math.inf}


def summarize(label: str, history: sim.History, seconds: float) -> dict:
    return {
        "method": label,
        "to_1e6": reached(history, 1e-6),
        "to_1e8": reached(history, 1e-8),
        "floor": min(r["rel_subopt"] for r in history.rows),
        "final_cc1": history.final["cc1"],
        "final_steps": history.final["round"],
        "uplink_bytes": history.final["uplink_bytes"],
        "downlink_bytes": history.final["downlink_bytes"],
        "hyperparameters": history.meta["hyperparameters"],
        "seconds": seconds,
    }


def run(problem, label: str, algorithm: str, **options) -> dict:
    start = time.perf_counter()
    history = sim.run(problem, algorithm, **options)
    row = summarize(label, history, time.perf_counter() - start)
    print(
        f"  {label:>34}: CC-3 to 1e-6 {row['to_1e6']['cc3']:8.2f}  1e-8 {row['to_1e8']['cc3']:8.2f}  floor "
        f"{row['floor']:.1e}  ({row['seconds']:.0f}s)",
        file=sys.stderr,
    )
    return row


# ----------------------------------------------------------------------------------- part 1
def shards_that_differ(data: Path) -> list[dict]:
    A, b = load_libsvm(data / "a9a")
    out = []
    for sorted_ in (False, True):
        gen = torch.Generator().manual_seed(0)
        perm = torch.randperm(len(b), generator=gen)
        if sorted_:  # label, then the first feature: every worker sees a skewed slice (the prototype's split)
            keys = b[perm] * 4 + A[perm, 0]
            perm = perm[torch.argsort(keys, stable=True)]
        problem = Ridge.from_data(A, b, 10, perm=perm)
        split = "label-sorted" if sorted_ else "IID"
        print(f"{split}: L={problem.L:.3f} mu={problem.mu:.4f} delta={problem.delta:.3f}", file=sys.stderr)
        budget = {"rounds": 6000, "tol": 1e-9}
        rows = [
            run(problem, "GD", "gd", **budget),
            run(problem, "local SGD H=10", "local_sgd", inner_steps=10, **budget),
            run(problem, "DiLoCo H=10 (0.7, 0.9)", "diloco", inner_steps=10, **budget),
            run(problem, "DiLoCo H=50 (0.7, 0.9)", "diloco", inner_steps=50, **{**budget, "rounds": 20000}),
            run(
                problem,
                "Gated DANE fixed H=50, β=0",
                "gated_dane",
                compressor="identity",
                sync="fixed",
                inner_steps=50,
                beta=0.0,
                **{**budget, "rounds": 40000},
            ),
            run(
                problem,
                "Gated DANE fixed H=50",
                "gated_dane",
                compressor="identity",
                sync="fixed",
                inner_steps=50,
                **{**budget, "rounds": 40000},
            ),
            run(problem, "Gated DANE gated (H<=50)", "gated_dane", compressor="identity", **budget),
            run(
                problem, "Gated DANE gated, lagged", "gated_dane", compressor="identity", correction="lagged", **budget
            ),
            run(
                problem,
                "Gated DANE gated, TopK 50% EF",
                "gated_dane",
                compressor=("topk", {"ratio": 0.5}),
                **{**budget, "rounds": 20000},
            ),
            run(
                problem,
                "Gated DANE gated, RandK 10%",
                "gated_dane",
                compressor=("randk", {"ratio": 0.1}),
                **{**budget, "rounds": 20000},
            ),
            run(
                problem,
                "Gated DANE gated, lagged, TopK 50% EF",
                "gated_dane",
                compressor=("topk", {"ratio": 0.5}),
                correction="lagged",
                **{**budget, "rounds": 20000},
            ),
        ]
        out.append({"split": split, "L": problem.L, "mu": problem.mu, "delta": problem.delta, "rows": rows})
    return out


def label_sorted_a9a(data: Path) -> Ridge:
    """Part 1's label-sorted a9a ridge, M = 10."""
    A, b = load_libsvm(data / "a9a")
    perm = torch.randperm(len(b), generator=torch.Generator().manual_seed(0))
    perm = perm[torch.argsort(b[perm] * 4 + A[perm, 0], stable=True)]
    return Ridge.from_data(A, b, 10, perm=perm)


def overlap(data: Path) -> list[dict]:
    """Part 2c: the one-round-late reply against the synchronous sync, for each outer step."""
    problem = label_sorted_a9a(data)
    rows = []
    for lr, momentum in ((1.0, 0.0), (0.7, 0.8), (0.7, 0.9)):
        # "model": full precision (None would be bf16 under overlap since session 17)
        for late, wire, eager in (
            (False, None, None),
            (True, "model", None),
            (True, "bf16", None),
            (True, "model", "share"),
        ):
            label = f"outer ({lr}, {momentum}){', overlap' if late else ''}{f', {wire}' if wire == 'bf16' else ''}"
            options = {"sync": "fixed", "inner_steps": 10, "correction": "averaged", "outer": "nesterov"}
            if late:  # session 15's start and no correction memory, as labelled (the defaults since session 19 differ)
                options.update(eager="full", correction_memory=0.0)
            if eager is not None:  # the rank's own change as its 1/M share (Kale et al.'s eager update)
                label, options = f"{label}, eager={eager}", {**options, "eager": eager}
            row = run(
                problem, label, "gated_dane", compressor="identity", outer_lr=lr, outer_momentum=momentum,
                overlap=late, message_dtype=wire, rounds=20000, tol=1e-9, **options,
            )  # fmt: skip
            rows.append({
                **row, "outer_lr": lr, "outer_momentum": momentum, "overlap": late, "message_dtype": wire,
                "eager": eager or "full",
            })  # fmt: skip
    return rows


#: Part 2d's variants: (label, overlap, eager, correction_memory).
NOPROX_VARIANTS: tuple[tuple[str, bool, str, float], ...] = (
    ("synchronous", False, "full", 0.0),
    ("overlap, eager=full", True, "full", 0.0),
    ("overlap, eager=full, memory 0.5", True, "full", 0.5),
    ("overlap, eager=share", True, "share", 0.0),
    ("overlap, eager=once", True, "once", 0.0),
    ("overlap, eager=once, memory 0.2", True, "once", 0.2),
    ("overlap, eager=once, memory 0.5", True, "once", 0.5),
)


def noprox_cases(data: Path) -> Iterator[tuple[str, Ridge, float, float, float]]:
    """Part 2d's eight cases: (problem name, problem, local step × L, outer lr, outer momentum)."""
    problems = {"a9a label-sorted, M=10": label_sorted_a9a(data), "synthetic ridge s=1, M=4": synthetic_ridge(
        workers=4, similarity=1.0)}  # fmt: skip
    for name, problem in problems.items():
        for step in (1.0, 0.3):
            for lr, momentum in ((1.0, 0.0), (0.7, 0.9)):
                yield name, problem, step, lr, momentum


def overlap_noprox(data: Path, rounds: int = 6000) -> list[dict]:
    """Part 2d: overlap's eager starts where no prox term holds the local steps near the start (Lightning's case)."""
    rows = []
    for name, problem, step, lr, momentum in noprox_cases(data):
        for label, late, eager, memory in NOPROX_VARIANTS:
            options = {"sync": "fixed", "inner_steps": 10, "correction": "averaged", "outer": "nesterov"}
            if late:  # full precision: the eager start alone differs between the rows
                options.update(overlap=True, message_dtype="model", eager=eager)
            history = sim.run(
                problem, "gated_dane", compressor="identity", outer_lr=lr, outer_momentum=momentum,
                delta=None, lr=step / problem.L, correction_memory=memory, rounds=rounds, tol=1e-8, **options,
            )  # fmt: skip
            row = summarize(label, history, 0.0)
            row.update(problem=name, step=step, outer_lr=lr, outer_momentum=momentum, overlap=late,
                       eager=eager, correction_memory=memory, last=history.final["rel_subopt"],
                       diverged=bool(history.meta.get("diverged")))  # fmt: skip
            print(f"  {name}, {step}/L, ({lr}, {momentum}) {label}: to 1e-8 {row['to_1e8']['cc1']}, last "
                  f"{row['last']:.1e}", file=sys.stderr)  # fmt: skip
            rows.append(row)
    return rows


def overlap_prox(data: Path, rounds: int = 6000) -> list[dict]:
    """Part 2e: a prox term from each rank's own estimate (``prox_rho``) on part 2d's cases."""
    rows = []
    for name, problem, step, lr, momentum in noprox_cases(data):
        for late in (False, True):
            for rho in (None, 0.25, 0.5, 1.0):
                options = {"sync": "fixed", "inner_steps": 10, "correction": "averaged", "outer": "nesterov"}
                if late:
                    options.update(overlap=True, message_dtype="model", eager="once", correction_memory=0.2)
                history = sim.run(
                    problem, "gated_dane", compressor="identity", outer_lr=lr, outer_momentum=momentum,
                    delta=None, prox_rho=rho, lr=step / problem.L, rounds=rounds, tol=1e-8, **options,
                )  # fmt: skip
                label = ("overlap" if late else "synchronous") + ("" if rho is None else f", prox_rho={rho}")
                row = summarize(label, history, 0.0)
                row.update(problem=name, step=step, outer_lr=lr, outer_momentum=momentum, overlap=late,
                           prox_rho=rho, last=history.final["rel_subopt"],
                           diverged=bool(history.meta.get("diverged")))  # fmt: skip
                print(f"  {name}, {step}/L, ({lr}, {momentum}) {label}: to 1e-8 {row['to_1e8']['cc1']}, last "
                      f"{row['last']:.1e}", file=sys.stderr)  # fmt: skip
                rows.append(row)
    return rows


# ----------------------------------------------------------------------------------- part 2
def delta_sweep() -> dict:
    sims = [0.3, 0.6, 1.2, 2.4, 4.8]
    rows = []
    for s in sims:
        problem = synthetic_ridge(workers=8, n=200, dim=40, similarity=s, lam=0.01, seed=0)
        ratio = problem.delta / problem.mu
        entry = {"similarity": s, "delta_over_mu": ratio, "L": problem.L, "mu": problem.mu, "delta": problem.delta}
        entry.update(_rounds_to_1e6(problem))
        print(f"  δ/μ={ratio:7.2f}: rounds extrapolated {entry['extrapolated']}, β=0 {entry['beta0']}", file=sys.stderr)
        rows.append(entry)

    return {"rows": rows, "slope_extrapolated": _slope(rows, "extrapolated"), "slope_beta0": _slope(rows, "beta0")}


def _rounds_to_1e6(problem: Ridge) -> dict[str, float]:
    """Rounds of Gated DANE (H = 100) to 1e-6, with the extrapolated outer step and with β = 0."""
    out = {}
    for label, beta in (("extrapolated", None), ("beta0", 0.0)):
        options = {"compressor": "identity", "sync": "fixed", "inner_steps": 100, "rounds": 100 * 4000, "tol": 1e-6}
        if beta is not None:
            options["beta"] = beta
        h = sim.run(problem, "gated_dane", **options)
        out[label] = reached(h, 1e-6)["cc1"] / 2  # two collectives per round
    return out


def _slope(rows: list[dict], key: str) -> float:
    """Least-squares slope of log(rounds) against log(δ/μ)."""
    x = torch.tensor([math.log(r["delta_over_mu"]) for r in rows], dtype=torch.float64)
    y = torch.tensor([math.log(r[key]) for r in rows], dtype=torch.float64)
    xc = x - x.mean()
    return float((xc * (y - y.mean())).sum() / (xc * xc).sum())


def delta_sweep_fixed_mu(mu: float = 2.5, sims: tuple[float, ...] = (0.5, 1.0, 2.0, 4.0, 8.0)) -> dict:
    """Part 2b: δ alone moves (μ held at ``mu`` through λ), δ/μ over two decades."""
    rows = []
    for s in sims:
        data_mu = synthetic_ridge(workers=8, n=45, dim=40, similarity=s, lam=0.0, seed=0).mu
        if data_mu >= mu:
            raise SystemExit(f"μ of the data alone ({data_mu:.3f}) at s={s} exceeds the target μ={mu}")
        lam = (mu - data_mu) / 2  # the objective's regulariser adds 2λ to every eigenvalue of the Hessian
        problem = synthetic_ridge(workers=8, n=45, dim=40, similarity=s, lam=lam, seed=0)
        ratio = problem.delta / problem.mu
        entry = {"similarity": s, "lam": lam, "delta_over_mu": ratio, "L": problem.L, "mu": problem.mu,
                 "delta": problem.delta}  # fmt: skip
        entry.update(_rounds_to_1e6(problem))
        print(f"  μ={problem.mu:.3f} δ/μ={ratio:7.2f}: rounds extrapolated {entry['extrapolated']}, "
              f"β=0 {entry['beta0']}", file=sys.stderr)  # fmt: skip
        rows.append(entry)
    return {"rows": rows, "slope_extrapolated": _slope(rows, "extrapolated"), "slope_beta0": _slope(rows, "beta0")}


# ----------------------------------------------------------------------------------- part 3
B1_VARIANTS = [
    ("Gated DANE dense", {"compressor": "identity"}),
    (
        "Gated DANE RandK 1 + grad TopK 12",
        {"compressor": ("randk", {"k": 1}), "grad_compressor": "topk", "grad_compressor_options": {"k": 12}},
    ),
    (
        "Gated DANE RandK 4 + grad TopK 4",
        {"compressor": ("randk", {"k": 4}), "grad_compressor": "topk", "grad_compressor_options": {"k": 4}},
    ),
    (
        "Gated DANE RandK 2 + grad TopK 8",
        {"compressor": ("randk", {"k": 2}), "grad_compressor": "topk", "grad_compressor_options": {"k": 8}},
    ),
]


def b1_configs(data: Path) -> list[dict]:
    committed = json.loads((ROOT / "benchmarks" / "results" / "b1_quick.json").read_text())["results"]
    out = []
    for config in committed:
        problem = Ridge.from_libsvm(data / config["dataset"], workers=config["workers"], seed=0)
        print(f"{config['dataset']} ridge M={config['workers']}", file=sys.stderr)
        rows = [run(problem, label, "gated_dane", cc3_budget=30, tol=1e-9, **opts) for label, opts in B1_VARIANTS]
        baselines = [
            {"method": m["method"], "cc3_1e6": m["cc3_1e6"], "cc3_1e8": m["cc3_1e8"]} for m in config["methods"]
        ]
        out.append({"dataset": config["dataset"], "workers": config["workers"], "k": config["k"], "rows": rows,
                    "b1_committed": baselines})  # fmt: skip
    return out


def show(result: dict) -> None:
    console = Console(width=140)
    for part in result.get("shards", []):
        table = Table(title=f"a9a ridge M=10, {part['split']} shards (δ/μ = {part['delta'] / part['mu']:.1f})")
        for col in ("method", "rounds to 1e-6", "CC-3 to 1e-6", "rounds to 1e-8", "CC-3 to 1e-8", "floor"):
            table.add_column(col, justify="right")
        for r in part["rows"]:
            table.add_row(r["method"], f"{r['to_1e6']['cc1']}", f"{r['to_1e6']['cc3']:.1f}", f"{r['to_1e8']['cc1']}",
                          f"{r['to_1e8']['cc3']:.1f}", f"{r['floor']:.1e}")  # fmt: skip
        console.print(table)
    for key, title in (("sweep", "δ sweep"), ("sweep_fixed_mu", "δ sweep at fixed μ")):
        if key not in result:
            continue
        sweep = result[key]
        table = Table(title=f"{title} (synthetic ridge, H=100): rounds to 1e-6")
        for col in ("δ/μ", "extrapolated", "β = 0"):
            table.add_column(col, justify="right")
        for r in sweep["rows"]:
            table.add_row(f"{r['delta_over_mu']:.2f}", f"{r['extrapolated']:.0f}", f"{r['beta0']:.0f}")
        console.print(table)
        console.print(f"slope of log rounds vs log δ/μ: extrapolated {sweep['slope_extrapolated']:.2f}, "
                      f"β=0 {sweep['slope_beta0']:.2f}")  # fmt: skip
    if "overlap" in result:
        table = Table(
            title="a9a ridge M=10, label-sorted: rounds of 10, averaged corrections, with and without overlap (bf16)"
        )
        for col in ("outer step", "rounds to 1e-6", "rounds to 1e-8", "floor"):
            table.add_column(col, justify="right")
        for r in result["overlap"]:
            table.add_row(r["method"], f"{r['to_1e6']['cc1']}", f"{r['to_1e8']['cc1']}", f"{r['floor']:.1e}")
        console.print(table)
    for key, title in (
        ("overlap_noprox", "Overlap without a prox term: rounds of 10, averaged corrections"),
        ("overlap_prox", "A prox term from each rank's estimate (prox_rho): rounds of 10, averaged corrections"),
    ):
        if key in result:
            console.print(_cases_table(result[key], title))
    for config in result.get("b1", []):
        table = Table(title=f"B1 {config['dataset']} ridge M={config['workers']} K={config['k']}: CC-3 units")
        for col in ("method", "to 1e-6", "to 1e-8"):
            table.add_column(col, justify="right")
        for r in config["rows"]:
            table.add_row(r["method"], f"{r['to_1e6']['cc3']:.2f}", f"{r['to_1e8']['cc3']:.2f}")
        for r in config["b1_committed"]:
            table.add_row(f"(B1) {r['method']}", f"{r['cc3_1e6']:.2f}", f"{r['cc3_1e8']:.2f}")
        console.print(table)


def _cases_table(rows: list[dict], title: str) -> Table:
    """Parts 2d and 2e: one row per case and variant, rounds to 1e-6 and 1e-8, best and last values."""
    table = Table(title=title)
    for col in ("problem", "local step", "outer", "variant", "to 1e-6", "to 1e-8", "best", "last"):
        table.add_column(col, justify="right")
    for r in rows:
        table.add_row(r["problem"], f"{r['step']}/L", f"({r['outer_lr']}, {r['outer_momentum']})", r["method"],
                      f"{r['to_1e6']['cc1']}", f"{r['to_1e8']['cc1']}", f"{r['floor']:.0e}",
                      "diverged" if r["diverged"] else f"{r['last']:.0e}")  # fmt: skip
    return table


def experiment_parser(doc: str | None) -> argparse.ArgumentParser:
    """The command line of the experiments on part 2d's cases (``benchmarks/experiments/``)."""
    parser = argparse.ArgumentParser(description=(doc or "").splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--rounds", type=int, default=6000, help="local steps at most (B8 part 2d's cap)")
    return parser


def experiment_row(
    case: tuple[str, Ridge, float, float, float], history: sim.History, label: str, **fields: object
) -> dict:
    """One experiment row on a part 2d ``case``: the case, ``fields``, rounds to 1e-8 and the last value; printed."""
    name, _, step, lr, momentum = case
    row = {"problem": name, "step": step, "outer_lr": lr, "outer_momentum": momentum, **fields,
           "to_1e8": reached(history, 1e-8), "last": history.final["rel_subopt"]}  # fmt: skip
    print(f"{name}, {step}/L, ({lr}, {momentum}) {label}: to 1e-8 {row['to_1e8']['cc1']} rounds, "
          f"{row['to_1e8']['steps']} steps, last {row['last']:.1e}", file=sys.stderr)  # fmt: skip
    return row


def write_experiment(args: argparse.Namespace, rows: list[dict]) -> None:
    """An experiment's rows to ``args.out``, with the command that made them and its cap of local steps."""
    meta = {"command": " ".join(["python", *sys.argv]), "rounds_cap_steps": args.rounds}
    args.out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--b1", action="store_true", help="also part 3, the B1 ridge configurations")
    parser.add_argument(
        "--parts",
        nargs="+",
        default=["shards", "sweep"],
        choices=["shards", "sweep", "sweep_fixed_mu", "overlap", "overlap_noprox", "overlap_prox"],
    )
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    torch.set_num_threads(1)
    result: dict = {"meta": {"argv": sys.argv, "when": datetime.now(timezone.utc).isoformat()}}
    if "shards" in args.parts:
        result["shards"] = shards_that_differ(args.data)
    if "sweep" in args.parts:
        result["sweep"] = delta_sweep()
    if "sweep_fixed_mu" in args.parts:
        result["sweep_fixed_mu"] = delta_sweep_fixed_mu()
    if "overlap" in args.parts:
        result["overlap"] = overlap(args.data)
    if "overlap_noprox" in args.parts:
        result["overlap_noprox"] = overlap_noprox(args.data)
    if "overlap_prox" in args.parts:
        result["overlap_prox"] = overlap_prox(args.data)
    if args.b1:
        result["b1"] = b1_configs(args.data)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1, default=str))
    show(result)


if __name__ == "__main__":
    main()
