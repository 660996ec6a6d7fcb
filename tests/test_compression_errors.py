"""Every bad input gets a ValueError that names the parameter, the value and the valid range."""

from __future__ import annotations

import pytest
import torch

from lit_commeff.compression import build

BAD_OPTIONS = [
    ("randk", {"ratio": 0.0}, r"randk\.ratio: ratio=0\.0 .* \(0, 1\]"),
    ("randk", {"ratio": -0.5}, r"randk\.ratio: ratio=-0\.5 .* \(0, 1\]"),
    ("randk", {"ratio": 1.5}, r"randk\.ratio: ratio=1\.5 .* \(0, 1\]"),
    ("randk", {"ratio": float("nan")}, r"randk\.ratio: ratio=nan"),
    ("topk", {"ratio": 2}, r"topk\.ratio: ratio=2 .* \(0, 1\]"),
    ("randk", {"k": 0}, r"randk\.k: k=0 .* >= 1"),
    ("topk", {"k": -3}, r"topk\.k: k=-3 .* >= 1"),
    ("randk", {"k": 2.5}, r"randk\.k: k=2\.5 .* integer >= 1"),
    ("randk", {}, r"exactly one of k .* or ratio"),
    ("topk", {"k": 3, "ratio": 0.1}, r"exactly one of k .* or ratio"),
    ("qsgd", {"s": 0}, r"qsgd\.s: s=0 .* \[1, 32767\]"),
    ("qsgd", {"s": 40000}, r"qsgd\.s: s=40000 .* \[1, 32767\]"),
    ("qsgd", {"bucket_size": 0}, r"qsgd\.bucket_size: bucket_size=0 .* >= 1"),
    ("powersgd", {"rank": 0}, r"powersgd\.rank: rank=0 .* >= 1"),
    ("powersgd", {"reshape": "cube"}, r"powersgd\.reshape: reshape='cube' .* \['rows', 'square'\]"),
    ("cast", {"dtype": "fp8"}, r"cast\.dtype: dtype='fp8' .* \['bf16', 'fp16'\]"),
    ("randk", {"ratoi": 0.1}, r"compressor 'randk': .*ratoi"),
]


@pytest.mark.parametrize(("name", "options", "message"), BAD_OPTIONS)
def test_bad_options(name, options, message):
    with pytest.raises(ValueError, match=message):
        build(name, **options)


def test_unknown_name_lists_known_ones():
    with pytest.raises(ValueError, match=r"unknown name 'randkk'.*identity.*qsgd.*randk.*topk"):
        build("randkk")


def test_k_larger_than_dimension():
    c = build("randk", k=11)
    with pytest.raises(ValueError, match=r"randk\.k: k=11 exceeds the tensor dimension d=10; use 1 <= k <= 10"):
        c.compress(torch.ones(10))
    with pytest.raises(ValueError, match=r"topk\.k: k=11 exceeds .* d=10"):
        build("topk", k=11).wire_spec(10)


@pytest.mark.parametrize("name", ["identity", "randk", "topk", "qsgd", "sign", "fp16", "bf16", "powersgd"])
def test_empty_tensor(name):
    c = build(name, **({"k": 1} if name in ("randk", "topk") else {}))
    with pytest.raises(ValueError, match=r"x: empty tensor of shape \(0,\)"):
        c.compress(torch.empty(0))


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
@pytest.mark.parametrize("name", ["identity", "randk", "topk", "qsgd", "sign", "fp16", "bf16"])
def test_non_finite_values(name, bad):
    c = build(name, **({"k": 1} if name in ("randk", "topk") else {}))
    x = torch.ones(20)
    x[4] = bad
    with pytest.raises(ValueError, match=r"x: 1 non-finite value\(s\) \(NaN/Inf\)"):
        c.compress(x)


def test_non_finite_check_can_be_disabled():
    x = torch.ones(8)
    x[0] = float("nan")
    assert build("identity", check_finite=False).compress(x).nbytes == 32


def test_integer_tensor_rejected():
    with pytest.raises(ValueError, match=r"x: dtype torch.int64 is not supported by topk; pass one of"):
        build("topk", k=1).compress(torch.arange(10))


def test_wrong_constant_for_family():
    with pytest.raises(TypeError, match=r"biased.*beta\(d\)"):
        build("topk", k=1).omega(10)
    with pytest.raises(TypeError, match=r"unbiased.*omega\(d\)"):
        build("randk", k=1).beta(10)


def test_stateless_compressor_rejects_state():
    with pytest.raises(ValueError, match=r"stateless"):
        build("topk", k=1).load_state_dict({"warm_start": {}})
    with pytest.raises(ValueError, match=r"unknown state keys"):
        build("powersgd").load_state_dict({"q": {}})


def test_an_unknown_option_is_named_with_the_compressors_options():
    from lit_commeff.compression import build

    with pytest.raises(ValueError, match=r"compressor 'topk': no option 'foo'; its options are k, ratio"):
        build("topk", k=2, foo=1)
