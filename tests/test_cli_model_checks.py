"""Checks that need the model run before launch: the CLI builds the model once and checks the compressors against it.

Each case composes and validates in this process (nothing is started): a ``k`` above the number of trained
parameters, for the top-level compressor and for one named inside a strategy option (given as a mapping,
``strategy.dense_compressor_options={k:...}``), a low-rank compressor that cannot take the flat parameter
vector, and Trainer settings the hub strategies reject in their ``setup`` on every rank.
"""

from __future__ import annotations

import pytest
from _cli_utils import validate_overrides

from lit_commeff.cli import schema
from lit_commeff.cli.validate import ConfigError

schema.register()
#: A small synthetic table: the model (and so the parameter count) is the same, the data loads faster.
SMALL = ["recipe.data.synthetic_rows=600", "recipe.data.batch_size=32"]
#: Trained parameters of the finance_credit model on its synthetic table (layers built from the data).
CREDIT_PARAMETERS = 6049


@pytest.mark.parametrize(
    ("overrides", "starts", "says"),
    [
        pytest.param(
            ["compressor=randk", "compressor.k=100000", "compressor.ratio=null"],
            "compressor.k: compressor.k=100000 is more than the 6,049 trained parameters of recipe.model",
            ("set compressor.k to at most 6049", "compressor.k=null compressor.ratio=0.01"),
            id="randk-k-above-d",
        ),
        pytest.param(
            ["strategy=ef_olga", "compressor=topk", "compressor.k=6050", "compressor.ratio=null"],
            "compressor.k: compressor.k=6050 is more than the 6,049",
            ("strategy=test compresses as one vector",),
            id="topk-k-one-above-d",
        ),
        pytest.param(
            ["strategy.dense_compressor=topk", "strategy.dense_compressor_options={k:100000}"],
            "strategy.dense_compressor_options.k: strategy.dense_compressor_options.k=100000 is more than",
            ("set strategy.dense_compressor_options={k:60} (k at most 6049)",),
            id="option-compressor-mapping-k-above-d",
        ),
        pytest.param(
            ["strategy=ef_olga", "compressor=powersgd", "compressor.reshape=rows"],
            "compressor: powersgd: a tensor of shape (6049,) is not a matrix",
            ("reshape='square'", "as one vector"),
            id="lowrank-rows-on-the-flat-vector",
        ),
        pytest.param(
            ["+trainer.accumulate_grad_batches=2"],
            "trainer.accumulate_grad_batches: strategy=test (OLGAStrategy) does not support",
            ("raise recipe.data.batch_size instead",),
            id="hub-accumulate-grad-batches",
        ),
    ],
)
def test_a_model_dependent_error_is_found_before_launch(overrides: list[str], starts: str, says: tuple[str, ...]):
    with pytest.raises(ConfigError) as caught:
        validate_overrides([*SMALL, *overrides])
    message = str(caught.value)
    assert message.startswith(starts), message
    assert "\n" not in message
    for text in says:
        assert text in message, f"{text!r} not in: {message}"


def test_k_up_to_the_parameter_count_and_a_mapping_option_are_accepted():
    validate_overrides([*SMALL, "compressor=randk", f"compressor.k={CREDIT_PARAMETERS}", "compressor.ratio=null"])
    plan = validate_overrides([*SMALL, "strategy.dense_compressor=topk", "strategy.dense_compressor_options={k:50}"])
    assert plan.strategy.options.built_dense_compressor.k == 50
