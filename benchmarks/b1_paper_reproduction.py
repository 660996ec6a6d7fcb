"""B1: the AAAI'25 paper's convex experiments in the simulator, every method side by side.

For each (problem, dataset, M, K) of the paper: OLGA (presets theory / similarity / auto, RandK K),
EF-OLGA (TopK K, presets similarity / theory), Accelerated ExtraGradient, AccSVRS (its constants are
not verified against the paper's algorithm box), ADIANA and LoCoDL (RandK K), DIANA (RandK K) and EF21
(TopK K), all with theory parameters and no tuning (ω = d/K as in the paper). Reports CC-3 units to
reach relative suboptimality 1e-6 and 1e-8 (inf if never within the budget), the ratio of OLGA's
best preset to the best baseline, uplink/downlink bytes, and one convergence plot per configuration.

    python benchmarks/b1_paper_reproduction.py --quick     # a9a ridge M=100 K=1, mushrooms ridge M=75 K=1
    python benchmarks/b1_paper_reproduction.py             # every configuration of the paper (long)
    python benchmarks/b1_paper_reproduction.py --libsvm path/to/w8a --problems ridge logistic --workers 50 --ks 1 10
    python benchmarks/b1_paper_reproduction.py --update benchmarks/results/b1_ridge.json --methods LoCoDL

The paper's datasets are read from ``../shared/datasets`` (override with ``--data``). ``--libsvm FILE ...`` runs
every method on any binary LibSVM files instead (labels ±1, 0/1 or 1/2; the features are the largest index
in each file), for each of ``--problems`` (default ridge), ``--workers`` M (default 20) and ``--ks`` K (default
1), and writes ``b1_libsvm_<file names>.json``. ``--update RESULTS_JSON --methods LABEL ...`` re-runs only those
methods in every configuration of a results file (its budget and seed) and rewrites it, e.g. after a method's
constants changed.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from rich.console import Console
from rich.table import Table

from lit_commeff import sim
from lit_commeff.problems import Logistic, Ridge

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "datasets"

# (problem, dataset): (workers, K values), as in ALGORITHMS.md "Reproduction setting".
PAPER = {
    ("ridge", "a9a"): ([20, 50, 100], [1, 12, 17, 30]),
    ("logistic", "a9a"): ([20, 50, 70], [1, 12, 17, 30]),
    ("ridge", "mushrooms"): ([25, 50, 75], [1, 10, 20]),
    ("logistic", "mushrooms"): ([25, 50, 75], [1, 10, 20]),
}
QUICK = [("ridge", "a9a", 100, 1), ("ridge", "mushrooms", 75, 1)]

OLGA_PRESETS = ("theory", "similarity", "auto")


def methods(k: int) -> list[tuple[str, str, dict]]:
    """(label, algorithm, options) for one K."""
    randk, topk = ("randk", {"k": k}), ("topk", {"k": k})
    out = [(f"OLGA {p}", "olga", {"compressor": randk, "preset": p}) for p in OLGA_PRESETS]
    out += [
        ("EF-OLGA similarity", "ef_olga", {"compressor": topk, "preset": "similarity"}),
        ("EF-OLGA theory", "ef_olga", {"compressor": topk, "preset": "theory"}),
        ("AccExtraGradient", "acc_extragradient", {}),
        ("AccSVRS", "accsvrs", {}),
        ("ADIANA", "adiana", {"compressor": randk}),
        ("LoCoDL", "locodl", {"compressor": randk}),
        ("DIANA", "diana", {"compressor": randk}),
        ("EF21", "ef21", {"compressor": topk}),
    ]
    return out


# The paper's baselines (theory parameters, no tuning).
PAPER_BASELINES = ("AccExtraGradient", "AccSVRS", "ADIANA", "LoCoDL")


def configurations(quick: bool) -> list[tuple[str, str, int, int]]:
    if quick:
        return QUICK
    return [(kind, data, m, k) for (kind, data), (ms, ks) in PAPER.items() for m in ms for k in ks]


def libsvm_configurations(files: list[Path], kinds: list[str], workers: list[int], ks: list[int]) -> list[tuple]:
    """(problem, file, M, K) for every LibSVM file given with ``--libsvm``."""
    return [(kind, str(path), m, k) for path in files for kind in kinds for m in workers for k in ks]


def build_problem(kind: str, dataset: str, workers: int, data_dir: Path):
    """The ridge or logistic problem on ``data_dir / dataset`` (an absolute ``dataset`` path is used as is)."""
    cls = Ridge if kind == "ridge" else Logistic
    return cls.from_libsvm(data_dir / dataset, workers=workers, seed=0)


def output_path(args: argparse.Namespace) -> Path:
    """``b1.json``, ``b1_quick.json``, or ``b1_libsvm_<file names>.json`` for ``--libsvm`` runs."""
    if args.libsvm:
        return args.out / ("b1_libsvm_" + "_".join(Path(f).name for f in args.libsvm) + ".json")
    return args.out / f"b1{'_quick' if args.quick else ''}.json"


def locodl_choices(problem, k: int) -> list[tuple[str, dict]]:
    """LoCoDL under each of its constants' choices (issue 20): the defaults, then one earlier choice at a time."""
    d, n = problem.dim, problem.num_workers
    l_max = problem.L + problem.delta  # our bound on the largest worker smoothness; L_s + μ_s = l_max
    kappa = (l_max - problem.mu / 2) / (problem.mu / 2)

    def half_balance(w: float) -> float:  # the earlier default p = √((1 + 2ω)(1 + ω/n)/κ)
        return min(1.0, math.sqrt((1 + 2 * w) * (1 + w / n) / kappa))

    old_w = d / k
    return [
        ("defaults (ω = d/K − 1, γ = 0.99 bound, hub compressed, balancing p)", {}),
        ("ω = d/K (OLGA paper's)", {"omega": old_w}),
        ("γ = 2/(L_s + μ_s) (the bound itself)", {"gamma": 2 / l_max}),
        ("hub message exact", {"hub_compressed": False}),
        ("p = earlier formula (≈ half the balance)", {"p": half_balance(d / k - 1)}),
        (
            "all earlier choices",
            {"omega": old_w, "gamma": 2 / l_max, "hub_compressed": False, "p": half_balance(old_w)},
        ),
    ]


def run_locodl_choices(problem, k: int, budget: float, seed: int) -> list[dict]:
    rows = []
    for label, options in locodl_choices(problem, k):
        start = time.perf_counter()
        randk = ("randk", {"k": k})
        h = sim.run(problem, "locodl", compressor=randk, cc3_budget=budget, tol=1e-9, seed=seed, **options)
        rows.append({
            "choice": label, "options": options, "cc3_1e6": h.cc3_to(1e-6), "cc3_1e8": h.cc3_to(1e-8),
            "final_rel_subopt": h.final["rel_subopt"], "hyperparameters": h.meta["hyperparameters"],
            "seconds": time.perf_counter() - start,
        })  # fmt: skip
        print(f"  LoCoDL {label:70s} CC-3 to 1e-6 {rows[-1]['cc3_1e6']:8.2f}  1e-8 {rows[-1]['cc3_1e8']:8.2f}",
              file=sys.stderr)  # fmt: skip
    return rows


def run_config(problem, k: int, budget: float, seed: int, only: list[str] | None = None) -> list[dict]:
    """Every method of :func:`methods` on one configuration (``only``: just these labels)."""
    rows = []
    for label, name, options in methods(k):
        if only is not None and label not in only:
            continue
        start = time.perf_counter()
        h = sim.run(problem, name, cc3_budget=budget, tol=1e-9, seed=seed, **options)
        rows.append(
            {
                "method": label,
                "cc3_1e6": h.cc3_to(1e-6),
                "cc3_1e8": h.cc3_to(1e-8),
                "uplink_bytes_1e6": h.uplink_bytes_to(1e-6),
                "uplink_bytes": h.final["uplink_bytes"],
                "downlink_bytes": h.final["downlink_bytes"],
                "final_rel": h.final["rel_subopt"],
                "rounds": h.final["round"],
                "seconds": time.perf_counter() - start,
                "hyperparameters": h.meta["hyperparameters"],
                "curve": [(r["cc3"], r["rel_subopt"]) for r in h.rows[:: max(1, len(h.rows) // 400)]],
            }
        )
        print(
            f"    {label:>20}: CC-3 to 1e-6 {rows[-1]['cc3_1e6']:8.1f}  1e-8 {rows[-1]['cc3_1e8']:8.1f}"
            f"  ({rows[-1]['seconds']:.1f}s)",
            file=sys.stderr,
        )
    return rows


def ratio(rows: list[dict], key: str, baselines: tuple[str, ...] = PAPER_BASELINES) -> float:
    """OLGA's best preset over the best of ``baselines`` (nan when neither reached the target)."""
    best_olga = min(r[key] for r in rows if r["method"].startswith("OLGA"))
    best_base = min(r[key] for r in rows if r["method"] in baselines)
    if math.isinf(best_olga) and math.isinf(best_base):
        return math.nan
    return best_olga / best_base


def ratio_ef(rows: list[dict]) -> float:
    """EF-OLGA's best preset over EF21 at 1e-6 (the biased-compression comparison)."""
    ef = min(r["cc3_1e6"] for r in rows if r["method"].startswith("EF-OLGA"))
    base = next(r["cc3_1e6"] for r in rows if r["method"] == "EF21")
    return math.nan if math.isinf(ef) and math.isinf(base) else ef / base


def plot(config: tuple, rows: list[dict], path: Path) -> None:
    fig, ax = plt.subplots(figsize=(7.2, 4.6))
    colors = plt.cm.tab20.colors
    for i, r in enumerate(rows):
        xs, ys = zip(*[(c, max(v, 1e-16)) for c, v in r["curve"]], strict=True)
        # ours solid, their compressed-only references dashed, the paper's baselines dotted
        style = "-" if "OLGA" in r["method"] else "--" if r["method"] in ("DIANA", "EF21") else ":"
        ax.semilogy(xs, ys, style, label=r["method"], lw=1.6, color=colors[(2 * i) % 20 + (i >= 10)])
    kind, data, m, k = config
    ax.set(
        xlabel="CC-3 units (dense d-vector uplinks, busiest worker)",
        ylabel="(f(y) − f*) / (f(y₀) − f*)",
        title=f"{kind} {data}, M={m}, RandK/TopK K={k}",
        ylim=(1e-10, 2),
    )
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--quick", action="store_true", help="the two target configurations only")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder with a9a and mushrooms")
    parser.add_argument(
        "--libsvm",
        type=Path,
        nargs="+",
        metavar="FILE",
        help="any binary LibSVM files instead of the paper's a9a/mushrooms grid (with --problems, --workers, --ks); "
        "writes b1_libsvm_<file names>.json",
    )
    parser.add_argument(
        "--problems", nargs="+", choices=("ridge", "logistic"), default=["ridge"], help="with --libsvm (default ridge)"
    )
    parser.add_argument(
        "--workers", nargs="+", type=int, help="with --libsvm: worker counts M (20); with --update: only these M"
    )
    parser.add_argument("--budget", type=float, default=None, help="CC-3 budget per run (default 300; quick 150)")
    parser.add_argument("--only", nargs="*", help="only these problem/dataset pairs, e.g. ridge/a9a")
    parser.add_argument("--ks", nargs="*", type=int, help="only these K values (with --libsvm: the K values; 1)")
    parser.add_argument(
        "--seed", type=int, default=0, help="seed of epoch lengths, sampled clients and compressor draws (0)"
    )
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results", help="folder of the JSON")
    parser.add_argument("--plots", type=Path, default=ROOT / "docs" / "benchmarks" / "b1", help="folder of the plots")
    parser.add_argument("--markdown", type=Path, help="also write the table as Markdown to this file")
    parser.add_argument("--replot", type=Path, help="redraw plots and tables from a results JSON; run nothing")
    parser.add_argument(
        "--update",
        type=Path,
        metavar="RESULTS_JSON",
        help="re-run only the --methods rows of every configuration in this B1 results file, with its budget and "
        "seed, and write the file back (ratios recomputed, plots redrawn, meta.updates records the command)",
    )
    parser.add_argument(
        "--methods",
        nargs="+",
        metavar="LABEL",
        help="with --update: the method labels to re-run, e.g. LoCoDL or 'OLGA auto'",
    )
    parser.add_argument(
        "--locodl-choices",
        action="store_true",
        help="run only LoCoDL, under each choice of its constants (defaults, then one earlier choice at a time); "
        "writes b1_locodl_choices[_quick].json",
    )
    args = parser.parse_args(argv)
    if args.replot:
        saved = json.loads(args.replot.read_text())
        args.out.mkdir(parents=True, exist_ok=True)
        args.quick = saved["meta"]["quick"]
        args.libsvm = saved["meta"].get("libsvm")
        for res in saved["results"]:
            config = (res["problem"], res["dataset"], res["workers"], res["k"])
            plot(config, res["methods"], ROOT / res["plot"])
        write_outputs(args, saved["results"], saved["meta"]["budget"], final=True)
        return 0
    if args.update or args.methods:
        labels = [label for label, _, _ in methods(1)]
        if not (args.update and args.methods):
            parser.error(
                "--update/--methods: give both, e.g. --update benchmarks/results/b1_ridge.json --methods LoCoDL."
            )
        unknown = sorted(set(args.methods) - set(labels))
        if unknown:
            parser.error(f"--methods: unknown label(s) {unknown}; the labels are {labels}.")
        if not args.update.is_file():
            parser.error(f"--update: {args.update} not found; give a results JSON written by this script.")
        return update_results(args)
    if args.libsvm:
        if args.quick or args.only:
            parser.error("--quick/--only: not with --libsvm; choose the runs with --problems, --workers and --ks.")
        for path in args.libsvm:
            if not path.is_file():
                parser.error(f"--libsvm: {path} not found; give the path of a LibSVM file.")
        if args.ks is not None and (not args.ks or min(args.ks) < 1):
            parser.error(f"--ks: {args.ks} must list K values >= 1.")
    else:
        for name in ("a9a", "mushrooms"):
            if not (args.data / name).is_file():
                parser.error(
                    f"--data: {args.data / name} not found; point --data at the folder holding a9a and mushrooms, "
                    "or run on other files with --libsvm FILE."
                )
    budget = args.budget or (150.0 if args.quick else 300.0)
    args.out.mkdir(parents=True, exist_ok=True)
    args.plots.mkdir(parents=True, exist_ok=True)
    results: list[dict] = []
    problems: dict = {}
    if args.libsvm:
        configs = libsvm_configurations(
            [p.resolve() for p in args.libsvm], args.problems, args.workers or [20], args.ks or [1]
        )
    else:
        configs = configurations(args.quick)
    for config in configs:
        kind, data, m, k = config
        if not args.libsvm and ((args.only and f"{kind}/{data}" not in args.only) or (args.ks and k not in args.ks)):
            continue
        key = (kind, data, m)
        if key not in problems:
            problems = {key: build_problem(kind, data, m, args.data)}  # keep one problem in memory
        problem = problems[key]
        print(f"{kind} {data} M={m} K={k}: d={problem.dim} L={problem.L:.4g} mu={problem.mu:.4g} "
              f"delta={problem.delta:.4g}", file=sys.stderr)  # fmt: skip
        name = Path(data).name
        if args.locodl_choices:
            results.append({"problem": kind, "dataset": name, "workers": m, "k": k, "dim": problem.dim,
                            "methods": run_locodl_choices(problem, k, budget, args.seed)})  # fmt: skip
            continue
        rows = run_config(problem, k, budget, args.seed)
        png = args.plots / f"{kind}_{name}_M{m}_K{k}.png"
        plot((kind, name, m, k), rows, png)
        results.append({
            "problem": kind, "dataset": name, "workers": m, "k": k, "dim": problem.dim, "L": problem.L,
            "mu": problem.mu, "delta": problem.delta, "lam": problem.lam,
            **_result_fields(rows),
            "plot": str(png.relative_to(ROOT)) if png.is_relative_to(ROOT) else str(png), "methods": rows,
        })  # fmt: skip
        write_outputs(args, results, budget)
    if args.locodl_choices:
        write_locodl_choices(args, results, budget)
        return 0
    write_outputs(args, results, budget, final=True)
    return 0


def _result_fields(rows: list[dict]) -> dict:
    """The per-configuration ratios computed from its method rows."""
    return {
        "ratio_1e6": ratio(rows, "cc3_1e6"), "ratio_1e8": ratio(rows, "cc3_1e8"),
        "ratio_vs_diana_1e6": ratio(rows, "cc3_1e6", ("DIANA",)), "ratio_efolga_vs_ef21_1e6": ratio_ef(rows),
    }  # fmt: skip


def update_results(args: argparse.Namespace) -> int:
    """``--update FILE --methods ...``: re-run some methods' rows in a results file, in place.

    Each configuration of the file is rebuilt (the paper's data from ``--data``; a ``--libsvm`` file from the
    path in ``meta.libsvm``) and only the named methods run, with the file's budget and seed. Their rows are
    replaced, the ratios recomputed and the plot redrawn; the file is rewritten after every configuration.
    """
    path = args.update
    saved = json.loads(path.read_text())
    meta = saved["meta"]
    budget, seed = float(meta["budget"]), int(meta.get("seed", 0))
    files = {Path(f).name: Path(f) for f in meta.get("libsvm") or []}
    update = {
        "methods": args.methods,
        "command": "python benchmarks/b1_paper_reproduction.py " + " ".join(sys.argv[1:]),
        "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "configurations_done": 0,
    }
    meta.setdefault("updates", []).append(update)
    problems: dict = {}
    for res in saved["results"]:
        kind, name, m, k = res["problem"], res["dataset"], res["workers"], res["k"]
        if (args.only and f"{kind}/{name}" not in args.only) or (args.ks and k not in args.ks):
            continue
        if args.workers and m not in args.workers:
            continue
        dataset = str(files[name]) if name in files else name
        key = (kind, dataset, m)
        if key not in problems:
            problems = {key: build_problem(kind, dataset, m, args.data)}
        problem = problems[key]
        print(f"{kind} {name} M={m} K={k}: re-running {', '.join(args.methods)}", file=sys.stderr)
        fresh = {r["method"]: r for r in run_config(problem, k, budget, seed, only=args.methods)}
        res["methods"] = [fresh.get(r["method"], r) for r in res["methods"]]
        res.update(_result_fields(res["methods"]))
        png = args.plots / f"{kind}_{name}_M{m}_K{k}.png"
        args.plots.mkdir(parents=True, exist_ok=True)
        plot((kind, name, m, k), res["methods"], png)
        res["plot"] = str(png.relative_to(ROOT)) if png.is_relative_to(ROOT) else str(png)
        update["configurations_done"] += 1
        update["finished"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
        path.write_text(json.dumps(saved, indent=1, default=str))
    print(f"wrote {path} ({update['configurations_done']} configurations updated)", file=sys.stderr)
    return 0


def write_locodl_choices(args: argparse.Namespace, results: list[dict], budget: float) -> None:
    """``b1_locodl_choices[_quick].json`` and a Markdown table: CC-3 to 1e-6 / 1e-8 per choice and config."""
    path = args.out / f"b1_locodl_choices{'_quick' if args.quick else ''}.json"
    command = "python benchmarks/b1_paper_reproduction.py " + " ".join(sys.argv[1:])
    meta = {"benchmark": "B1 LoCoDL choices", "command": command, "budget": budget, "seed": args.seed,
            "when": datetime.now(timezone.utc).isoformat(timespec="seconds")}  # fmt: skip
    path.write_text(json.dumps({"meta": meta, "results": results}, indent=1, default=str))
    configs = [f"{r['problem']} {r['dataset']} M={r['workers']} K={r['k']}" for r in results]
    lines = ["| choice | " + " | ".join(configs) + " |", "|---|" + "---|" * len(configs)]
    for i, (label, _) in enumerate(locodl_choices_labels(results)):
        cells = [f"{r['methods'][i]['cc3_1e6']:.1f} / {r['methods'][i]['cc3_1e8']:.1f}" for r in results]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    print("\n".join(lines))
    print(f"wrote {path}", file=sys.stderr)


def locodl_choices_labels(results: list[dict]) -> list[tuple[str, dict]]:
    return [(row["choice"], row["options"]) for row in results[0]["methods"]] if results else []


RATIOS = (
    ("OLGA / best paper baseline", "ratio_1e6"),
    ("OLGA / DIANA", "ratio_vs_diana_1e6"),
    ("EF-OLGA / EF21", "ratio_efolga_vs_ef21_1e6"),
)


def _fmt_ratio(value: float) -> str:
    if value == 0:
        return "0 (baseline never)"
    if math.isinf(value):
        return "inf (ours never)"
    return "n/a" if math.isnan(value) else f"{value:.2f}"


def write_outputs(args: argparse.Namespace, results: list[dict], budget: float, final: bool = False) -> None:
    """Write JSON (and Markdown) after every configuration, so a long run keeps what it finished."""
    labels = [label for label, _, _ in methods(1)]
    table = Table(title=f"B1: CC-3 units to relative suboptimality 1e-6 / 1e-8 (budget {budget:g})")
    table.add_column("config")
    for label in labels:
        table.add_column(label, justify="right")
    for title, _ in RATIOS:
        table.add_column(title + " (1e-6)", justify="right")
    md = [
        "| config | " + " | ".join(labels) + " | " + " | ".join(t for t, _ in RATIOS) + " |",
        "|---|" + "---:|" * (len(labels) + len(RATIOS)),
    ]
    for res in results:
        cells = []
        for label in labels:
            r = next(x for x in res["methods"] if x["method"] == label)
            cells.append(f"{r['cc3_1e6']:.1f} / {r['cc3_1e8']:.1f}")
        name = f"{res['problem']} {res['dataset']} M={res['workers']} K={res['k']}"
        ratios = [_fmt_ratio(res[key]) for _, key in RATIOS]
        table.add_row(name, *cells, *ratios)
        md.append(f"| {name} | " + " | ".join(cells + ratios) + " |")
    meta = {
        "benchmark": "B1", "quick": args.quick, "budget": budget, "seed": args.seed, "complete": final,
        "when": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }  # fmt: skip
    if args.libsvm:
        meta["libsvm"] = [str(p) for p in args.libsvm]
    path = output_path(args)
    path.write_text(json.dumps({"meta": meta, "results": results}, indent=1, default=str))
    if args.markdown:
        args.markdown.write_text("\n".join(md) + "\n")
    if final:
        Console(width=300).print(table)
        print(f"wrote {path}" + (f" and {args.markdown}" if args.markdown else ""))


if __name__ == "__main__":
    raise SystemExit(main())
