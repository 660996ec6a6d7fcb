r"""Per-rank trace of Gated DANE's lagged syncs, for diagnosis (session 12: the throughput GRU's seed 2).

Put this folder on ``PYTHONPATH`` and set ``GD_TRACE`` to a folder: every process then patches
``GatedDANE._sync_lagged`` at start-up and appends one JSON line per sync to ``GD_TRACE/rank<r>.jsonl``
(the round, its H, the norms of the rank's correction, ĝ, model change and round-mean gradient, the anchor's
move, the hub's outer momentum, the gate's counts and δ̂). ``summarize.py`` prints a table of them. Example::

    GD_TRACE=/tmp/trace PYTHONPATH=.:benchmarks/tools/gated_dane_trace \
        python benchmarks/b3_time_to_accuracy.py --recipes telecom_throughput --partition by_group \
        --profiles lan --methods --variant "defaults=gated_dane strategy.link_aware=false" --seeds 2 ...

``GD_STEPS`` (a folder) records each optimizer step's wall time per rank instead (``steps<r>.jsonl``), with the
algorithm's phase and, under ``overlap``, how long each join waited. Without either it does nothing.
"""

import json
import os
import statistics
import time

if os.environ.get("GD_TRACE"):
    import torch
    import torch.distributed as dist

    from lit_commeff.algorithms import gated_dane as _gated_dane

    _sync_lagged = _gated_dane.GatedDANE._sync_lagged

    def _norm(x: "torch.Tensor | None") -> "float | None":
        return None if x is None else float(torch.linalg.vector_norm(x))

    def _traced(self: "_gated_dane.GatedDANE") -> None:
        record = {
            "round": self.round,
            "H": self.H,
            "k": self.k,
            "corr": _norm(self.corr),
            "ghat": _norm(self.ghat),
            "delta_m": None if self.y is None else _norm(self.anchor - self.y),
            "gmean": None if self.grad_sum is None else _norm(self.grad_sum / self.grad_count),
            "anchor_norm": _norm(self.anchor),
            "done_at": self.done_at.tolist(),
            "delta_hat": None if self.delta_hat is None else self.delta_hat.tolist(),
            "corr_max": None if self.corr is None else float(self.corr.abs().max()),
            "mom": _norm(self.momentum),
        }
        record.update(  # the link-aware rule's inputs before this sync: smoothed times and this round's steps
            sync_seconds=self.sync_seconds,
            step_seconds=self.step_seconds,
            sync_steps=self.sync_steps,
            round_step_median=statistics.median(self._intervals) if self._intervals else None,
        )
        before = self.anchor.clone()
        started = time.perf_counter()
        _sync_lagged(self)
        record.update(
            sync_wall=time.perf_counter() - started,  # this sync's collectives and the hub's outer step
            anchor_move=_norm(self.anchor - before),
            new_H=self.H,
            new_corr=_norm(self.corr),
            new_ghat=_norm(self.ghat),
        )
        rank = dist.get_rank() if dist.is_available() and dist.is_initialized() else -1
        with open(os.path.join(os.environ["GD_TRACE"], f"rank{rank}.jsonl"), "a") as out:
            out.write(json.dumps(record) + "\n")

    _gated_dane.GatedDANE._sync_lagged = _traced

if os.environ.get("GD_STEPS"):
    # Per-step timing (session 16): each optimizer step's wall time on each rank, with the algorithm's phase, whether
    # it communicated, and under ``overlap`` how long its join waited and how long the joined exchange took. The
    # gap between one step's end and the next one's start is Lightning's own work (data, logging, callbacks).
    import atexit as _atexit
    import json as _json
    import time as _time

    import torch.distributed as _dist

    from lit_commeff.strategy import hub as _hub

    _optimizer_step = _hub.HubAlgorithmStrategy.optimizer_step
    _rows: list = []
    _rank: list = []  # taken at the first step: at exit the process group is gone

    def _flush() -> None:
        if _rows:
            with open(os.path.join(os.environ["GD_STEPS"], f"steps{_rank[0]}.jsonl"), "a") as out:
                out.writelines(_json.dumps(r) + "\n" for r in _rows)
            _rows.clear()

    _atexit.register(_flush)  # the last steps, fewer than a batch of 20

    def _timed_step(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        algorithm = self.algorithm
        exchange = getattr(algorithm, "exchange", None)
        row = {"k": getattr(algorithm, "k", None), "H": getattr(algorithm, "H", None)}
        row["communicates"] = bool(algorithm.communicates()) if algorithm is not None else None
        waited_before = None if exchange is None else (exchange.waited, exchange.seconds)
        row["start"] = _time.perf_counter()
        try:
            return _optimizer_step(self, *args, **kwargs)
        finally:
            row["end"] = _time.perf_counter()
            if exchange is not None and (exchange.waited, exchange.seconds) != waited_before:
                row["waited"], row["exchange"] = exchange.waited, exchange.seconds
            if not _rank:
                _rank.append(_dist.get_rank() if _dist.is_initialized() else -1)
            _rows.append(row)
            if len(_rows) >= 20:
                _flush()

    _hub.HubAlgorithmStrategy.optimizer_step = _timed_step
