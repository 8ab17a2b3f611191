"""The formulation policy (`jax_gridsample._policy`): every plan reachable and parity-tested.

Each formulation is run with an explicit plan and checked against the torch
fixtures (values and both gradients); the rules that pick them are checked at
their thresholds.
"""

from __future__ import annotations

import functools

import jax
import numpy as np
import pytest
from conftest import FIXTURES, as_jax, assert_close, load_cases, quick_apart

from jax_gridsample import _policy, multi_scale_roi_align, roi_align
from jax_gridsample._core import Config
from jax_gridsample._grid_sample import _grid_sample

_, MATRIX, MATRIX_ARRAYS = load_cases("grid_sample.npz")
# float32, N > 1 and C > 1, exact pixel positions: every mode x padding x align x rank.
CASES = [i for i, c in enumerate(MATRIX) if c["id"].endswith("-float32-s1-pixel")]
PLANS = [_policy.Plan(f, "loop") for f in _policy.FORWARDS]
FORMULATIONS_QUICK = ("4d-bilinear-zeros-ac0", "4d-bicubic-zeros-ac0", "5d-bilinear-border-ac1")


@pytest.mark.parametrize(
    "indices",
    quick_apart(
        CASES,
        family=lambda i: MATRIX[i]["id"].rsplit("-", 5)[0],  # rank and mode
        quick=lambda i: MATRIX[i]["id"].startswith(FORMULATIONS_QUICK),
        ident=lambda i: MATRIX[i]["id"],
    ),
)
def test_every_formulation_matches_torch(indices):
    """Each value formulation and the loop's gradients, both layouts, every case of
    ``indices``: one program."""

    @jax.jit
    def run(arrays):
        got = []
        for i, (x, g, ct) in zip(indices, arrays, strict=True):
            case = MATRIX[i]
            options = (case["mode"], case["padding_mode"], case["align_corners"])
            for last in (False, True):
                config = Config(*options, last)
                xl, ctl = _move(x, last), _move(ct, last)
                values = [_grid_sample(xl, g, config, plan) for plan in PLANS]
                f = lambda a, b, config=config: _grid_sample(a, b, config, PLANS[0])  # noqa: E731
                got.append((values, jax.vjp(f, xl, g)[1](ctl)))
        return got

    data = [MATRIX_ARRAYS(i) for i in indices]
    names = ("input", "grid", "cotangent")
    results = iter(run([[as_jax(d[k], "float32") for k in names] for d in data]))
    for i, arrays in zip(indices, data, strict=True):
        exact = MATRIX[i]["mode"] == "nearest"
        for last in (False, True):
            values, (gx, gg) = next(results)
            what = f"{MATRIX[i]['id']} last={last}"
            for plan, value in zip(PLANS, values, strict=True):
                want = _move(arrays["out"], last)
                assert_close(value, want, "float32", what=f"{what} {plan}", exact=exact)
            grad_input = _move(arrays["grad_input"], last)
            assert_close(gx, grad_input, "float32", what=f"{what} grad_input")
            assert_close(gg, arrays["grad_grid"], "float32", what=f"{what} grad_grid", exact=exact)


def test_grid_sample_plan_follows_the_measured_rules(monkeypatch):
    monkeypatch.setattr(_policy, "stores_few_channels", lambda: False)  # as with AVX-512
    plan = _policy.grid_sample_plan
    assert plan("bilinear", 2, 1, False) == ("fused", "loop")
    assert plan("bilinear", 2, 7, False).value == "fused"
    assert plan("bilinear", 2, 8, False).value == "fused_stored"  # C >= 2K = 8
    assert plan("bilinear", 2, 2048, False).value == "fused_stored"  # bilinear never re-lays out
    assert plan("bilinear", 2, 8, True).value == "fused_stored"
    assert plan("bicubic", 2, 31, False).value == "fused"
    assert plan("bicubic", 2, 32, False).value == "fused_stored"
    assert plan("bicubic", 2, 63, False).value == "fused_stored"
    assert plan("bicubic", 2, 64, False).value == "loop"
    assert plan("bicubic", 2, 1, True).value == "loop"
    assert plan("bilinear", 3, 63, False).value == "fused_stored"
    assert plan("bilinear", 3, 64, False).value == "loop"
    assert plan("nearest", 2, 1, True) == ("fused", "loop")  # a single gather
    assert plan("nearest", 2, 1, False).value == "fused"
    assert plan("nearest", 2, 2, False).value == "fused_stored"  # C >= 2K = 2
    assert plan("nearest", 2, 2, True).value == "fused_stored"
    assert plan("nearest", 3, 4096, False).value == "fused_stored"  # never re-lays out


def test_grid_sample_plan_stores_from_two_channels_without_avx512(monkeypatch):
    monkeypatch.setattr(_policy, "stores_few_channels", lambda: True)
    plan = _policy.grid_sample_plan
    assert plan("bilinear", 2, 1, False) == ("fused", "loop")
    assert plan("bilinear", 2, 2, False) == ("fused_stored", "loop")
    assert plan("bilinear", 2, 2, True).value == "fused_stored"
    assert plan("bicubic", 2, 1, False).value == "fused"
    assert plan("bicubic", 2, 2, False).value == "fused_stored"
    assert plan("bicubic", 2, 63, False).value == "fused_stored"
    assert plan("bicubic", 2, 64, False).value == "loop"
    assert plan("bicubic", 2, 2, True).value == "loop"
    assert plan("bilinear", 3, 2, False).value == "fused_stored"
    assert plan("bilinear", 3, 2, True).value == "loop"
    assert plan("nearest", 2, 1, False).value == "fused"
    assert plan("nearest", 2, 2, False).value == "fused_stored"


def test_separable_plan_without_avx512_expands_once_the_passes_read_as_much(monkeypatch):
    monkeypatch.setattr(_policy, "stores_few_channels", lambda: True)
    plan = _policy.separable_plan
    assert _policy.SEPARABLE_EXPANDED_MIN_READS_STORED == 1
    # 512 -> 256: 512 * 256 * 2 + 256 * 256 * 2 = 1.5 * (256 * 256 * 4) reads.
    assert _policy.taps_reads((512, 512), (256, 256), 2) == 3 * 2**17
    assert plan("bilinear", (512, 512), (256, 256), 3, False)[0] == "expanded"
    assert plan("bilinear", (512, 512), (256, 256), 1, False)[0] == "taps"  # fused, not stored
    # 7x7 -> 4x4: 7 * 4 * 2 + 4 * 4 * 2 = 88 >= 16 * 4.
    assert _policy.taps_reads((7, 7), (4, 4), 2) == 88
    assert plan("bilinear", (7, 7), (4, 4), 2, False)[0] == "expanded"
    assert plan("bilinear", (7, 7), (4, 4), 2, True)[0] == "expanded"
    # 6x6 -> 6x6: 6 * 6 * 2 + 6 * 6 * 2 = 144 = 36 * 4; 6x6 -> 7x7: 84 + 98 = 182 < 196.
    assert _policy.taps_reads((6, 6), (6, 6), 2) == 144
    assert plan("bilinear", (6, 6), (6, 6), 2, False)[0] == "expanded"
    assert _policy.taps_reads((6, 6), (7, 7), 2) == 182
    assert plan("bilinear", (6, 6), (7, 7), 2, False)[0] == "taps_rows"
    assert plan("bilinear", (64, 64), (128, 128), 64, False)[0] == "taps_rows"  # 0.75x the reads
    # Trilinear channels-last samples the expanded grid by the loop: the rule of 4.
    assert plan("bilinear", (8, 8, 8), (4, 4, 4), 2, True)[0] == "taps"


def test_cpu_has_avx512_reads_linux_cpu_flags(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    header = "processor\t: 0\nmodel name\t: AMD EPYC\n"
    cpuinfo.write_text(header + "flags\t\t: fpu avx2 avx512f avx512bw\n")
    assert _policy.cpu_has_avx512(str(cpuinfo)) is True
    cpuinfo.write_text(header + "flags\t\t: fpu avx avx2 avx512_vnni_like\n")
    assert _policy.cpu_has_avx512(str(cpuinfo)) is False
    cpuinfo.write_text("processor\t: 0\nFeatures\t: fp asimd\n")  # no x86 flags (arm64)
    assert _policy.cpu_has_avx512(str(cpuinfo)) is None
    assert _policy.cpu_has_avx512(str(tmp_path / "missing")) is None


def test_separable_plan_follows_the_measured_rules(monkeypatch):
    monkeypatch.setattr(_policy, "stores_few_channels", lambda: False)  # as with AVX-512
    plan = _policy.separable_plan
    limit = _policy.SEPARABLE_MATMUL_MAX_SIZE
    most = _policy.SEPARABLE_MATMUL_MAX_MACS_PER_CORNER
    assert plan("bilinear", (28, 28), (300, 500), 1, False) == ("taps_rows", "matmul")  # masks
    assert plan("bicubic", (limit, limit), (128, 128), 3, False) == ("taps_rows", "matmul")
    # The value: a matmul on the last axis of a channels-first input up to the limit.
    assert plan("bilinear", (limit + 1, 8), (4, 8), 1, False)[0] == "taps_rows"
    assert plan("bilinear", (8, limit + 1), (8, 140), 1, False)[0] == "taps"
    assert plan("bilinear", (8, 8), (8, 16), 1, True)[0] == "taps"
    # The expanded grid where the passes read at least 4x more than its 2 x 2
    # taps per output point: 7x7 -> 1x1 reads 7 * 1 * 2 + 1 * 1 * 2 = 16 = 4 * 4.
    assert _policy.SEPARABLE_EXPANDED_MIN_READS == 4
    assert _policy.taps_reads((7, 7), (1, 1), 2) == 16
    assert plan("bilinear", (7, 7), (1, 1), 1, False)[0] == "expanded"
    assert _policy.taps_reads((6, 6), (1, 1), 2) == 14
    assert plan("bilinear", (6, 6), (1, 1), 1, False)[0] == "taps_rows"
    # 12x12 -> 5x5: 12 * 5 * 2 + 5 * 5 * 2 = 170 < 4 * 100.
    assert _policy.taps_reads((12, 12), (5, 5), 2) == 170
    assert plan("bilinear", (12, 12), (5, 5), 1, False)[0] == "taps_rows"
    assert plan("bilinear", (512, 512), (256, 256), 3, False) == ("taps", "expanded")
    # The derivatives at the matmuls' multiply-adds per output point and
    # stencil corner: 2x upsampling 64 -> 128 px costs 64 * 64 / 128 + 64 =
    # 96 per channel, the y axis resampled last.
    assert _policy.matmul_macs((64, 64), (128, 128)) == 96
    assert _policy.matmul_macs((100, 100), (300, 500)) == 100 * 100 / 300 + 100
    assert _policy.matmul_macs((24, 24, 24), (48, 48, 48)) == 24 / 4 + 24 / 2 + 24
    assert 53 * 96 / 4 <= most < 54 * 96 / 4
    assert plan("bilinear", (64, 64), (128, 128), 53, False)[1] == "matmul"
    assert plan("bilinear", (64, 64), (128, 128), 54, False)[1] == "expanded"
    # Axes longer than the matmul limit: grid_sample's derivatives.
    assert plan("bilinear", (limit + 1, 8), (4, 4), 1, False)[1] == "expanded"
    assert plan("bilinear", (8, limit + 1), (4, 4), 1, False)[1] == "expanded"
    assert plan("bilinear", (8, limit), (4, 4), 1, False)[1] == "matmul"
    # Bicubic has 16 corners: 256 * 80 / 16 = 1280.
    assert plan("bicubic", (128, 128), (128, 128), 80, False)[1] == "matmul"
    assert plan("bicubic", (128, 128), (128, 128), 81, False)[1] == "expanded"
    assert plan("bilinear", (24, 24, 24), (48, 48, 48), 243, False)[1] == "matmul"  # 8 corners
    assert plan("bilinear", (24, 24, 24), (48, 48, 48), 244, False)[1] == "expanded"


def test_contraction_order_minimises_the_summed_cost():
    order = _policy.contraction_order
    # Matmuls (cost = input sizes), 28x28 -> 300x500: y first costs 300*28*28 +
    # 300*500*28 = 4.43M, x first 28*500*28 + 300*500*28 = 4.59M.
    assert order((28, 28), (300, 500), (28, 28)) == (0, 1)
    # Downsampling 512x64 -> 256x64 by gathers (2 taps): shrink the long axis first.
    assert order((512, 64), (256, 64), (2, 2)) == (0, 1)
    assert order((64, 512), (64, 256), (2, 2)) == (1, 0)
    assert order((4, 4, 4), (4, 4, 4), (2, 2, 2)) == (0, 1, 2)  # ties: lower axis first
    # With the last axis fixed, the cheapest of the rest: x first for mask pasting.
    assert order((28, 28), (300, 500), (28, 28), last=0) == (1, 0)
    assert order((8, 8, 64), (8, 8, 4), (2, 2, 2), last=0) == (2, 1, 0)
    assert order((8, 64, 8), (8, 4, 8), (2, 2, 2), last=0) == (1, 2, 0)


def test_roi_channel_blocks_follow_the_rule():
    most = _policy.ROI_BLOCK_MAX_BYTES
    assert most == 24 * 2**20 and _policy.ROI_BLOCK_MIN_CHANNELS == 8

    def blocks(pixels, channels, itemsize=4, sampling_ratio=2):
        return _policy.roi_channel_blocks(pixels, channels, itemsize, sampling_ratio)

    # Mask R-CNN's FPN levels of two 800x1216 images: 161500 pixels, 158 MiB in float32.
    assert blocks(161500, 256) == 8  # 19.7 MiB each; 4 blocks would hold 39.4
    assert blocks(161500, 256, 8) == 16
    assert blocks(161500, 256, sampling_ratio=1) == 8
    assert blocks(161500, 256, sampling_ratio=0) == 1  # adaptive
    assert blocks(161500, 256, sampling_ratio=-1) == 1
    assert blocks(most // 64, 16) == 1  # fits exactly
    assert blocks(most // 64 + 1, 16) == 2
    assert blocks(most // 48, 24) == 2  # 2 blocks of 12 channels fit exactly
    assert blocks(most // 48 + 1, 24) == 3
    assert blocks(most // 32 + 1, 16) == 1  # 4 blocks would have 4 channels
    assert blocks(10**6, 8) == 1
    assert blocks(10**6, 257) == 1  # no equal blocks of 8 channels or more


def _twice(a: np.ndarray, axis: int = 1) -> np.ndarray:
    """The fixture's 3 channels twice: blocks of 2 channels then mix both copies."""
    return np.concatenate([a, a], axis)


def _move(a, last: bool):
    """A channels-first array (numpy's or traced), channels last when ``last``."""
    return np.moveaxis(a, 1, -1) if last else a


def _back(a, last: bool, axis: int = 1):
    """An output, channels-first (channels at ``axis``) again."""
    return np.moveaxis(np.asarray(a), -1, axis) if last else np.asarray(a)


def _check_in_both_layouts(pool, maps, rows, cot, want, want_grads):
    """``pool(maps, boxes, channel_axis)`` against the fixture's value and input gradients,
    for the (K, 5) ``rows`` and, as (N, K, 4) boxes, the first 12 of each image: both
    layouts, one program."""
    first = [np.flatnonzero(rows[:, 0] == i)[:12] for i in range(2)]
    boxes = np.stack([rows[i, 1:] for i in first])

    @jax.jit
    def run(maps, rows, boxes, cot):
        got = []
        for last in (False, True):
            f = functools.partial(pool, channel_axis=-1 if last else 1)
            moved = [_move(x, last) for x in maps]
            value, pullback = jax.vjp(lambda m, f=f: f(m, rows), moved)
            got.append((value, pullback(_move(cot, last))[0], f(moved, boxes)))
        return got

    with jax.enable_x64(True):
        results = run(maps, rows, boxes, cot)
    for last, (value, grads, batched) in zip((False, True), results, strict=True):
        tol = dict(rtol=1e-12, atol=1e-12, err_msg=f"channels last: {last}")
        np.testing.assert_allclose(_back(value, last), want, **tol)
        for grad, want_grad in zip(grads, want_grads, strict=True):
            np.testing.assert_allclose(_back(grad, last), want_grad, **tol)
        np.testing.assert_allclose(_back(batched, last, 2), want[np.stack(first)], **tol)


def test_roi_align_in_channel_blocks_matches_torchvision(monkeypatch):
    """Blocks of 2 of 6 channels, sampling_ratio 3: both layouts, rows and (N, K, 4) boxes."""
    monkeypatch.setattr(_policy, "roi_channel_blocks", lambda *_: 3)
    data = np.load(FIXTURES / "roi_align.npz")
    key = "float64/aligned1/ratio3/scale0.5"
    x, rows, cot = (data[f"float64/{k}"] for k in ("input", "rois", "cotangent"))

    def pool(maps, boxes, channel_axis):
        return roi_align(maps[0], boxes, (3, 4), 0.5, 3, True, channel_axis=channel_axis)

    want, want_grad = _twice(data[f"{key}/value"]), _twice(data[f"{key}/grad"])
    _check_in_both_layouts(pool, [_twice(x)], rows, _twice(cot), want, [want_grad])


def test_multi_scale_roi_align_in_channel_blocks_matches_torchvision(monkeypatch):
    """Blocks of 2 of 6 channels of every level, sampling_ratio 2: both layouts and formats."""
    monkeypatch.setattr(_policy, "roi_channel_blocks", lambda *_: 3)
    data = np.load(FIXTURES / "multi_scale_roi_align.npz")
    xs = [_twice(data[f"float64/features{i}"]) for i in range(4)]
    rows, cot = data["float64/rois"], _twice(data["float64/cotangent"])

    def pool(maps, boxes, channel_axis):
        return multi_scale_roi_align(maps, boxes, (3, 4), 2, (128, 160), channel_axis=channel_axis)

    want = _twice(data["float64/ratio2/value"])
    want_grads = [_twice(data[f"float64/ratio2/grad{i}"]) for i in range(4)]
    _check_in_both_layouts(pool, xs, rows, cot, want, want_grads)
