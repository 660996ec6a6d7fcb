"""Traffic told in full: both directions on the wire per worker, the hub's egress and ingress, against dense DDP.

The ledger's handed bytes (what each collective was given: CC-2, CC-3, γ) stay as they are; the wire view is
derived from them under the documented model: a ring all-reduce of n bytes per rank sends and receives
2(M−1)/M·n on every rank, a star gather/broadcast crosses one link between the hub and each worker.
"""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
import torch
from _strategy_utils import Recorder, TinyRegressor, read_ranks, regression_data, trainer
from torch.utils.data import DataLoader

from lit_commeff.cli.compare import compare, more_than_ddp_lines
from lit_commeff.ledger import CommLedger, Direction, ring_wire_bytes
from lit_commeff.strategy import COMM_METRICS, OLGAStrategy
from lit_commeff.strategy.ddp_metered import MeteredDDPStrategy
from lit_commeff.strategy.metering import PROGRESS_BAR, CommMetering

D = 100  # dense message: 100 float32 = 400 bytes


# ----------------------------------------------------------------------------------- the ring formula
@pytest.mark.parametrize(
    ("nbytes", "m", "expected"),
    [(400, 1, 0), (400, 2, 400), (400, 4, 600), (400, 3, 533), (401, 3, 535), (0, 5, 0), (1000, 8, 1750)],
)
def test_ring_all_reduce_sends_and_receives_two_m_minus_one_over_m(nbytes, m, expected):
    assert ring_wire_bytes(nbytes, m) == expected
    assert ring_wire_bytes(nbytes, m) == round(2 * (m - 1) / m * nbytes)


@pytest.mark.parametrize(("nbytes", "m"), [(-1, 2), (1.5, 2), (True, 2), (10, 0), (10, True)])
def test_ring_formula_rejects_bad_input_naming_the_field(nbytes, m):
    with pytest.raises(ValueError, match=r"ring_wire_bytes: (nbytes|num_workers)="):
        ring_wire_bytes(nbytes, m)


# ----------------------------------------------------------------------------------- the ledger's wire view
def _star_and_ring(ledger: CommLedger) -> None:
    ledger.begin_round()  # a DDP-like round: every rank all-reduces one dense vector
    ledger.record(Direction.ALLREDUCE, sender=[0, 1, 2, 3], nbytes=400)
    ledger.begin_round()  # a star round: compressed gather (worker 2 sends more), dense broadcast
    ledger.record(Direction.UPLINK, sender=[1, 2, 3], nbytes=[40, 80, 40])
    ledger.record(Direction.DOWNLINK, nbytes=400)
    ledger.record(Direction.DOWNLINK, nbytes=100, receivers=[1])


def test_wire_view_of_star_and_ring_traffic_by_hand():
    ledger = CommLedger(dim=D, num_workers=4)
    _star_and_ring(ledger)
    ring = 600  # 2·3/4 · 400, each way, every rank
    assert ledger.wire_sent_bytes_per_rank() == [ring + 3 * 400 + 100, ring + 40, ring + 80, ring + 40]
    assert ledger.wire_received_bytes_per_rank() == [ring + 160, ring + 500, ring + 400, ring + 400]
    assert ledger.hub_egress_bytes == ring + 1300  # the hub sends one copy to each receiver
    assert ledger.hub_ingress_bytes == ring + 160  # every worker's gather messages
    # the handed bytes (the paper's counts) are untouched: the all-reduce is uplink, nothing down
    assert ledger.uplink_bytes_per_worker() == [400, 440, 480, 440]
    assert ledger.downlink_bytes_per_worker() == [0, 500, 400, 400]
    assert ledger.cc2 == 4 + 3 and ledger.cc3 == pytest.approx(1 + 0.2)
    summary = json.loads(json.dumps(ledger.summary()))
    assert summary["hub_egress_bytes"] == ring + 1300 and summary["hub_ingress_bytes"] == ring + 160
    assert summary["wire_sent_bytes_per_rank"] == ledger.wire_sent_bytes_per_rank()


def test_wire_view_survives_a_state_round_trip():
    full = CommLedger(dim=D, num_workers=4)
    _star_and_ring(full)
    resumed = CommLedger(dim=D, num_workers=4)
    resumed.load_state_dict(full.state_dict())
    assert resumed.wire_sent_bytes_per_rank() == full.wire_sent_bytes_per_rank()
    assert resumed.wire_received_bytes_per_rank() == full.wire_received_bytes_per_rank()


# ----------------------------------------------------------------------------------- metering against DDP
def _metering(m: int, rounds: list[dict[str, Any]]) -> CommMetering:
    metering = CommMetering(CommLedger(dim=D, num_workers=m), method="x")
    for spec in rounds:
        metering.ledger.begin_round()
        for direction, kwargs in spec.items():
            metering.ledger.record(direction, **kwargs)
        metering.steps += 1
    return metering


def test_dense_all_reduce_is_ddp_in_every_direction():
    metering = _metering(4, [{"allreduce": {"sender": [0, 1, 2, 3], "nbytes": 400}}] * 3)
    s = metering.summary()
    assert s["worker_wire_up_bytes"] == s["worker_wire_down_bytes"] == 3 * 600 == s["ddp_wire_up_bytes"]
    assert s["worker_wire_total_bytes"] == 3 * 1200 == s["ddp_wire_total_bytes"]
    assert s["hub_egress_bytes"] == s["hub_ingress_bytes"] == 3 * 600
    for key in ("wire_up_vs_ddp", "wire_down_vs_ddp", "wire_total_vs_ddp", "hub_egress_vs_ddp", "hub_ingress_vs_ddp"):
        assert s[key] == 1.0, key
    assert s["more_than_ddp"] == []
    assert "no more bytes than dense DDP" in s["vs_ddp"]
    # the handed view is unchanged: the whole all-reduce is uplink, the downlink 0
    assert s["worker_uplink_bytes"] == 3 * 400 and s["worker_downlink_bytes"] == 0


def test_a_star_method_with_a_heavy_downlink_is_called_out():
    # M = 3: a worker sends 10% of a dense vector up and receives two dense vectors down per step
    step = {"uplink": {"sender": [1, 2], "nbytes": 40}, "downlink": {"nbytes": 800}}
    s = _metering(3, [step] * 5).summary()
    ddp = ring_wire_bytes(5 * 400, 3)  # 2·2/3 · 2000 = 2667 each way
    assert s["ddp_wire_up_bytes"] == s["ddp_wire_down_bytes"] == ddp == 2667
    assert (s["worker_wire_up_bytes"], s["worker_wire_down_bytes"]) == (200, 4000)
    assert (s["hub_egress_bytes"], s["hub_ingress_bytes"]) == (2 * 4000, 2 * 200)  # (M − 1) times a worker's
    assert s["wire_up_vs_ddp"] == pytest.approx(200 / ddp)
    assert s["wire_down_vs_ddp"] == pytest.approx(4000 / ddp)
    assert s["wire_total_vs_ddp"] == pytest.approx(4200 / (2 * ddp))
    assert s["hub_egress_vs_ddp"] == pytest.approx(8000 / ddp)
    assert s["wire_total_vs_ddp"] < 1  # less in all, yet more down: said plainly
    assert s["more_than_ddp"] == ["downlink per worker", "hub egress"]
    assert s["vs_ddp"] == (
        "x moves MORE bytes than dense DDP for the same steps: "
        f"downlink per worker {4000 / ddp:,.2f}x, hub egress {8000 / ddp:,.2f}x."
    )


def test_fit_end_table_shows_up_down_total_hub_and_says_more(capsys):
    step = {"uplink": {"sender": [1, 2], "nbytes": 40}, "downlink": {"nbytes": 800}}
    _metering(3, [step] * 5).print_summary()
    out = capsys.readouterr().out
    for label in ("uplink per worker", "downlink per worker", "total per worker", "hub egress", "hub ingress", "x DDP"):
        assert label in out, label
    assert "MORE" in out and "moves MORE bytes than dense DDP" in out
    assert "ring all-reduce" in out  # the wire model is stated


class _Module:
    """Records ``self.log`` calls like a LightningModule outside a Trainer."""

    _trainer = None  # no Trainer attached: every step is logged

    def __init__(self) -> None:
        self.logged: dict[str, tuple[float, dict[str, Any]]] = {}

    def log(self, name: str, value: float, **kwargs: Any) -> None:
        self.logged[name] = (value, kwargs)


def test_progress_bar_shows_down_mb_beside_up_mb_and_comm_metrics_have_both_directions():
    metering = _metering(3, [])
    metering.ledger.begin_round()
    metering.ledger.record("uplink", sender=[1, 2], nbytes=40_000)
    metering.ledger.record("downlink", nbytes=800_000)
    module = _Module()
    assert metering.log_comm_metrics(module)
    assert list(PROGRESS_BAR) == ["up_MB", "down_MB"]
    for name, expected in (("up_MB", 0.04), ("down_MB", 0.8)):
        value, kwargs = module.logged[name]
        assert value == pytest.approx(expected) and kwargs["prog_bar"] is True and kwargs["logger"] is False
    assert set(COMM_METRICS) <= set(module.logged)
    logged = {k: v for k, (v, _) in module.logged.items()}
    assert logged["comm/wire_down_bytes"] == 800_000 and logged["comm/hub_egress_bytes"] == 1_600_000
    assert logged["comm/hub_ingress_bytes"] == 80_000
    assert logged["comm/wire_down_vs_ddp"] == pytest.approx(800_000 / ring_wire_bytes(400, 3))


# ----------------------------------------------------------------------------------- real runs, M = 3 (gloo)
WORLD = 3


def _fit(strategy: Any, tmp_path, *, max_steps: int) -> tuple[Any, list[dict[str, Any]]]:
    torch.manual_seed(0)
    t = trainer(strategy, devices=WORLD, max_steps=max_steps, callbacks=[Recorder(tmp_path)])
    t.fit(TinyRegressor(), DataLoader(regression_data(), batch_size=32, shuffle=True))
    return t, read_ranks(tmp_path, WORLD)


def test_metered_ddp_three_ranks_sends_and_receives_the_ring_share(tmp_path):
    steps = 4
    t, ranks = _fit(MeteredDDPStrategy(start_method="fork"), tmp_path, max_steps=steps)
    d = sum(p.numel() for p in TinyRegressor().parameters())  # 8·16 + 16 + 16 + 1 = 161
    assert d == 161
    ring = (2 * (WORLD - 1) * steps * d * 4 + 1) // WORLD  # 2(M−1)/M of the gradient bytes, each way = 3435
    assert ring == 3435
    for rank in ranks:
        s = rank["summary"]
        assert s["worker_uplink_bytes"] == steps * d * 4 and s["worker_downlink_bytes"] == 0  # handed: unchanged
        assert s["worker_wire_up_bytes"] == s["worker_wire_down_bytes"] == ring
        assert s["worker_wire_total_bytes"] == 2 * ring
        assert s["hub_egress_bytes"] == s["hub_ingress_bytes"] == ring  # no hub: rank 0 is one more ring member
        assert s["ddp_wire_up_bytes"] == ring and s["ddp_wire_total_bytes"] == 2 * ring
        assert s["wire_up_vs_ddp"] == s["wire_down_vs_ddp"] == s["wire_total_vs_ddp"] == 1.0
        assert s["more_than_ddp"] == [] and s["cc3"] == steps
    assert t.callback_metrics["comm/wire_down_bytes"].item() == ring
    assert t.callback_metrics["comm/wire_total_vs_ddp"].item() == 1.0


def test_olga_three_ranks_worker_and_hub_links_by_hand(tmp_path):
    steps = 12
    strategy = OLGAStrategy(start_method="fork", p=0.25)
    t, ranks = _fit(strategy, tmp_path, max_steps=steps)
    s = ranks[0]["summary"]
    d = s["dim"]
    assert d == 161
    phases = ranks[0]["phases"]
    dense = sum(ph in ("anchor", "y", "error") for ph in phases)
    compressed = sum(ph == "inner" for ph in phases)
    assert dense + compressed == steps and compressed > 0
    guard_up = steps * 4  # one int32 flag per worker per step ...
    up = dense * d * 4 + compressed * strategy.compressor.wire_nbytes((d,), torch.float32) + guard_up
    assert s["worker_uplink_bytes"] == up  # every non-hub worker sends the same
    down = s["worker_downlink_bytes"]  # ... and the hub's broadcasts (the setup's d·4 included)
    assert down >= (steps + 1) * d * 4 + steps * 4 * WORLD
    ddp = (2 * (WORLD - 1) * steps * d * 4 + 1) // WORLD
    assert (s["worker_wire_up_bytes"], s["worker_wire_down_bytes"]) == (up, down)  # a star: one hop each way
    assert s["worker_wire_total_bytes"] == up + down
    assert (s["hub_egress_bytes"], s["hub_ingress_bytes"]) == ((WORLD - 1) * down, (WORLD - 1) * up)
    assert s["ddp_wire_up_bytes"] == s["ddp_wire_down_bytes"] == ddp
    assert s["wire_up_vs_ddp"] == pytest.approx(up / ddp) and s["wire_down_vs_ddp"] == pytest.approx(down / ddp)
    assert s["hub_egress_vs_ddp"] == pytest.approx((WORLD - 1) * down / ddp)
    # OLGA's downlink carries a point and a gradient most steps: more than DDP's ring share, and said so
    assert "downlink per worker" in s["more_than_ddp"] and "hub egress" in s["more_than_ddp"]
    assert "olga moves MORE bytes than dense DDP" in s["vs_ddp"]
    assert t.callback_metrics["comm/hub_egress_bytes"].item() == (WORLD - 1) * down


# ----------------------------------------------------------------------------------- the compare command
def _run(name: str, algorithm: str, up: float, down: float, ddp_each: float) -> dict[str, Any]:
    return {
        "name": name,
        "algorithm": algorithm,
        "history": [{"value": 0.7, "uplink_bytes": up, "wire_up_bytes": up}],
        "metrics": {
            "final/worker_wire_up_bytes": up,
            "final/worker_wire_down_bytes": down,
            "final/worker_wire_total_bytes": up + down,
            "final/ddp_wire_up_bytes": ddp_each,
            "final/ddp_wire_down_bytes": ddp_each,
            "final/ddp_wire_total_bytes": 2 * ddp_each,
        },
        "wall_s": 1.0,
    }


def test_compare_shows_up_down_total_against_the_ddp_run_and_names_the_excess():
    runs = [_run("ddp-run", "ddp", 1e6, 1e6, 1e6), _run("olga-run", "olga", 0.5e6, 2e6, 1e6)]
    rows, _ = compare(runs, metric="val/auroc", mode="max", tolerance=0.005, reference="ddp")
    ddp_row, olga = rows
    assert (ddp_row["up_vs_ddp"], ddp_row["down_vs_ddp"], ddp_row["total_vs_ddp"]) == (1.0, 1.0, 1.0)
    assert (olga["wire_up_mb"], olga["wire_down_mb"], olga["wire_total_mb"]) == (0.5, 2.0, 2.5)
    assert (olga["up_vs_ddp"], olga["down_vs_ddp"], olga["total_vs_ddp"]) == (0.5, 2.0, 1.25)
    assert olga["ddp_reference"] == "run ddp-run (measured)"
    assert olga["more_than_ddp"] == ["down", "total"]
    assert more_than_ddp_lines(rows) == [
        "olga-run (olga) moves MORE bytes per worker than DDP: down 2.00x, total 1.25x."
    ]


def test_compare_without_a_ddp_run_uses_each_runs_model_size_and_says_so():
    rows, _ = compare(
        [_run("olga-run", "olga", 0.5e6, 0.4e6, 1e6)], metric="m", mode="max", tolerance=0, reference="ddp"
    )
    (row,) = rows
    assert row["ddp_reference"].startswith("model size")
    assert (row["up_vs_ddp"], row["down_vs_ddp"], row["total_vs_ddp"]) == (0.5, 0.4, 0.45)
    assert row["more_than_ddp"] == [] and more_than_ddp_lines(rows) == []


def test_compare_keeps_runs_from_before_the_wire_view():
    old = {"name": "old", "algorithm": "olga", "history": [{"value": 0.7, "uplink_bytes": 1e6}], "metrics": {}}
    rows, _ = compare([{**old, "wall_s": 1.0}], metric="m", mode="max", tolerance=0, reference="ddp")
    assert rows[0]["wire_up_mb"] is None and rows[0]["up_vs_ddp"] is None and rows[0]["ddp_reference"] is None
    assert rows[0]["uplink_mb"] == 1.0 and not math.isnan(rows[0]["uplink_mb"])


# ----------------------------------------------------------------------------------- MLflow final/* and tags
def test_mlflow_final_metrics_and_tags_carry_both_directions_against_ddp(tmp_path):
    from mlflow.tracking import MlflowClient

    from lit_commeff.tracking.mlflow_run import finish_run, start_run

    step = {"uplink": {"sender": [1, 2], "nbytes": 40}, "downlink": {"nbytes": 800}}
    summary = json.loads(json.dumps(_metering(3, [step] * 5).summary()))  # as ledger_summary.json holds it
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    run_id = start_run(tracking_uri=uri, experiment="wire", run_name="r", params={}, tags={})
    finish_run(tracking_uri=uri, run_id=run_id, artifacts=[], summary=summary)
    run = MlflowClient(tracking_uri=uri).get_run(run_id)
    metrics = run.data.metrics
    assert metrics["final/worker_wire_up_bytes"] == 200 and metrics["final/worker_wire_down_bytes"] == 4000
    assert metrics["final/worker_wire_total_bytes"] == 4200
    assert metrics["final/hub_egress_bytes"] == 8000 and metrics["final/hub_ingress_bytes"] == 400
    assert metrics["final/ddp_wire_up_bytes"] == metrics["final/ddp_wire_down_bytes"] == 2667
    assert metrics["final/wire_down_vs_ddp"] == pytest.approx(4000 / 2667)
    assert metrics["final/worker_uplink_bytes"] == 200  # the handed bytes are still there
    assert run.data.tags["lit_commeff.more_than_ddp"] == "downlink per worker, hub egress"
    assert run.data.tags["lit_commeff.vs_ddp"].startswith("x moves MORE bytes than dense DDP")
