"""B3: wall-clock time to accuracy on shaped links — every rank in its own network namespace (needs root).

Each run is the real ``lit-commeff`` job, started the way torchrun would start it, once per rank inside a
:class:`lit_commeff.netlab.NetLab` namespace. gloo goes over the lab's links. The profile shapes every
worker's link (rank >= 1); the hub (rank 0) has a link of its own, 1 Gbit/s each way by default
(``--hub-profile``; ``../shared/docs/BENCHMARKS.md``, B3).
Rank 0 records, at every validation, the seconds since training started, the metric and the bytes per
worker so far (``history.jsonl``). From that record this script reports, per recipe × profile × method,
over the repeats:
- the median and spread of the time to reach the target;
- the bytes to the target;
- the final metric;
- ratios against DDP and against the best baseline (powersgd, diloco).

The target comes from DDP's plateau (``--target plateau``, default): per DDP run, the best moving average of
three consecutive validations; the median over DDP's runs of the same recipe and partition (the metric
history does not depend on the link, so DDP's runs on any profile count), minus ``--auroc-tolerance`` for
AUROC and times ``--mae-factor`` for MAE. ``--target final`` takes DDP's median final metric instead (the
protocol before session 10). Whether DDP had plateaued is reported (``ddp_plateau``: the best moving
average was reached before the last quarter of its validations, within the tolerance).

``--partition`` sets ``recipe.data.partition`` (``iid`` or ``by_group``) and labels the rows; runs of
several partitions can be merged and are analysed apart.

``--derive-from-lan ddp powersgd``: the metric history of a run does not depend on the link, so on a slow
profile those methods run only ``--timing-steps`` steps (to measure their step time there); their time to
target on that profile is the step at which their ``lan`` run of the same seed reached the target times
that step time. Their rows say ``(lan steps × <profile> step time)``. The ``lan`` runs must be in the
same analysis (run them, or ``--merge`` their JSON).

    sudo python benchmarks/b3_time_to_accuracy.py --recipes finance_credit --profiles edge lan --repeats 1
    sudo python benchmarks/b3_time_to_accuracy.py --methods ddp olga --set olga:strategy.inner_steps=2
    sudo python benchmarks/b3_time_to_accuracy.py --methods ddp ef_olga \
        --variant "ef_olga+h2=ef_olga strategy.local_steps=2 strategy.theta=2"   # a variant as its own row

Every rank's namespace runs TCP with ``--congestion-control`` (default ``cubic``, Linux's default; ``host``
inherits the host's). It matters for messages of tens of KB after an idle gap: on ``wan`` a 56 KB exchange
took 72 ms under ``bbr`` and 51 ms under ``cubic`` (session 26). Runs before session 26 inherited this
machine's ``bbr``; each row records the algorithm its lab ran (``congestion_control``).

The time to target is training time: wall-clock since training started minus the validation passes
(``train_seconds`` in ``history.jsonl``), because how often a run validates is the benchmark's choice,
not the method's; the wall time with validation is reported beside it. An overlapped exchange runs on through a
validation pass: since session 28 ``train_seconds`` adds back what a pass hid of it (``pause_hidden_seconds``).
Both include the hub's compute.
On a 2-core machine 4 ranks share the cores, so the ``lan`` column is compute-bound.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "datasets"
DATA = {
    "finance_credit": ["recipe=finance_credit", f"recipe.data.path={SHARED / 'UCI_Credit_Card.csv'}"],
    "telecom_throughput": ["recipe=telecom_throughput", f"recipe.data.path={SHARED / '5G-production-dataset.zip'}"],
    "telecom_churn": ["recipe=telecom_churn", f"recipe.data.path={SHARED / 'Telco-Customer-Churn.csv'}"],
}
METHODS = ("ddp", "powersgd", "diloco", "compressed", "olga", "ef_olga", "gated_dane")
BASELINES = ("powersgd", "diloco")  # and their variants (diloco+h10, ...)
MODES = {"finance_credit": "max", "telecom_churn": "max", "telecom_throughput": "min"}


def parse_sets(items: list[str]) -> dict[str, list[str]]:
    """``METHOD:override`` pairs → per-method extra Hydra overrides."""
    out: dict[str, list[str]] = {}
    for item in items:
        method, sep, override = item.partition(":")
        if not sep or method not in METHODS or "=" not in override:
            raise SystemExit(f"--set: {item!r} is invalid; use METHOD:key=value with METHOD one of {METHODS}.")
        out.setdefault(method, []).append(override)
    return out


def parse_variants(items: list[str]) -> dict[str, tuple[str, list[str]]]:
    """``LABEL=METHOD key=value ...`` → ``{label: (method, overrides)}``: a method with options, as its own row."""
    out: dict[str, tuple[str, list[str]]] = {}
    for item in items:
        label, sep, spec = item.partition("=")
        method, *overrides = spec.split()
        if not sep or not label or label in METHODS or method not in METHODS or any("=" not in o for o in overrides):
            raise SystemExit(
                f"--variant: {item!r} is invalid; use 'LABEL=METHOD key=value ...' with a new LABEL and METHOD one of "
                f"{METHODS}, e.g. 'ef_olga+h2=ef_olga strategy.local_steps=2'."
            )
        out[label] = (method, overrides)
    return out


def run_one(
    *,
    recipe: str,
    profile: Any,
    method: str,
    seed: int,
    ranks: int,
    extra: list[str],
    out: Path,
    port: int,
    strategy: str | None = None,
    hub_profile: Any = None,
    partition: str | None = None,
    congestion_control: str | None = None,
) -> dict[str, Any]:
    """One ``lit-commeff`` job through the lab; returns its validation history and how it ended.

    ``method`` labels the run; ``strategy`` (default: ``method``) is the strategy config it runs.
    """
    from lit_commeff.netlab import NetLab

    part = f"-{partition}" if partition else ""
    run_dir = out / f"{recipe}{part}-{profile.name}-{method}-s{seed}"
    run_dir.mkdir(parents=True, exist_ok=True)
    for stale in ("history.jsonl", "ledger_summary.json"):
        (run_dir / stale).unlink(missing_ok=True)
    overrides = [
        *DATA[recipe],
        f"strategy={strategy or method}",
        f"seed={seed}",
        f"trainer.devices={ranks}",
        "trainer.enable_progress_bar=false",
        f"logger.tracking_uri=sqlite:///{out / 'mlflow.db'}",
        "logger.experiment=b3",
        f"logger.run_name={run_dir.name}",
        f"checkpoint_dir={run_dir / 'checkpoints'}",
        f"hydra.run.dir={run_dir}",
        *extra,
    ]
    argv = [sys.executable, "-m", "lit_commeff.cli.main", *overrides]
    env = {"PYTHONWARNINGS": "ignore"}
    start = time.monotonic()
    with NetLab(ranks, profile, hub_profile=hub_profile, congestion_control=congestion_control) as lab:
        in_use = lab.congestion_control_in_use
        procs = []
        for rank in range(ranks):
            log = open(run_dir / f"b3_rank{rank}.log", "w")  # noqa: SIM115  (closed below)
            procs.append((lab.popen(rank, argv, env={**lab.dist_env(rank, port), **env}, stdout=log, stderr=log), log))
        codes = []
        for proc, log in procs:
            codes.append(proc.wait())
            log.close()
    history = (
        [json.loads(line) for line in (run_dir / "history.jsonl").read_text().splitlines() if line.strip()]
        if (run_dir / "history.jsonl").exists()
        else []
    )
    return {
        "recipe": recipe,
        "partition": partition,
        "profile": profile.name,
        "hub_profile": None if hub_profile is None else hub_profile.name,
        "congestion_control": in_use,
        "method": method,
        "seed": seed,
        "overrides": overrides,
        "codes": codes,
        "wall_s": time.monotonic() - start,
        "history": history,
        "run_dir": str(run_dir),
    }


def reach(history: list[dict[str, Any]], target: float, mode: str) -> dict[str, Any] | None:
    """The first validation record at or beyond ``target``."""
    for record in history:
        value = record.get("value")
        if value is not None and (value >= target if mode == "max" else value <= target):
            return record
    return None


def spread(values: list[float]) -> str:
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return "never"
    text = f"{statistics.median(finite):.1f}"
    if len(finite) > 1:
        text += f" ({min(finite):.1f}–{max(finite):.1f})"
    if len(finite) < len(values):
        text += f" ({len(values) - len(finite)} never)"
    return text


def moving_best(history: list[dict[str, Any]], mode: str, window: int = 3) -> tuple[float, int]:
    """The best moving average of ``window`` consecutive validations, and the index where its window ends."""
    values = [r["value"] for r in history if r.get("value") is not None]
    if len(values) < window:
        return (max(values) if mode == "max" else min(values)) if values else math.nan, len(values) - 1
    means = [statistics.fmean(values[i - window + 1 : i + 1]) for i in range(window - 1, len(values))]
    best = max(range(len(means)), key=lambda i: means[i] if mode == "max" else -means[i])
    return means[best], best + window - 1


def group_key(result: dict[str, Any]) -> str:
    """``recipe`` or ``recipe[partition]``: the unit that shares one target."""
    part = result.get("partition")
    return f"{result['recipe']}[{part}]" if part else result["recipe"]


def targets(results: list[dict[str, Any]], args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """Per recipe (and partition): the target and how it was set, from DDP's full runs on any profile."""
    out: dict[str, dict[str, Any]] = {}
    for key in dict.fromkeys(group_key(r) for r in results):
        recipe = key.split("[")[0]
        mode = MODES[recipe]
        ddp = [r for r in results if group_key(r) == key and r["method"] == "ddp" and not r.get("timing_only")]
        ddp = [r for r in ddp if r["history"]]
        if not ddp:
            continue
        # callers without `target` (render_tables: the tables of earlier sessions) keep the earlier protocol
        if getattr(args, "target", "final") == "final":
            refs = [r["history"][-1]["value"] for r in ddp]
            plateaued = None
        else:
            bests = [moving_best(r["history"], mode) for r in ddp]
            refs = [b[0] for b in bests]
            plateaued = []
            for r, (best, _end) in zip(ddp, bests, strict=True):
                tol = args.auroc_tolerance if mode == "max" else abs(best) * (args.mae_factor - 1)
                n = len(r["history"])
                early, _ = moving_best(r["history"][: max(3, (3 * n) // 4)], mode)
                plateaued.append(abs(best - early) <= tol)
        reference = statistics.median(refs)
        target = reference - args.auroc_tolerance if mode == "max" else reference * args.mae_factor
        out[key] = {
            "mode": mode,
            "reference": reference,
            "target": target,
            "how": f"DDP {getattr(args, 'target', 'final')}: median of {len(refs)} runs",
            "ddp_plateau": plateaued,
            "ddp_validations": [len(r["history"]) for r in ddp],
        }
    return out


def _step_time(run: dict[str, Any]) -> float:
    last = run["history"][-1]
    return last.get("train_seconds", last["seconds"]) / last["step"]


def analyse(results: list[dict[str, Any]], args: argparse.Namespace) -> list[dict[str, Any]]:
    """Targets, times and bytes to target, ratios: one row per recipe (× partition) × profile × method."""
    rows = []
    goals = targets(results, args)
    for key, goal in goals.items():
        mode, target = goal["mode"], goal["target"]
        for profile in args.profiles:
            group = [r for r in results if group_key(r) == key and r["profile"] == profile and r["history"]]
            per_method: dict[str, dict[str, Any]] = {}
            for method in args.methods:
                runs = [r for r in group if r["method"] == method]
                if not runs:
                    continue
                derived = all(r.get("timing_only") for r in runs)
                if derived:  # lan steps × this profile's step time
                    lan = {
                        r["seed"]: r
                        for r in results
                        if group_key(r) == key and r["profile"] == "lan" and r["method"] == method and r["history"]
                    }
                    hits, times, walls, ups = [], [], [], []
                    for r in runs:
                        hit = reach(lan[r["seed"]]["history"], target, mode) if r["seed"] in lan else None
                        hits.append(hit)
                        times.append(hit["step"] * _step_time(r) if hit else math.inf)
                        walls.append(math.nan)
                        ups.append(hit["uplink_bytes"] if hit else math.inf)
                    full = [lan[r["seed"]] for r in runs if r["seed"] in lan]
                else:
                    hits = [reach(r["history"], target, mode) for r in runs]
                    times = [h.get("train_seconds", h["seconds"]) if h else math.inf for h in hits]
                    walls = [h["seconds"] if h else math.inf for h in hits]
                    ups = [h["uplink_bytes"] if h else math.inf for h in hits]
                    full = runs
                if not full:
                    continue
                per_method[method] = {
                    "derived": derived,
                    "times": times,
                    "walls": walls,
                    "uplink_to_target": ups,
                    "total_to_target": [h.get("wire_total_bytes", math.nan) if h else math.inf for h in hits],
                    "steps_to_target": [h["step"] if h else math.inf for h in hits],
                    "step_time": [_step_time(r) for r in runs],
                    "final": [r["history"][-1]["value"] for r in full],
                    "best": [moving_best(r["history"], mode)[0] for r in full],
                    "final_uplink": [r["history"][-1]["uplink_bytes"] for r in full],
                    "final_downlink": [r["history"][-1]["downlink_bytes"] for r in full],
                    "wall_s": [r["history"][-1]["seconds"] for r in runs],
                    "train_s": [r["history"][-1].get("train_seconds", math.nan) for r in runs],
                    "validations": [len(r["history"]) for r in runs],
                }
            ddp_t = _median(per_method.get("ddp", {}).get("times", [math.inf]))
            ddp_w = _median(per_method.get("ddp", {}).get("walls", [math.inf]))
            # a baseline's tuned variants (diloco+h10, ...) are baselines too: the users' alternative is the tuned one
            base = [(m, _median(s["times"])) for m, s in per_method.items() if m.split("+")[0] in BASELINES]
            best_base, base_t = min(base, key=lambda mt: mt[1], default=("", math.inf))
            for method, stats in per_method.items():
                t = _median(stats["times"])
                rows.append(
                    {
                        "recipe": key,
                        "profile": profile,
                        "method": method + (f" (lan steps × {profile} step time)" if stats["derived"] else ""),
                        "target": target,
                        "target_how": goal["how"],
                        "ddp_plateau": goal["ddp_plateau"],
                        "time_to_target": spread(stats["times"]),
                        "times": stats["times"],
                        "reached": sum(math.isfinite(x) for x in stats["times"]),
                        "median_time": t,
                        "speedup_vs_ddp": _ratio(ddp_t, t),
                        "best_baseline": best_base,
                        "speedup_vs_best_baseline": _ratio(base_t, t),
                        "wall_to_target": spread(stats["walls"]),
                        "wall_speedup_vs_ddp": _ratio(ddp_w, _median(stats["walls"])),
                        "steps_to_target": _median(stats["steps_to_target"]),
                        "step_time_s": statistics.median(stats["step_time"]),
                        "uplink_MB_to_target": _median(stats["uplink_to_target"]) / 1e6,
                        "wire_total_MB_to_target": _median(stats["total_to_target"]) / 1e6,
                        "final": statistics.median(stats["final"]),
                        "best_ma3": statistics.median(stats["best"]),
                        "final_uplink_MB": statistics.median(stats["final_uplink"]) / 1e6,
                        "final_downlink_MB": statistics.median(stats["final_downlink"]) / 1e6,
                        "wall_s": statistics.median(stats["wall_s"]),
                        "train_s": statistics.median(stats["train_s"]),
                        "validations": min(stats["validations"]),
                        "repeats": len(stats["times"]),
                    }
                )
    return rows


def _ratio(reference: float, value: float) -> float:
    return reference / value if math.isfinite(reference) and math.isfinite(value) else math.nan


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else math.inf


def print_table(rows: list[dict[str, Any]]) -> None:
    console = Console(width=200)
    for recipe, profile in dict.fromkeys((r["recipe"], r["profile"]) for r in rows):
        sub = [r for r in rows if r["recipe"] == recipe and r["profile"] == profile]
        plateau = sub[0].get("ddp_plateau")
        title = (
            f"B3 {recipe} on '{profile}': target {sub[0]['target']:.4f} ({sub[0].get('target_how', 'DDP final')}"
            + (f"; DDP plateaued: {plateau}" if plateau is not None else "")
            + ")"
        )
        table = Table(title=title)
        for column in ("method", "reached", "train s to target (median, min–max)", "× vs DDP", "× vs best baseline",
                       "wall s to target (with validation)", "× vs DDP (wall)", "steps to target", "s/step",
                       "up MB to target", "up+down MB to target", "final", "best MA3", "vals", "train s",
                       "wall s"):  # fmt: skip
            table.add_column(column, justify="left" if column == "method" else "right")
        for r in sub:
            table.add_row(
                r["method"], f"{r.get('reached', '?')}/{r['repeats']}", r["time_to_target"],
                f"{r['speedup_vs_ddp']:.2f}", f"{r['speedup_vs_best_baseline']:.2f}",
                r.get("wall_to_target", ""), f"{r.get('wall_speedup_vs_ddp', math.nan):.2f}",
                f"{r.get('steps_to_target', math.nan):g}", f"{r.get('step_time_s', math.nan):.3f}",
                f"{r['uplink_MB_to_target']:.3f}", f"{r.get('wire_total_MB_to_target', math.nan):.3f}",
                f"{r['final']:.4f}", f"{r.get('best_ma3', math.nan):.4f}", f"{r.get('validations', '')}",
                f"{r['train_s']:.1f}", f"{r.get('wall_s', math.nan):.1f}",
            )  # fmt: skip
        console.print(table)


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    recipes = list(dict.fromkeys(r["recipe"] for r in rows))
    fig, axes = plt.subplots(1, len(recipes), figsize=(7 * len(recipes), 4.5), squeeze=False)
    for ax, recipe in zip(axes[0], recipes, strict=True):
        sub = [r for r in rows if r["recipe"] == recipe]
        profiles = list(dict.fromkeys(r["profile"] for r in sub))
        methods = list(dict.fromkeys(r["method"] for r in sub))
        width = 0.8 / max(1, len(methods))
        finite = [r["median_time"] for r in sub if math.isfinite(r["median_time"]) and r["median_time"] > 0]
        floor = min(finite) / 2 if finite else 0.1
        for i, method in enumerate(methods):
            found = [next((r for r in sub if r["profile"] == p and r["method"] == method), None) for p in profiles]
            ys = [r["median_time"] if r else math.nan for r in found]
            xs = [j + i * width for j in range(len(profiles))]
            # the same colour for a method in every panel; variants after the built-in methods
            variants = [m for m in methods if m not in METHODS]
            color = f"C{METHODS.index(method) if method in METHODS else len(METHODS) + variants.index(method)}"
            ax.bar(xs, [y if math.isfinite(y) else 0 for y in ys], width, label=method, color=color)
            for x, y, r in zip(xs, ys, found, strict=True):
                if r is None:
                    continue
                if not math.isfinite(y):
                    ax.text(x, floor, "never", rotation=90, ha="center", va="bottom", fontsize=7)
                elif math.isfinite(r["speedup_vs_ddp"]):
                    ax.text(x, y, f"{r['speedup_vs_ddp']:.1f}×", rotation=90, ha="center", va="bottom", fontsize=6)
        labels = []
        for p in profiles:
            target = next(r["target"] for r in sub if r["profile"] == p)
            labels.append(f"{p}\n(target {target:.4g})")
        ax.set_xticks([j + 0.4 - width / 2 for j in range(len(profiles))], labels)
        if finite and max(finite) / min(finite) > 20:  # edge and lan differ by 10-50x: a log axis shows both
            ax.set_yscale("log")
            ax.set_ylim(bottom=floor)
        ax.set_ylabel("training seconds to target (median)")
        ax.set_title(f"{recipe} (label: × faster than DDP)")
        ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipes", nargs="+", default=["finance_credit", "telecom_throughput"], choices=list(DATA))
    parser.add_argument("--profiles", nargs="+", default=["edge", "wan", "lan"], help="built-in names or custom specs")
    parser.add_argument("--methods", nargs="*", default=list(METHODS), choices=list(METHODS), help="none: variants")
    parser.add_argument("--repeats", type=int, default=3, help="seeds 0..N-1")
    parser.add_argument("--seeds", type=int, nargs="+", default=None, help="these seeds instead of 0..repeats-1")
    parser.add_argument(
        "--merge", type=Path, nargs="+", default=[], metavar="RESULTS_JSON",
        help="with --reuse: analyse these b3_results.json files together (e.g. runs of other seeds)",
    )  # fmt: skip
    parser.add_argument("--ranks", type=int, default=4)
    parser.add_argument("--set", nargs="*", default=[], metavar="METHOD:KEY=VALUE", help="extra Hydra overrides")
    parser.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="'LABEL=METHOD KEY=VALUE ...'",
        help="also run METHOD with these overrides, reported as its own row LABEL (repeatable)",
    )
    parser.add_argument("--common", nargs="*", default=[], metavar="KEY=VALUE", help="overrides for every run")
    parser.add_argument(
        "--hub-profile",
        default="up=1000,down=1000,name=hub1g",
        help="the hub's own link (a profile spec; 'none': unshaped, the protocol before session 10)",
    )
    parser.add_argument(
        "--congestion-control",
        default="cubic",
        help="TCP congestion control in the ranks' namespaces ('host': inherit the host's; runs before session 26 "
        "inherited this machine's bbr)",
    )
    parser.add_argument("--partition", choices=["iid", "by_group"], default=None, help="recipe.data.partition")
    parser.add_argument("--target", choices=["plateau", "final"], default="plateau", help="how DDP sets the target")
    parser.add_argument(
        "--derive-from-lan",
        nargs="*",
        default=[],
        metavar="METHOD",
        help="on profiles other than lan, run METHOD only --timing-steps steps; time = lan steps × step time",
    )
    parser.add_argument("--timing-steps", type=int, default=60, help="steps of a --derive-from-lan timing run")
    parser.add_argument("--auroc-tolerance", type=float, default=0.005)
    parser.add_argument("--mae-factor", type=float, default=1.02)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "b3")
    parser.add_argument("--plot", type=Path, default=ROOT / "docs" / "benchmarks" / "b3_time_to_target.png")
    parser.add_argument("--reuse", action="store_true", help="analyse the JSON of an earlier run, run nothing")
    args = parser.parse_args(argv)

    from lit_commeff.netlab import available, parse_profile

    results_file = args.out / "b3_results.json"
    if args.reuse:
        results = [r for f in (args.merge or [results_file]) for r in json.loads(f.read_text())["results"]]
        labels = [m for m in dict.fromkeys(r["method"] for r in results) if m not in METHODS]
        args.methods = [*args.methods, *labels]  # variants of the merged runs get their own rows
        present = list(dict.fromkeys(r["profile"] for r in results))
        args.profiles = [p for p in args.profiles if p in present] or present
    else:
        status = available()
        if not status:
            raise SystemExit(f"b3: {status.reason}")
        profiles = [parse_profile(p) for p in args.profiles]
        args.profiles = [p.name for p in profiles]
        hub = None if args.hub_profile.lower() == "none" else parse_profile(args.hub_profile)
        extra = parse_sets(args.set)
        variants = parse_variants(args.variant)
        args.methods = [*args.methods, *variants]
        args.out.mkdir(parents=True, exist_ok=True)
        results = []
        port = 29700
        for recipe in args.recipes:
            for profile in profiles:
                for seed in args.seeds if args.seeds is not None else range(args.repeats):
                    for method in args.methods:
                        port += 1
                        base, options = variants.get(method, (method, []))
                        timing = method in args.derive_from_lan and profile.name != "lan"
                        steps = args.timing_steps
                        timing_set = [f"trainer.max_steps={steps}", f"trainer.val_check_interval={steps}"]
                        partition = [f"recipe.data.partition={args.partition}"] if args.partition else []
                        result = run_one(
                            recipe=recipe, profile=profile, method=method, seed=seed, ranks=args.ranks,
                            extra=[*partition, *args.common, *extra.get(base, []), *options,
                                   *(timing_set if timing else [])],
                            out=args.out, port=port, strategy=base, hub_profile=hub, partition=args.partition,
                            congestion_control=None if args.congestion_control == "host" else args.congestion_control,
                        )  # fmt: skip
                        result["timing_only"] = timing
                        last = result["history"][-1] if result["history"] else {}
                        print(
                            f"{recipe} {profile.name} {method} s{seed}: codes {result['codes']}, "
                            f"final {last.get('value')}, train {last.get('seconds', math.nan):.1f} s",
                            flush=True,
                        )
                        results.append(result)
                        meta = {
                            "argv": sys.argv,
                            "when": datetime.now(timezone.utc).isoformat(),
                            "cpus": os.cpu_count(),
                        }
                        results_file.write_text(json.dumps({"meta": meta, "results": results}))
    rows = analyse(results, args)
    print_table(rows)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "b3_table.json").write_text(json.dumps(rows, indent=1))
    if rows:
        plot(rows, args.plot)
        print(f"plot: {args.plot}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
