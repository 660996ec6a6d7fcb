"""Wire contract of every compressor: exact bytes, round trips, determinism, serialisation."""

from __future__ import annotations

import math

import pytest
import torch

from lit_commeff.compression import Payload, build
from lit_commeff.compression.topk import index_dtype

SHAPES = [(300,), (20, 37), (3, 4, 50)]
DTYPES = [torch.float32, torch.float16, torch.bfloat16, torch.float64]


def _tensor(shape, dtype, device, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(shape, generator=g) * torch.exp(torch.randn(shape, generator=g))).to(dtype).to(device)


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_roundtrip_and_exact_nbytes(compressor_case, shape, dtype, device):
    name, options = compressor_case
    c = build(name, **options)
    x = _tensor(shape, dtype, device)
    if name == "powersgd" and options.get("reshape", "rows") == "rows" and len(shape) < 2:
        with pytest.raises(ValueError, match=r"not a matrix.*reshape='square'"):
            c.compress(x)
        return
    payload = c.compress(x, step=5, worker=2)
    # nbytes is the wire tensors' bytes, and matches the prediction made before compressing.
    assert payload.nbytes == sum(t.numel() * t.element_size() for t in payload.tensors.values())
    spec = c.wire_spec(shape, dtype)
    assert list(payload.tensors) == list(spec)
    for key, t in payload.tensors.items():
        assert tuple(t.shape) == spec[key].shape, key
        assert t.dtype == spec[key].dtype, key
        assert t.device.type == device
    assert payload.nbytes == c.wire_nbytes(shape, dtype)
    y = c.decompress(payload)
    assert y.shape == x.shape and y.dtype == x.dtype and y.device == x.device
    assert torch.isfinite(y).all()


def test_identity_is_exact(device):
    x = _tensor((17, 3), torch.float32, device)
    c = build("identity")
    assert torch.equal(c.roundtrip(x), x)
    assert c.compress(x).nbytes == x.numel() * 4


def test_randk_sends_only_k_values(device):
    d = 1000
    c = build("randk", k=13)
    payload = c.compress(_tensor((d,), torch.float32, device), step=1, worker=3)
    assert list(payload.tensors) == ["values"]
    assert payload.tensors["values"].numel() == 13
    assert payload.nbytes == 13 * 4  # no indices travel
    assert c.gamma(d) == pytest.approx(d / 13)


def test_randk_ratio_resolution():
    c = build("randk", ratio=0.01)
    assert c.k_for(5761) == 58  # ceil(57.61)
    assert c.k_for(100) == 1
    assert build("randk", ratio=1.0).k_for(10) == 10
    assert build("randk", ratio=0.5).omega(10) == pytest.approx(1.0)


def test_randk_decompress_places_scaled_values(device):
    d, k = 50, 5
    c = build("randk", k=k, seed=3)
    x = _tensor((d,), torch.float64, device)
    y = c.roundtrip(x, step=4, worker=1)
    idx = c.indices(d, step=4, worker=1, device=device)
    assert idx.numel() == k and idx.unique().numel() == k
    mask = torch.zeros(d, dtype=torch.bool, device=device)
    mask[idx] = True
    assert torch.allclose(y[mask], x[mask] * d / k)
    assert (y[~mask] == 0).all()


def test_randk_indices_follow_seed_schedule():
    c = build("randk", k=20)
    a = c.indices(1000, step=1, worker=1)
    assert torch.equal(a, c.indices(1000, step=1, worker=1))
    assert not torch.equal(a, c.indices(1000, step=2, worker=1))
    assert not torch.equal(a, c.indices(1000, step=1, worker=2))
    assert not torch.equal(a, build("randk", k=20, seed=1).indices(1000, step=1, worker=1))
    shared = build("randk", k=20, shared_indices=True)
    assert torch.equal(shared.indices(1000, step=1, worker=1), shared.indices(1000, step=1, worker=7))


def test_randk_index_sampler_is_uniform():
    # Every coordinate should be picked with probability k/d, in both sampling regimes.
    # one case per sampling regime: sorted draws, presence mask, complement, small-d permutation
    for d, k in ((1000, 10), (1000, 300), (1000, 700), (40, 30)):
        c = build("randk", k=k)
        counts = torch.zeros(d)
        draws = 4000
        for step in range(draws):
            counts[c.indices(d, step=step, worker=0)] += 1
        expected = draws * k / d
        sd = math.sqrt(draws * (k / d) * (1 - k / d))
        assert (counts - expected).abs().max() < 5 * sd, (d, k)


def test_shared_index_randk_sums_like_an_allreduce():
    d, workers = 200, 4
    c = build("randk", ratio=0.1, shared_indices=True)
    xs = [_tensor((d,), torch.float32, "cpu", seed=w) for w in range(workers)]
    payloads = [c.compress(x, step=9, worker=w) for w, x in enumerate(xs)]
    summed = Payload(
        tensors={"values": sum(p.tensors["values"] for p in payloads)},
        shape=payloads[0].shape,
        dtype=torch.float32,
        step=9,
        worker=0,
    )
    expected = sum(c.decompress(p) for p in payloads)
    assert torch.allclose(c.decompress(summed), expected, atol=1e-5)


@pytest.mark.parametrize(
    ("d", "dtype"),
    [(256, torch.uint8), (257, torch.uint16), (65536, torch.uint16), (65537, torch.uint32), (2**32 + 1, torch.int64)],
)
def test_topk_index_dtype_is_smallest(d, dtype):
    assert index_dtype(d) == dtype


def test_topk_keeps_largest_magnitudes(device):
    x = torch.tensor([0.1, -5.0, 0.3, 4.0, -0.2, 0.0], device=device)
    c = build("topk", k=2)
    payload = c.compress(x)
    assert payload.tensors["indices"].dtype == torch.uint8
    assert payload.nbytes == 2 * 4 + 2 * 1
    assert torch.equal(c.decompress(payload), torch.tensor([0, -5.0, 0, 4.0, 0, 0], device=device))


def test_qsgd_bits_and_bytes():
    assert build("qsgd", s=1).bits == 2
    assert build("qsgd", s=7).bits == 4
    assert build("qsgd", s=127).bits == 8
    c = build("qsgd", s=7, bucket_size=100)
    # 1000 elements * 4 bits = 500 bytes of levels, 10 bucket norms of 4 bytes.
    assert c.wire_nbytes(1000) == 500 + 40


def test_qsgd_zero_vector_roundtrips_to_zero():
    c = build("qsgd", s=4, bucket_size=8)
    assert torch.equal(c.roundtrip(torch.zeros(30)), torch.zeros(30))


def test_sign_wire_format(device):
    x = torch.tensor([1.0, -2.0, 0.0, 3.0, -4.0, 5.0, -6.0, 7.0, -8.0], device=device)
    c = build("sign")
    payload = c.compress(x)
    assert payload.nbytes == 2 + 4  # ceil(9 / 8) bytes of bits and one float32 scale
    scale = x.abs().mean()
    assert torch.allclose(c.decompress(payload), torch.where(x >= 0, scale, -scale))


def test_cast_has_no_overflow_for_large_values():
    x = torch.tensor([1e6, -3e5, 1.0, 1e-3])
    y = build("fp16").roundtrip(x)
    assert torch.isfinite(y).all()
    # relative precision for values near the largest; far smaller ones may flush below fp16's subnormals
    assert torch.allclose(y, x, rtol=1e-3, atol=1e6 * 2.0**-24)


def test_powersgd_dense_fallback_when_low_rank_saves_nothing():
    c = build("powersgd", rank=4)
    assert c.is_dense((6, 5)) and c.beta((6, 5)) == 1.0
    x = torch.randn(6, 5)
    payload = c.compress(x)
    assert list(payload.tensors) == ["values"]
    assert torch.equal(c.decompress(payload), x)
    assert not c.is_dense((100, 80))
    assert c.wire_nbytes((100, 80)) == (100 + 80) * 4 * 4


def test_powersgd_recovers_low_rank_matrix_after_warm_up():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(60, 3, generator=g, dtype=torch.float64) @ torch.randn(3, 40, generator=g, dtype=torch.float64)
    c = build("powersgd", rank=3)
    errors = [float((c.roundtrip(a, step=s) - a).norm() / a.norm()) for s in range(4)]
    assert errors[-1] < 1e-10


def test_powersgd_warm_start_state_roundtrips():
    a = torch.randn(30, 20)
    c1 = build("powersgd", rank=2)
    c1.compress(a, worker=1, key="w")
    c2 = build("powersgd", rank=2)
    c2.load_state_dict(c1.state_dict())
    assert torch.equal(c1.compress(a, worker=1, key="w").tensors["p"], c2.compress(a, worker=1, key="w").tensors["p"])
    # a cold-started compressor produces something else once the warm start has moved
    assert not torch.equal(
        build("powersgd", rank=2).compress(a, worker=1, key="w").tensors["q"],
        c1.compress(a, worker=1, key="w").tensors["q"],
    )


def test_powersgd_zero_input_keeps_warm_start():
    c = build("powersgd", rank=1)
    a = torch.randn(20, 10)
    c.compress(a)
    before = c.state_dict()["warm_start"]
    assert torch.equal(c.roundtrip(torch.zeros(20, 10)), torch.zeros(20, 10))
    after = c.state_dict()["warm_start"]
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_same_schedule_gives_same_output(compressor_case, device):
    name, options = compressor_case
    x = _tensor((40, 25), torch.float32, device)
    a = build(name, **options).compress(x, step=3, worker=1, key="layer")
    b = build(name, **options).compress(x, step=3, worker=1, key="layer")
    for key in a.tensors:
        assert torch.equal(a.tensors[key], b.tensors[key]), key


@pytest.mark.parametrize("name", ["randk", "qsgd"])
def test_different_steps_give_different_draws(name):
    options = {"ratio": 0.1} if name == "randk" else {"s": 2}
    c = build(name, **options)
    x = _tensor((500,), torch.float32, "cpu")
    assert not torch.equal(c.roundtrip(x, step=1), c.roundtrip(x, step=2))
    assert not torch.equal(c.roundtrip(x, step=1, worker=0), c.roundtrip(x, step=1, worker=1))


def test_payload_bytes_roundtrip(compressor_case):
    name, options = compressor_case
    c = build(name, **options)
    x = _tensor((24, 30), torch.bfloat16, "cpu")
    payload = c.compress(x, step=2, worker=1)
    buffer = payload.to_bytes()
    assert buffer.dtype == torch.uint8 and buffer.numel() == payload.nbytes
    rebuilt = c.payload_from_bytes(buffer, shape=x.shape, dtype=x.dtype, step=2, worker=1)
    assert torch.equal(c.decompress(rebuilt), c.decompress(payload))


def test_payload_from_bytes_rejects_wrong_size():
    c = build("topk", k=3)
    with pytest.raises(ValueError, match=r"expected 15 uint8 bytes"):
        c.payload_from_bytes(torch.zeros(10, dtype=torch.uint8), shape=(100,), dtype=torch.float32)


def test_hydra_target_instantiation():
    from hydra.utils import instantiate

    c = instantiate({"_target_": "lit_commeff.compression.RandK", "ratio": 0.01, "seed": 4})
    assert c.k_for(1000) == 10 and c.seed == 4
    c = instantiate({"_target_": "lit_commeff.compression.build", "_args_": ["topk"], "k": 5})
    assert c.k_for(1000) == 5


@pytest.mark.parametrize(
    ("d", "k"), [(1000, 10), (1000, 300), (1000, 500), (1000, 501), (1000, 999), (1000, 1000), (100, 50), (10**6, 1)]
)
def test_randk_indices_are_k_distinct_sorted(d, k):
    idx = build("randk", k=k).indices(d, step=3, worker=2)
    assert idx.numel() == k
    assert idx.dtype == torch.int64
    assert bool((idx[1:] > idx[:-1]).all())  # sorted and distinct
    assert int(idx.min()) >= 0 and int(idx.max()) < d


def test_vectorised_splitmix_matches_scalar_reference():
    from lit_commeff.compression.seeding import _MASK64, _splitmix64, splitmix64

    seeds = [0, 1, 12345, 2**62 + 17]
    got = splitmix64(torch.tensor(seeds).reshape(-1, 1), torch.arange(5))
    for r, seed in enumerate(seeds):
        for j in range(5):
            # scalar SplitMix64 of the j-th state: seed + (j + 1) * golden, before the golden increment
            expected = _splitmix64((seed + j * 0x9E3779B97F4A7C15) & _MASK64)
            assert int(got[r, j]) & _MASK64 == expected


@pytest.mark.parametrize(
    ("name", "options"),
    [
        ("randk", {"k": 3}),
        ("randk", {"ratio": 0.7}),
        ("randk", {"k": 5, "shared_indices": True}),
        ("topk", {"k": 4}),
        ("identity", {}),
        ("qsgd", {"s": 2}),
        ("sign", {}),
    ],
)
@pytest.mark.parametrize("d", [30, 300])
def test_block_roundtrip_matches_each_worker_alone(name, options, d):
    c = build(name, **options)
    block = torch.randn(6, d, generator=torch.Generator().manual_seed(d), dtype=torch.float64)
    workers = [1, 2, 3, 5, 8, 13]
    out, sizes = c.roundtrip_block(block, step=4, workers=workers, key="g")
    for r, w in enumerate(workers):
        payload = c.compress(block[r], step=4, worker=w, key="g")
        assert torch.allclose(out[r], c.decompress(payload), rtol=1e-12, atol=1e-14), (name, w)
        assert sizes[r] == payload.nbytes


def test_block_roundtrip_rejects_mismatched_workers():
    with pytest.raises(ValueError, match=r"R = len\(workers\) = 2"):
        build("randk", k=1).roundtrip_block(torch.zeros(3, 4), workers=[0, 1])
