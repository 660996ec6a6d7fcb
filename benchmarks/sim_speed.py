"""Simulator speed: OLGA in ``lit_commeff.sim`` against the plain numpy reference oracle, side by side.

Both run OLGA (theory preset, RandK K, ω = d/K) on distributed ridge with the same shards (the reference's
numpy permutation, λ = L_data/100), the same M and the same CC-3 budget, in this process, one after the
other, with the same thread count. Prints the time of each, the time per communication round of each, and
their ratios (simulator / reference: below 1 means the simulator is faster).

    python benchmarks/sim_speed.py                          # w8a-like synthetic set, 49,749 x 300, M = 100, K = 1
    python benchmarks/sim_speed.py --libsvm ../shared/datasets/a9a --budget 50
    python benchmarks/sim_speed.py --profile                # adds the simulator's cProfile top entries

The default data set is generated (seeded) in the shape of LibSVM's ``w8a``: 49,749 rows, 300 binary
features at about 11.6 non-zeros per row (power-law feature frequencies, labels from a noisy linear model),
written as a LibSVM file that both sides read. ``--libsvm FILE`` takes any binary LibSVM file instead. The
reference is read from ``../shared/reference/olga_ridge_reference.py`` (override with ``--reference``).
The two sides draw their compressors and epoch lengths from different generators (numpy's and the
package's counter-based schedule), so their CC-3 counts to a target agree only statistically; the
per-round time is the like-for-like comparison.
"""

from __future__ import annotations

import argparse
import cProfile
import importlib.util
import io
import json
import os
import platform
import pstats
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_REFERENCE = ROOT.parent / "shared" / "reference" / "olga_ridge_reference.py"
W8A_SHAPE = (49_749, 300)


def write_w8a_like(path: Path, rows: int = W8A_SHAPE[0], dim: int = W8A_SHAPE[1], seed: int = 0) -> Path:
    """A seeded binary LibSVM file shaped like w8a (about 11.6 non-zeros per row)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    freq = np.minimum(0.9, 0.35 / np.arange(1, dim + 1) ** 0.5)
    X = rng.random((rows, dim)) < freq
    score = X @ rng.standard_normal(dim) + 0.5 * rng.standard_normal(rows)
    y = np.where(score > np.median(score), 1, -1)
    with open(path, "w") as f:
        for i in range(rows):
            f.write(f"{y[i]:+d} " + " ".join(f"{j}:1" for j in np.flatnonzero(X[i]) + 1) + "\n")
    return path


def load_reference(path: Path) -> Any:
    spec = importlib.util.spec_from_file_location("olga_ridge_reference", path)
    if spec is None or spec.loader is None:
        raise SystemExit(f"--reference: cannot load {path}; pass the path of olga_ridge_reference.py.")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def timed(fn: Any, repeats: int) -> tuple[Any, list[float]]:
    """``fn()``'s result and its wall times over ``repeats`` calls."""
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return out, times


def setup_reference(ref: Any, data: Path, workers: int) -> tuple[Any, float]:
    t0 = time.perf_counter()
    A, b = ref.load_libsvm(str(data))
    return ref.Ridge(A, b, workers), time.perf_counter() - t0


def run_reference(ref: Any, P: Any, k: int, budget: float, repeats: int) -> dict:
    hist, times = timed(lambda: ref.olga(P, k, budget=budget, seed=0, tol=1e-12), repeats)
    seconds = min(times)
    outers = len(hist) - 1
    cc3 = hist[-1][0]
    inner = round((cc3 - 2 * outers) * P.d / k)  # dense rounds cost 1 unit each, inner rounds K/d
    return {
        "run_s": seconds, "run_s_each": times, "rounds": inner + 2 * outers, "cc3": cc3,
        "rel_subopt": float(hist[-1][1]), "cc3_to_1e-6": ref.cc3_to(hist, 1e-6), "d": P.d, "n": P.n,
        "L": P.L, "mu": P.mu, "delta": P.delta,
    }  # fmt: skip


def setup_simulator(data: Path, workers: int) -> tuple[Any, float]:
    import numpy as np

    from lit_commeff.problems import Ridge
    from lit_commeff.problems.libsvm import load_libsvm

    t0 = time.perf_counter()
    A, b = load_libsvm(data)
    perm = np.random.default_rng(0).permutation(A.shape[0])  # the reference's shuffle
    return Ridge.from_data(A, b, workers, perm=perm), time.perf_counter() - t0


def run_simulator(problem: Any, k: int, budget: float, repeats: int, profile: bool) -> dict:
    from lit_commeff import sim

    def once() -> Any:
        return sim.run(
            problem, "olga", compressor=("randk", {"k": k}), preset="theory", cc3_budget=budget, tol=1e-12, seed=0
        )

    history, times = timed(once, repeats)
    seconds = min(times)
    out = {
        "run_s": seconds, "run_s_each": times, "rounds": len(history), "cc3": history.final["cc3"],
        "rel_subopt": history.final["rel_subopt"], "cc3_to_1e-6": history.cc3_to(1e-6), "d": problem.dim,
        "n": problem.n_per_worker, "L": problem.L, "mu": problem.mu, "delta": problem.delta,
        "grad_path": problem.grad_path,
    }  # fmt: skip
    if profile:
        profiler = cProfile.Profile()
        profiler.runcall(once)
        text = io.StringIO()
        pstats.Stats(profiler, stream=text).sort_stats("tottime").print_stats(15)
        out["profile_top"] = text.getvalue()
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--libsvm", type=Path, help="binary LibSVM file (default: a generated w8a-like set)")
    parser.add_argument("--reference", type=Path, default=DEFAULT_REFERENCE)
    parser.add_argument("--workers", type=int, default=100)
    parser.add_argument("--k", type=int, default=1)
    parser.add_argument("--budget", type=float, default=20.0, help="CC-3 budget of both runs")
    parser.add_argument("--threads", type=int, default=1, help="threads of both sides (torch, BLAS)")
    parser.add_argument("--repeats", type=int, default=2, help="timed runs of each side (the fastest counts)")
    parser.add_argument("--profile", action="store_true", help="cProfile one more simulator run")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "sim_speed.json")
    args = parser.parse_args(argv)
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(args.threads)  # before numpy and torch start their pools
    import torch

    torch.set_num_threads(args.threads)
    ref = load_reference(args.reference)
    with tempfile.TemporaryDirectory() as tmp:
        data = args.libsvm or write_w8a_like(Path(tmp) / "w8a_like")
        ref_problem, ref_setup = setup_reference(ref, data, args.workers)
        sim_problem, sim_setup = setup_simulator(data, args.workers)
    reference = {"setup_s": ref_setup, **run_reference(ref, ref_problem, args.k, args.budget, args.repeats)}
    simulator = {"setup_s": sim_setup, **run_simulator(sim_problem, args.k, args.budget, args.repeats, args.profile)}
    ratio = simulator["run_s"] / reference["run_s"]
    per_round = (simulator["run_s"] / simulator["rounds"]) / (reference["run_s"] / reference["rounds"])
    for name, row in (("reference (numpy)", reference), ("simulator", simulator)):
        print(
            f"{name:18s} setup {row['setup_s']:6.2f} s  run {row['run_s']:7.2f} s  rounds {row['rounds']:6d}  "
            f"{1e3 * row['run_s'] / row['rounds']:6.3f} ms/round  CC-3 {row['cc3']:.2f}  "
            f"rel {row['rel_subopt']:.3g}  CC-3 to 1e-6 {row['cc3_to_1e-6']}"
        )
    print(f"simulator / reference: run time {ratio:.3f}, time per round {per_round:.3f}")
    if args.profile:
        print(simulator["profile_top"])
    result = {
        "meta": {
            "benchmark": "sim_speed",
            "command": "python benchmarks/sim_speed.py " + " ".join(argv if argv is not None else sys.argv[1:]),
            "data": str(args.libsvm) if args.libsvm else "generated w8a-like (49,749 x 300, seed 0)",
            "workers": args.workers, "k": args.k, "cc3_budget": args.budget, "threads": args.threads,
            "repeats": args.repeats, "timing": "fastest of the repeats, each side; setup (load + constants) apart",
            "torch": torch.__version__, "python": platform.python_version(),
            "when": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        },
        "reference": reference,
        "simulator": simulator,
        "ratio_run_time": ratio,
        "ratio_time_per_round": per_round,
    }  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1, default=str))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
