"""Each recipe's default model trained in one process on its real data set: what a recipe reaches on its own.

The reference point for the distributed runs (no strategy, no communication): one CPU process, the recipe's
default data module and model from ``lit_commeff/conf/recipe/*.yaml``, a fixed number of steps, one
validation at the end. Writes ``benchmarks/results/recipes_single_process.json``; the table in
``recipes/README.md`` is rendered from it by ``benchmarks/render_tables.py``.

    python benchmarks/recipes_single_process.py --data ../shared/datasets            # all three recipes, seed 0
    python benchmarks/recipes_single_process.py --data ../shared/datasets --recipes finance_credit --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "lit_commeff" / "conf" / "recipe"
OUT = ROOT / "benchmarks" / "results" / "recipes_single_process.json"

#: recipe -> (data file under --data, training steps). Credit and churn: one epoch of the default batch size.
RUNS: dict[str, tuple[str, int]] = {
    "finance_credit": ("UCI_Credit_Card.csv", 375),
    "telecom_churn": ("Telco-Customer-Churn.csv", 88),
    "telecom_throughput": ("5G-production-dataset.zip", 1000),
}


def run_one(recipe: str, data_dir: Path, seed: int) -> dict[str, Any]:
    """Train ``recipe``'s defaults for its steps in this process and validate once."""
    file, steps = RUNS[recipe]
    cfg = OmegaConf.create({"seed": seed, "recipe": OmegaConf.load(CONF / f"{recipe}.yaml")})
    cfg.recipe.data.path = str(data_dir / file)
    pl.seed_everything(seed, workers=True, verbose=False)
    datamodule = instantiate(cfg.recipe.data)
    model = instantiate(cfg.recipe.model)
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=1,
        max_steps=steps,
        max_epochs=-1,
        limit_val_batches=1.0,
        check_val_every_n_epoch=None,
        val_check_interval=steps,
        use_distributed_sampler=False,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        deterministic=True,
    )
    start = time.perf_counter()
    trainer.fit(model, datamodule=datamodule)
    seconds = time.perf_counter() - start
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
    return {
        "recipe": recipe,
        "seed": seed,
        "data": file,
        "steps": int(trainer.global_step),
        "model": OmegaConf.to_container(cfg.recipe.model, resolve=True),
        "metrics": metrics,
        "wall_seconds": round(seconds, 2),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="folder with the recipes' real data files")
    parser.add_argument("--recipes", nargs="+", default=list(RUNS), choices=list(RUNS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    results = [run_one(recipe, args.data, seed) for recipe in args.recipes for seed in args.seeds]
    for r in results:
        shown = ", ".join(f"{k} {v:.4f}" for k, v in sorted(r["metrics"].items()))
        print(f"{r['recipe']:<20} seed {r['seed']}  {r['steps']} steps  {shown}  ({r['wall_seconds']} s)")
    payload = {
        "command": "python benchmarks/recipes_single_process.py --data ../shared/datasets "
        + f"--recipes {' '.join(args.recipes)} --seeds {' '.join(map(str, args.seeds))}",
        "machine": {"python": platform.python_version(), "torch": torch.__version__, "threads": 1},
        "results": results,
    }
    args.out.write_text(json.dumps(payload, indent=1) + "\n")
    print(f"wrote {args.out.relative_to(ROOT) if args.out.is_relative_to(ROOT) else args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
