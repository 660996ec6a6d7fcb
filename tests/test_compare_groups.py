"""``lit-commeff-compare`` compares like with like: one table, target and plot per recipe and data set; the plot
shows total bytes beside uplink and keeps runs whose first sync comes late; no progress bars."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from lit_commeff.cli import compare
from lit_commeff.tracking.history import PANELS, metric_vs_bytes_figure, write_history


def _history(values: list[float], up: list[float], down: list[float]) -> list[dict]:
    return [
        {"step": 10 * (i + 1), "value": v, "wire_up_bytes": u, "wire_down_bytes": d, "wire_total_bytes": u + d}
        for i, (v, u, d) in enumerate(zip(values, up, down, strict=True))
    ]


DDP = _history([0.70, 0.75], [1e6, 2e6], [1e6, 2e6])
OLGA = _history([0.72, 0.74], [1e5, 2e5], [2e6, 4e6])
DILOCO = _history([0.60, 0.66, 0.73], [0.0, 0.0, 5e5], [0.0, 0.0, 5e5])  # validates twice before its first sync


def test_runs_are_grouped_by_recipe_and_data_set_each_with_its_own_target():
    runs = [
        {"name": "a", "algorithm": "ddp", "recipe": "finance_credit", "dataset": "synthetic(rows=20000)"},
        {"name": "b", "algorithm": "ddp", "recipe": "finance_credit", "dataset": "bank.csv"},
        {"name": "c", "algorithm": "olga", "recipe": "finance_credit", "dataset": "synthetic(rows=20000)"},
        {"name": "d", "algorithm": "ddp", "recipe": "telecom_throughput", "dataset": "synthetic"},
    ]
    for run, final in zip(runs, (0.75, 0.9, 0.7, 12.0), strict=True):
        run.update(history=[{"value": final, "wire_up_bytes": 1.0}], metrics={}, wall_s=1.0)
    groups = compare.group_runs(runs)
    assert {k: [r["name"] for r in v] for k, v in groups.items()} == {
        ("finance_credit", "synthetic(rows=20000)"): ["a", "c"],
        ("finance_credit", "bank.csv"): ["b"],
        ("telecom_throughput", "synthetic"): ["d"],
    }
    targets = [compare.compare(v, metric="m", mode="max", tolerance=0.0, reference="ddp")[1] for v in groups.values()]
    assert targets == [0.75, 0.9, 12.0]  # each data set against its own DDP run
    assert compare.default_metric("telecom_throughput") == "val/mae" and compare.default_metric("x") == "val/auroc"
    several = compare.group_plot_path("out/cmp.png", ("finance_credit", "synthetic(rows=20000)"), True)
    assert several == Path("out/cmp-finance_credit-synthetic_rows=20000.png")
    assert compare.group_plot_path("cmp.png", ("r", "d"), False) == Path("cmp.png")


def test_the_plot_shows_total_beside_uplink_and_keeps_a_late_first_sync():
    fig = metric_vs_bytes_figure({"ddp": DDP, "olga": OLGA, "diloco": DILOCO}, metric="val/auroc")
    up, total = fig.axes
    assert [ax.get_xlabel() for ax in fig.axes] == list(PANELS.values())
    assert "total MB" in total.get_xlabel()
    for ax in (up, total):
        lines = {line.get_label(): line for line in ax.lines}
        assert set(lines) == {"ddp", "olga", "diloco"}
        assert list(lines["diloco"].get_xdata())[:2] == [0.0, 0.0]  # before the first sync: 0 MB, still drawn
    assert up.get_xscale() == "symlog"  # 0.1 to 2 MB: log above the smallest positive value, and 0 on the axis
    assert list({line.get_label(): line for line in total.lines}["olga"].get_xdata()) == [2.1, 4.2]


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> tuple[str, Path]:
    """An MLflow store with runs of two data sets, as ``lit-commeff`` logs them (tags, history artifact)."""
    folder = tmp_path_factory.mktemp("compare")
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    experiment = client.create_experiment("cmp", artifact_location=(folder / "artifacts").as_uri())
    for name, algorithm, dataset, history in [
        ("ddp-a", "ddp", "synthetic(rows=20000)", DDP),
        ("olga-a", "olga", "synthetic(rows=20000)", OLGA),
        ("diloco-a", "diloco", "synthetic(rows=20000)", DILOCO),
        ("ddp-b", "ddp", "bank.csv", _history([0.9], [1e6], [1e6])),
    ]:
        tags = {"lit_commeff.algorithm": algorithm, "lit_commeff.recipe": "finance_credit"}
        run = client.create_run(experiment, run_name=name, tags={**tags, "lit_commeff.dataset": dataset})
        write_history(folder / "history.jsonl", history)
        client.log_artifact(run.info.run_id, str(folder / "history.jsonl"))
        client.set_terminated(run.info.run_id)
    return uri, folder


def test_compare_prints_one_table_per_data_set_and_no_progress_bars(store, capfd):
    uri, folder = store
    out, table = folder / "cmp.png", folder / "cmp.json"
    assert compare.main(["--tracking-uri", uri, "--experiment", "cmp", "--out", str(out), "--json", str(table)]) == 0
    printed = capfd.readouterr()
    assert "Downloading artifacts" not in printed.err and "%|" not in printed.err
    assert "finance_credit on synthetic(rows=20000): val/auroc (max); target 0.7450" in printed.out
    assert "finance_credit on bank.csv: val/auroc (max); target 0.8950" in printed.out
    groups = json.loads(table.read_text())["groups"]
    assert [(g["dataset"], [r["name"] for r in g["rows"]]) for g in groups] == [
        ("synthetic(rows=20000)", ["ddp-a", "olga-a", "diloco-a"]),
        ("bank.csv", ["ddp-b"]),
    ]
    assert all(Path(g["plot"]).stat().st_size > 1000 for g in groups) and len({g["plot"] for g in groups}) == 2
