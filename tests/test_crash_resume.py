"""Crash and resume, for real: a rank is SIGKILLed mid-run, the job stops naming it, and ``ckpt_path=last``
resumes at the checkpoint's step and finishes with the same parameters (bitwise) and the same communication
totals as a run never stopped; ``ckpt_path=last`` with nothing to resume is an error unless asked."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf

from lit_commeff.cli.faults import ENV, KillAtStep, from_env
from lit_commeff.cli.validate import ConfigError, check_resume
from lit_commeff.recipes.resumable import EpochSampler, ResumableDataLoader
from lit_commeff.strategy import state as rank_state
from lit_commeff.strategy.checkpoint_io import AtomicCheckpointIO

RUN = [
    "recipe.data.synthetic_rows=1600",
    "recipe.data.batch_size=32",
    "strategy=olga",
    "trainer.max_steps=32",
    "trainer.max_epochs=-1",
    "trainer.val_check_interval=12",
    "trainer.limit_val_batches=2",
    "trainer.num_sanity_val_steps=0",
    "trainer.log_every_n_steps=4",
    "trainer.enable_progress_bar=false",
    "checkpoint_every_n_steps=8",
]


def _cli(args: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("MASTER_", "RANK", "LOCAL_RANK", "WORLD_SIZE"))}
    environ.update(PYTHONWARNINGS="ignore", **env)
    cmd = [sys.executable, "-m", "lit_commeff.cli.main", *args]
    return subprocess.run(cmd, cwd=cwd, env=environ, capture_output=True, text=True, timeout=600)


def _final(ckpt: Path) -> tuple[dict[str, torch.Tensor], list[dict], int]:
    checkpoint = torch.load(ckpt, map_location="cpu", weights_only=True)
    ranks = [
        rank_state.unpack(checkpoint["lit_commeff"], strategy="olga", rank=r, world_size=2)["metering"]["ledger"]
        for r in range(2)
    ]
    return checkpoint["state_dict"], ranks, checkpoint["global_step"]


def _logged_steps(cwd: Path, experiment: str) -> list[int]:
    """The steps at which the experiment's only MLflow run logged ``train/loss`` (one per executed logging step)."""
    client = MlflowClient(tracking_uri=f"sqlite:///{cwd / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name(experiment).experiment_id])
    return sorted(m.step for m in client.get_metric_history(run.info.run_id, "train/loss"))


@pytest.mark.slow  # three 2-rank CLI runs: 4.4 min measured on a loaded 2-core machine
def test_sigkill_stops_the_job_and_resume_matches_an_uninterrupted_run(tmp_path):
    full = _cli([*RUN, f"checkpoint_dir={tmp_path / 'full'}", "logger.experiment=full"], tmp_path)
    assert full.returncode == 0, full.stderr[-3000:]

    # rank 1 dies at step 28 (mid-epoch: an epoch is 20 steps here); the last checkpoint is step 24's
    crashed = _cli([*RUN, f"checkpoint_dir={tmp_path / 'crash'}", "logger.experiment=crash"], tmp_path, **{ENV: "1:28"})
    assert crashed.returncode != 0
    assert "rank 1 exited with code -9" in crashed.stderr, crashed.stderr[-3000:]
    _, _, step = _final(tmp_path / "crash" / "last.ckpt")
    assert step == 24

    resumed = _cli(
        [*RUN, f"checkpoint_dir={tmp_path / 'crash'}", "ckpt_path=last", "logger.experiment=resumed"], tmp_path
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]

    # a real resume, not a deterministic rerun from step 0 (which would end with the same parameters): the
    # resumed run executed, and logged, only the steps after the checkpoint's
    full_steps, resumed_steps = _logged_steps(tmp_path, "full"), _logged_steps(tmp_path, "resumed")
    assert len(full_steps) == 32 // 4 and min(full_steps) < 24
    assert resumed_steps == [s for s in full_steps if s >= 24], (full_steps, resumed_steps)
    assert resumed_steps and min(resumed_steps) >= 24

    want_params, want_ledgers, want_step = _final(tmp_path / "full" / "last.ckpt")
    got_params, got_ledgers, got_step = _final(tmp_path / "crash" / "last.ckpt")
    assert got_step == want_step == 32
    assert want_params.keys() == got_params.keys()
    for name, value in want_params.items():
        assert torch.equal(value, got_params[name]), name  # bitwise on CPU
    for want, got in zip(want_ledgers, got_ledgers, strict=True):
        for key in ("uplink", "downlink", "messages", "control"):
            assert got[key] == want[key], key
        assert len(got["rounds"]) == len(want["rounds"])
        assert [r["uplink_bytes"] for r in got["rounds"]] == [r["uplink_bytes"] for r in want["rounds"]]


def test_resume_with_nothing_to_resume_is_an_error_unless_asked(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    proc = _cli([*RUN, f"checkpoint_dir={empty}", "ckpt_path=last"], tmp_path)
    assert proc.returncode == 2, proc.stderr[-3000:]
    message = proc.stderr.strip().splitlines()[-1]
    assert message.startswith("lit-commeff: error: ckpt_path: ckpt_path='last'"), message
    assert f"no last checkpoint to resume from in {str(empty)!r}" in message
    assert "rerun without ckpt_path" in message and "resume_missing_ok=true" in message
    assert not (tmp_path / "mlflow.db").exists()  # rejected before any run or rank started

    # the same check in-process: resume_missing_ok=true lets it start fresh; a last checkpoint satisfies it
    cfg = OmegaConf.create({"ckpt_path": "last", "resume_missing_ok": False})
    with pytest.raises(ConfigError, match="no last checkpoint"):
        check_resume(cfg, tmp_path / "missing")
    check_resume(OmegaConf.merge(cfg, {"resume_missing_ok": True}), empty)
    (empty / "epoch=0-step=8.ckpt").write_bytes(b"")  # not a last checkpoint: Lightning would not pick it
    with pytest.raises(ConfigError, match="no last checkpoint"):
        check_resume(cfg, empty)
    # Lightning's name for a second last checkpoint: found, so it is the one checked (an empty file cannot be read)
    (empty / "last-v1.ckpt").write_bytes(b"")
    with pytest.raises(ConfigError, match=r"cannot read the checkpoint .*last-v1\.ckpt"):
        check_resume(cfg, empty)
    check_resume(OmegaConf.create({"ckpt_path": None}), tmp_path / "missing")


# ----------------------------------------------------------------------------------- the pieces, one at a time
def test_epoch_order_depends_only_on_seed_and_epoch():
    a, b = EpochSampler(50, seed=3), EpochSampler(50, seed=3)
    a.set_epoch(0)
    list(a)
    a.set_epoch(4)
    b.set_epoch(4)
    assert list(a) == list(b)  # epochs 0..3 having run makes no difference
    b.set_epoch(5)
    assert list(a) != list(b)
    assert sorted(a) == list(range(50))


def test_loader_resumes_after_the_processed_batches():
    data = torch.utils.data.TensorDataset(torch.arange(40))
    whole = ResumableDataLoader(data, batch_size=4, seed=1, progress=lambda: (2, 3))
    whole.sampler.set_epoch(2)
    batches = [b[0].tolist() for b in whole]
    state = whole.state_dict()
    assert state == {"epoch": 2, "batches": 3}
    again = ResumableDataLoader(data, batch_size=4, seed=1)
    again.load_state_dict(state)
    again.sampler.set_epoch(2)
    assert [b[0].tolist() for b in again] == batches[3:]
    again.sampler.set_epoch(3)  # later epochs start at their beginning
    assert len(list(again)) == 10


def test_kill_drill_is_parsed_with_the_fix():
    assert from_env({}) == []
    (callback,) = from_env({ENV: "1:25"})
    assert isinstance(callback, KillAtStep) and (callback.rank, callback.step) == (1, 25)
    for bad in ("1", "a:b", "1:2:3", "-1:4"):
        with pytest.raises(ValueError, match=f"{ENV}: {ENV}=.*RANK"):
            from_env({ENV: bad})


_INTERRUPTED_SAVE = textwrap.dedent(
    """
    import os, signal, sys
    import torch
    from lit_commeff.strategy.checkpoint_io import AtomicCheckpointIO

    path = sys.argv[1]
    io = AtomicCheckpointIO()
    io.save_checkpoint({"step": 1, "w": torch.ones(1000)}, path)

    class Dying:
        def write(self, data):  # half the new checkpoint reaches the disk, then the process dies
            self.fh.write(bytes(data)[: len(data) // 2]); self.fh.flush(); os.kill(os.getpid(), signal.SIGKILL)

    real_open = open
    def open_then_die(file, mode="r", *a, **k):
        fh = real_open(file, mode, *a, **k)
        if "w" in mode:
            dying = Dying(); dying.fh = fh
            class Wrapper:
                def __enter__(self): return dying
                def __exit__(self, *exc): fh.close()
            return Wrapper()
        return fh

    import builtins
    builtins.open = open_then_die
    io.save_checkpoint({"step": 2, "w": torch.zeros(100000)}, path)
    """
)


def test_a_crash_during_a_save_leaves_the_previous_checkpoint_usable(tmp_path):
    path = tmp_path / "last.ckpt"
    proc = subprocess.run([sys.executable, "-c", _INTERRUPTED_SAVE, str(path)], capture_output=True, text=True)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    leftovers = list(tmp_path.glob(".last.ckpt.tmp-*"))
    assert leftovers, "the half-written temporary should be there: the kill happened mid-write"
    checkpoint = AtomicCheckpointIO().load_checkpoint(path, weights_only=True)
    assert checkpoint["step"] == 1 and torch.equal(checkpoint["w"], torch.ones(1000))
    AtomicCheckpointIO().save_checkpoint({"step": 3}, path)
    assert AtomicCheckpointIO().load_checkpoint(path, weights_only=True)["step"] == 3
    AtomicCheckpointIO().remove_checkpoint(path)  # removing a checkpoint also removes its stale temporaries
    assert not path.exists() and not list(tmp_path.glob(".last.ckpt.tmp-*"))


def test_resume_with_another_world_size_or_strategy_is_rejected_with_the_fix():
    entry = rank_state.pack("olga", [rank_state.to_bytes({"x": 1}) for _ in range(4)])
    assert rank_state.unpack(entry, strategy="olga", rank=3, world_size=4) == {"x": 1}
    with pytest.raises(ValueError, match=r"written by 4 ranks but this run has 2; .*same world size \(4"):
        rank_state.unpack(entry, strategy="olga", rank=0, world_size=2)
    with pytest.raises(ValueError, match=r"strategy 'olga' but this run uses 'ef_olga'; resume with strategy='olga'"):
        rank_state.unpack(entry, strategy="ef_olga", rank=0, world_size=4)
