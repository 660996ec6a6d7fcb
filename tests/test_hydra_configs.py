"""Every compressor config in conf/compressor instantiates through Hydra and matches the registry."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from lit_commeff.compression import Compressor, available

CONF = Path(__file__).resolve().parents[1] / "conf" / "compressor"
FILES = sorted(CONF.glob("*.yaml"))


def test_every_compressor_has_a_config():
    assert {f.stem for f in FILES} >= set(available(aliases=False)) - {"cast"} | {"fp16", "bf16"}


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.stem)
def test_config_instantiates(path):
    # As composed by the CLI: under a root config whose `seed` drives the compressor's draws.
    root = OmegaConf.create({"seed": 7, "compressor": OmegaConf.load(path)})
    compressor = instantiate(root.compressor)
    assert isinstance(compressor, Compressor)
    if "seed" in root.compressor:
        assert compressor.seed == 7
    x = torch.randn(64, 32)
    y = compressor.roundtrip(x)
    assert y.shape == x.shape


def test_cli_style_override():
    cfg = OmegaConf.merge(OmegaConf.load(CONF / "randk.yaml"), OmegaConf.from_dotlist(["ratio=0.5", "seed=0"]))
    assert instantiate(cfg).k_for(100) == 50
    bad = OmegaConf.merge(OmegaConf.load(CONF / "randk.yaml"), OmegaConf.from_dotlist(["ratio=1.5", "seed=0"]))
    with pytest.raises(Exception, match=r"randk\.ratio: ratio=1\.5"):
        instantiate(bad)
