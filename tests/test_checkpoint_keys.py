"""Checkpoint folders keyed by every setting a checkpoint depends on; a mismatched resume is one line before launch.

The default ``checkpoint_dir`` ends in ``{key}``, a hash of the recipe (data path, model), the world size and
the strategy with its options: runs that cannot resume each other never share a folder, and rerunning the
same command (other Trainer limits allowed) finds its own. A checkpoint written under other settings, or
``ckpt_path=last`` where only another setting's folder has one, stops with one line naming what differs,
instead of a size-mismatch traceback on every rank.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from hydra import compose, initialize_config_module
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf, open_dict

from lit_commeff.cli import schema
from lit_commeff.cli.validate import ConfigError, check_checkpoint, check_resume
from lit_commeff.cli.worker import RUN_KEY_ENTRY, RUN_KEY_FILE, RecordRunKey, checkpoint_dir, run_key

schema.register()
PREFIX = "lit-commeff: error: "


def _cfg(*overrides: str) -> DictConfig:
    """The resolved config ``lit-commeff`` would run (composed here; nothing checked or started)."""
    with initialize_config_module(config_module="lit_commeff.conf", version_base=None):
        cfg = compose(config_name="config", overrides=list(overrides), return_hydra_config=True)
        HydraConfig.instance().set_config(cfg)
        with open_dict(cfg):
            del cfg["hydra"]
        return OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))


def _checkpoint(path: Path, key: dict[str, Any] | None, **extra: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    content = {"state_dict": {}, **extra}
    if key is not None:
        content[RUN_KEY_ENTRY] = json.dumps(key, sort_keys=True, default=str)
    torch.save(content, path)
    return path


def test_the_default_folder_is_keyed_by_what_a_checkpoint_depends_on(tmp_path: Path) -> None:
    base = checkpoint_dir(_cfg(), tmp_path)
    assert "{key}" not in str(base) and base.name.startswith("finance_credit-olga-None-s0-")
    for same in (["trainer.max_steps=10"], ["trainer.max_epochs=7", "checkpoint_every_n_steps=5"]):
        assert checkpoint_dir(_cfg(*same), tmp_path) == base, same
    changed = [
        ["recipe.data.path=/data/credit.csv"],
        ["recipe.model.hidden=[8]"],
        ["trainer.devices=4"],
        ["strategy.theta=0.5"],
        ["compressor=randk", "compressor.ratio=0.05"],
    ]
    folders = {checkpoint_dir(_cfg(*overrides), tmp_path) for overrides in changed}
    assert len(folders) == len(changed) and base not in folders
    assert all(f.parent == base.parent for f in folders)


def test_a_checkpoint_of_other_settings_is_one_line_naming_them(tmp_path: Path) -> None:
    cfg = _cfg(f"checkpoint_dir={tmp_path / 'ckpt'}", "ckpt_path=last")
    other = run_key(_cfg("recipe.model.hidden=[8]", "trainer.devices=4"))
    _checkpoint(tmp_path / "ckpt" / "last.ckpt", other)
    with pytest.raises(ConfigError) as caught:
        check_resume(cfg, tmp_path / "ckpt")
    message = str(caught.value)
    assert message.startswith("ckpt_path: the checkpoint ") and "was written with other settings" in message
    assert "recipe.model.hidden=[8] (this run: [64, 64])" in message
    assert "world_size=4 (this run: 2)" in message
    assert "start fresh without ckpt_path" in message and "\n" not in message


def test_a_checkpoint_of_the_same_settings_resumes(tmp_path: Path) -> None:
    cfg = _cfg(f"checkpoint_dir={tmp_path / 'ckpt'}", "ckpt_path=last")
    saved: dict[str, Any] = {"state_dict": {}}
    RecordRunKey(run_key(cfg), tmp_path / "ckpt").on_save_checkpoint(None, None, saved)  # type: ignore[arg-type]
    (tmp_path / "ckpt").mkdir()
    torch.save(saved, tmp_path / "ckpt" / "last.ckpt")
    check_resume(cfg, tmp_path / "ckpt")  # no error
    check_checkpoint(_cfg("trainer.max_steps=99"), tmp_path / "ckpt" / "last.ckpt")


def test_an_older_checkpoint_is_checked_by_world_size_and_weight_shapes(tmp_path: Path) -> None:
    cfg = _cfg()
    path = _checkpoint(tmp_path / "a.ckpt", None, lit_commeff={"world_size": 4, "strategy": "olga"})
    with pytest.raises(ConfigError, match=r"written by 4 processes, this run has 2"):
        check_checkpoint(cfg, path)
    model = torch.nn.Linear(3, 2)
    path = _checkpoint(tmp_path / "b.ckpt", None, state_dict={"weight": torch.zeros(5, 3)})
    with pytest.raises(ConfigError, match=r"holds weight of shape \(5, 3\), this run's recipe.model has \(2, 3\)"):
        check_checkpoint(cfg, path, model=model)


def test_last_with_only_another_settings_folder_names_it(tmp_path: Path) -> None:
    cfg = _cfg("ckpt_path=last")
    mine = checkpoint_dir(cfg, tmp_path)
    other_cfg = _cfg("recipe.data.batch_size=32")
    theirs = checkpoint_dir(other_cfg, tmp_path)
    _checkpoint(theirs / "last.ckpt", run_key(other_cfg))
    (theirs / RUN_KEY_FILE).write_text(json.dumps(run_key(other_cfg), default=str))
    with pytest.raises(ConfigError) as caught:
        check_resume(cfg, mine)
    message = str(caught.value)
    assert f"{str(theirs)!r} holds one written with other settings" in message
    assert "recipe.data.batch_size=32 (this run: 64)" in message


def test_the_cli_rejects_a_mismatched_resume_before_launch(tmp_path: Path) -> None:
    key = run_key(_cfg())
    key["world_size"] = 4
    _checkpoint(tmp_path / "ckpt" / "last.ckpt", key)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MASTER_", "RANK", "LOCAL_RANK", "WORLD_SIZE"))}
    env.pop("HYDRA_FULL_ERROR", None)
    env["PYTHONWARNINGS"] = "ignore"
    cmd = [sys.executable, "-m", "lit_commeff", f"checkpoint_dir={tmp_path / 'ckpt'}", "ckpt_path=last"]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 2, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith(PREFIX)]
    assert len(errors) == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert "world_size=4 (this run: 2)" in errors[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]  # no outputs/, no MLflow store
