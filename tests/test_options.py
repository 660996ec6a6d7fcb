"""One options object per method: the yaml, the dataclass and the docs' tables agree; typed errors; DDP options.

The options objects of :mod:`lit_commeff.options` are the only place a strategy's options, defaults and
rules live: the Hydra configs (``conf/strategy/*.yaml``) extend their schema and state no default, the
option tables of ``docs/strategies.md`` are generated from them, the strategies and the algorithm take
them, and the CLI prints an :class:`~lit_commeff.options.OptionError` from its fields.
"""

from __future__ import annotations

import dataclasses
import inspect
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from _cli_utils import validate_overrides
from hydra import compose, initialize_config_module
from hydra.errors import HydraException
from hydra.utils import get_class
from omegaconf import OmegaConf

from lit_commeff.algorithms import EFOLGA, OLGA, ProblemOracle
from lit_commeff.cli import schema
from lit_commeff.cli.validate import ConfigError
from lit_commeff.compression import build
from lit_commeff.options import (
    STRATEGY_OPTIONS,
    CompressedOptions,
    DiLoCoOptions,
    EFOLGAOptions,
    GatedDANEOptions,
    OLGAOptions,
    OptionError,
    PowerSGDOptions,
    render_tables,
)
from lit_commeff.problems import synthetic_ridge
from lit_commeff.strategy import (
    CompressedStrategy,
    DiLoCoStrategy,
    EFOLGAStrategy,
    MeteredDDPStrategy,
    OLGAStrategy,
    PowerSGDStrategy,
)
from lit_commeff.strategy.hub import HubAlgorithmStrategy
from lit_commeff.transport import SimulatorTransport

schema.register()
ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "lit_commeff" / "conf" / "strategy"
DOCS = ROOT / "docs" / "strategies.md"


def _compose(overrides: list[str]):
    with initialize_config_module(config_module="lit_commeff.conf", version_base=None):
        return compose(config_name="config", overrides=overrides)


def _validate(overrides: list[str]):
    return validate_overrides(overrides, strategy_choice="olga")


# ----------------------------------------------------------------------------------- yaml, dataclass, docs
def test_every_strategy_config_is_covered():
    assert {p.stem for p in CONF.glob("*.yaml")} == {*STRATEGY_OPTIONS, "ddp"}
    assert (ROOT / "conf").resolve() == (ROOT / "lit_commeff" / "conf").resolve()  # one tree: conf/ links to it


@pytest.mark.parametrize("name", sorted(STRATEGY_OPTIONS))
def test_yaml_extends_the_schema_and_restates_no_default(name):
    raw = OmegaConf.load(CONF / f"{name}.yaml")
    assert list(raw.defaults) == [f"schema/{name}@_here_", "_self_"]
    options = STRATEGY_OPTIONS[name]
    target = get_class(raw._target_)
    assert target.options_cls is options
    for key in raw:
        if key in ("defaults", "_target_"):
            continue
        assert key in options.names(), f"{name}.yaml: {key} is not a field of {options.__name__}"
        assert OmegaConf.is_interpolation(raw, key), (
            f"{name}.yaml restates {key}={raw[key]!r}: the default lives in {options.__name__}"
        )


@pytest.mark.parametrize("name", sorted(STRATEGY_OPTIONS))
def test_composed_config_holds_the_dataclass_fields_and_defaults(name):
    node = _compose([f"strategy={name}"]).strategy
    options = STRATEGY_OPTIONS[name]
    assert list(node) == ["_target_", *options.names()]
    raw = OmegaConf.load(CONF / f"{name}.yaml")
    for f in dataclasses.fields(options):
        if f.name not in raw:  # interpolated keys (compressor, seed) come from the top-level config
            assert node[f.name] == f.default, f"strategy={name}: {f.name}"


def test_overrides_sweep_values_and_unknown_keys():
    assert _compose(["strategy=olga", "strategy.theta=0.5"]).strategy.theta == 0.5
    for theta in (0.25, 0.5):  # what `lit-commeff -m strategy=olga,ef_olga strategy.theta=0.25,0.5` composes per job
        for name in ("olga", "ef_olga"):
            assert _compose([f"strategy={name}", f"strategy.theta={theta}"]).strategy.theta == theta
    with pytest.raises(HydraException, match=r"strategy\.foo") as info:
        _compose(["strategy.foo=1"])
    assert "Key 'foo' not in 'OLGAOptionsSchema'" in str(info.value.__cause__)
    with pytest.raises(HydraException, match=r"strategy\.theta=abc") as info:
        _compose(["strategy.theta=abc"])
    assert "could not be converted to Float" in str(info.value.__cause__)
    with pytest.raises(ConfigError, match=r"strategy\.thetta: .*did you mean strategy\.theta"):
        _validate(["+strategy.thetta=1"])


def test_docs_tables_are_the_generated_ones():
    text = DOCS.read_text()
    assert render_tables(text) == text, "regenerate: python -m lit_commeff.cli.schema docs/strategies.md"
    for name in STRATEGY_OPTIONS:
        assert any(name in line.split() for line in text.splitlines() if line.startswith("<!-- options:")), name
    block = text.split("<!-- options: olga ef_olga -->\n")[1].split("<!-- /options -->")[0]
    rows = block.splitlines()[2:]  # after the header and its rule
    assert [row.split("|")[1].strip(" `") for row in rows] == list(OLGAOptions.names())  # one row per option
    assert "| `accelerate` | OLGA: `False`; EF-OLGA: `True` |" in text
    assert "| `inner_steps` | `50` |" in text and "| `theta` | `1.0` |" in text


# ----------------------------------------------------------------------------------- defaults live in the options
@pytest.mark.parametrize(
    "cls",
    [HubAlgorithmStrategy, OLGAStrategy, EFOLGAStrategy, CompressedStrategy, DiLoCoStrategy, PowerSGDStrategy, OLGA],
)
def test_constructors_state_no_option_or_default(cls):
    parameters = set(inspect.signature(cls.__init__).parameters)
    assert not parameters & set(cls.options_cls.names()), parameters


def test_strategies_and_algorithm_take_the_options_object():
    assert OLGAStrategy().options == OLGAOptions() and EFOLGAStrategy().options == EFOLGAOptions()
    assert (OLGAStrategy().theta, EFOLGAStrategy().accelerate) == (1.0, True)  # fields read as attributes
    options = OLGAOptions(theta=0.5, local_steps=3)
    strategy = OLGAStrategy(options=options, start_method="fork")
    assert strategy.options is options and strategy.local_steps == 3
    assert OLGAStrategy(theta=0.5, local_steps=3).options == options
    assert CompressedStrategy(alpha=0.5, compressor="randk", compressor_options={"ratio": 0.1}).options.alpha == 0.5
    assert DiLoCoStrategy(options=DiLoCoOptions(inner_steps=7)).inner_steps == 7
    assert PowerSGDStrategy(rank=2).matrix_approximation_rank == 2 == PowerSGDStrategy().options.rank + 1
    problem = synthetic_ridge(workers=3, n=20, dim=6, seed=0)
    transport = SimulatorTransport(num_workers=3, dim=6)
    x0 = torch.zeros(6, dtype=torch.float64)
    opts = EFOLGAOptions(compressor=build("topk", k=2), theta=0.1, p=0.5, seed=3)
    alg = EFOLGA(transport=transport, oracle=ProblemOracle(problem, transport.workers), x0=x0, options=opts)
    assert alg.options is opts and alg.theta == 0.1 and alg.seed == 3
    # keywords build the options with the paper's defaults (the simulator's way)
    alg = OLGA(
        transport=transport,
        oracle=ProblemOracle(problem, transport.workers),
        x0=x0,
        compressor=build("randk", k=2),
        delta=1.0,
    )
    assert alg.options == OLGAOptions(compressor=alg.compressor, delta=1.0, **OLGAOptions.paper_defaults)


def test_options_object_and_keywords_do_not_mix():
    with pytest.raises(OptionError, match=r"^theta: theta=0\.5 was given next to options=") as info:
        OLGAStrategy(options=OLGAOptions(), theta=0.5)
    assert info.value.field == "theta"
    with pytest.raises(OptionError, match=r"^options: .* is not OLGAOptions") as info:
        OLGAStrategy(options=EFOLGAOptions())
    assert info.value.field == "options"


# ----------------------------------------------------------------------------------- OptionError
@pytest.mark.parametrize(
    ("cls", "kwargs", "field", "value", "fix"),
    [
        (OLGAOptions, {"theta": -1}, "theta", -1, "it must be in (0, inf)"),
        (OLGAOptions, {"inner_steps": 0}, "inner_steps", 0, "use an integer >= 1"),
        (OLGAOptions, {"output": "z"}, "output", "z", "use 'last'"),
        (OLGAOptions, {"local_steps": 2, "gate": 0.5}, "gate", 0.5, "pass gate=null or local_steps=1"),
        (OLGAOptions, {"local_steps": 2, "same_batch": True}, "same_batch", True, "pass same_batch=false"),
        (OLGAOptions, {"theta": None}, "delta", None, "pass delta, pass theta"),
        (OLGAOptions, {"compressor": "topk", "compressor_options": {"ratio": 0.1}}, "compressor", None, "use EF-OLGA"),
        (EFOLGAOptions, {"compressor": "randk", "compressor_options": {"ratio": 0.1}}, "compressor", None, "use OLGA"),
        (
            OLGAOptions,
            {"dense_compressor_options": {"ratio": 0.1}},
            "dense_compressor_options",
            {"ratio": 0.1},
            "name one",
        ),
        (OLGAOptions, {"nonfinite": "ignore"}, "nonfinite", "ignore", "use 'raise'"),
        (CompressedOptions, {"alpha": 0.5}, "alpha", 0.5, "drop alpha or use an unbiased compressor"),
        (DiLoCoOptions, {"outer_momentum": 1.0}, "outer_momentum", 1.0, "use a number in [0, 1)"),
        (GatedDANEOptions, {"prox_rho": 0.5, "delta": 2.0}, "prox_rho", 0.5, "or drop delta (None)"),
        (GatedDANEOptions, {"prox_rho": 0.5, "theta": 0.1}, "prox_rho", 0.5, "drop prox_rho (None) to keep"),
        (PowerSGDOptions, {"start_iter": 1}, "start_iter", 1, "use start_iter=2 or more"),
    ],
)
def test_option_error_carries_field_value_and_fix(cls, kwargs, field, value, fix):
    with pytest.raises(OptionError) as info:
        cls(**kwargs)
    err = info.value
    assert isinstance(err, ValueError)
    assert err.field == field and fix in err.fix
    if value is not None:  # a compressor's value is the built instance
        assert err.value == value
    assert str(err) == f"{err.field}: {err.what}; {err.fix}."
    if err.what.startswith(f"{field}="):  # a single-option problem: "<field>=<value!r> <problem>"
        assert err.what.startswith(f"{field}={err.value!r} ")
    copy = pickle.loads(pickle.dumps(err))  # crosses process boundaries intact
    assert (copy.field, repr(copy.value), copy.fix, str(copy)) == (err.field, repr(err.value), err.fix, str(err))


def test_options_are_frozen_and_validated_on_replace():
    options = OLGAOptions()
    with pytest.raises(dataclasses.FrozenInstanceError):
        options.theta = 2.0  # type: ignore[misc]
    with pytest.raises(OptionError, match=r"^local_steps: "):
        dataclasses.replace(options, local_steps=0)


# ----------------------------------------------------------------------------------- DDP keyword arguments
@pytest.mark.parametrize("cls", [OLGAStrategy, EFOLGAStrategy, CompressedStrategy, DiLoCoStrategy])
@pytest.mark.parametrize(("name", "value"), [("bucket_cap_mb", 1), ("find_unused_parameters", True)])
def test_strategies_without_ddp_reject_ddp_keywords_by_name(cls, name, value):
    with pytest.raises(
        OptionError, match=rf"^{name}: {name}={value!r} would have no effect: {cls.__name__} does not wrap"
    ) as info:
        cls(**{name: value})
    assert info.value.field == name and "remove" in info.value.fix
    strategy = cls(start_method="fork", process_group_backend="gloo")  # process options are still accepted
    assert strategy._start_method == "fork"


def test_strategies_with_ddp_keep_ddp_keywords():
    assert PowerSGDStrategy(bucket_cap_mb=4)._ddp_kwargs["bucket_cap_mb"] == 4
    assert MeteredDDPStrategy(find_unused_parameters=True)._ddp_kwargs["find_unused_parameters"] is True


# ----------------------------------------------------------------------------------- the CLI message
def test_cli_prints_the_option_error_from_its_fields():
    with pytest.raises(ConfigError) as info:
        _validate(["strategy.local_steps=2", "strategy.gate=0.5"])
    assert str(info.value) == (
        "strategy (olga): gate: gate=0.5 needs a collective after every inner round, which local_steps=2 would put "
        "inside the silent local steps; pass gate=null or local_steps=1; set strategy.gate accordingly."
    )
    with pytest.raises(ConfigError, match=r"^strategy \(olga\): bucket_cap_mb: bucket_cap_mb=4 would have no effect"):
        _validate(["+strategy.bucket_cap_mb=4"])
    with pytest.raises(ConfigError, match=r"^strategy \(olga\): compressor: OLGA needs an unbiased compressor") as info:
        _validate(["compressor=topk"])
    assert str(info.value).endswith("; set compressor accordingly.")  # the top-level group, interpolated


def test_cli_reports_an_option_error_and_starts_nothing(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MASTER_", "RANK", "LOCAL_RANK", "WORLD_SIZE"))}
    env["PYTHONWARNINGS"] = "ignore"
    cmd = [sys.executable, "-m", "lit_commeff.cli.main", "strategy=diloco", "strategy.outer_momentum=1.0"]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert (
        "lit-commeff: error: strategy (diloco): outer_momentum: outer_momentum=1.0 is invalid; use a number in [0, 1) "
        "(the paper uses 0.9; 0 disables momentum); set strategy.outer_momentum accordingly."
    ) in proc.stderr
    assert not (tmp_path / "mlflow.db").exists()


def test_the_methods_seed_drives_a_named_compressors_draws():
    from lit_commeff.compression import RandK
    from lit_commeff.options import OLGAOptions

    assert OLGAOptions(seed=3).built_compressor.seed == 3  # the default RandK
    assert OLGAOptions(seed=3, compressor="randk", compressor_options={"ratio": 0.1}).built_compressor.seed == 3
    explicit = OLGAOptions(seed=3, compressor="randk", compressor_options={"ratio": 0.1, "seed": 5})
    assert explicit.built_compressor.seed == 5
    assert OLGAOptions(seed=3, compressor=RandK(ratio=0.1, seed=9)).built_compressor.seed == 9
    dense = OLGAOptions(seed=4, dense_compressor="powersgd").built_dense_compressor
    assert dense is not None and dense.seed == 4


def test_a_compressor_named_inside_an_option_takes_its_config_defaults():
    """`strategy.downlink_compressor=topk` alone works, as `compressor=topk` does (issue 18): the yaml's defaults."""
    assert EFOLGAOptions(downlink_compressor="topk").built_downlink_compressor.ratio == 0.01
    given_k = EFOLGAOptions(dense_compressor="topk", dense_compressor_options={"k": 5}).built_dense_compressor
    assert (given_k.k, given_k.ratio) == (5, None)  # k given: the config's ratio is not added
    assert OLGAOptions(compressor="qsgd").built_compressor.s == 1
    assert OLGAOptions().built_compressor.ratio == 0.1  # the method's own default is unchanged
