"""roi_align against torchvision 0.29.1's CPU kernels (saved fixtures), and its own rules."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import FIXTURES, TOLERANCE, quick_apart

from jax_gridsample import roi_align

DATA = np.load(FIXTURES / "roi_align.npz")
OUTPUT = (3, 4)
TOL = {"float32": dict(rtol=1e-5, atol=1e-5), "float64": dict(rtol=1e-12, atol=1e-12)}
QUICK_RATIOS = (-1, 2)


@pytest.fixture(autouse=True)
def _x64():
    """float64 cases stay float64; float32 ones follow their inputs' dtype."""
    with jax.enable_x64(True):
        yield


@functools.partial(jax.jit, static_argnames=("scale", "ratio", "aligned"))
def value_and_grad(x, rois, cotangent, scale, ratio, aligned):
    out, pullback = jax.vjp(lambda a: roi_align(a, rois, OUTPUT, scale, ratio, aligned), x)
    return out, pullback(cotangent)[0]


def _quick(case):
    """One sampling kind per ``aligned`` and dtype, the other for the other dtype."""
    dtype, aligned, ratio, scale = case
    return ratio == QUICK_RATIOS[(dtype == "float64") == aligned] and scale == 0.5


_CASES = [
    (dtype, aligned, ratio, scale)
    for dtype in ("float32", "float64")
    for aligned in (False, True)
    for ratio in (-1, 0, 1, 2, 3, 5)
    for scale in (1.0, 0.5)
]


@pytest.mark.parametrize(
    "group",
    quick_apart(
        _CASES,
        family=lambda c: f"{c[0]}-a{int(c[1])}",
        quick=_quick,
        ident=lambda c: f"{c[0]}-a{int(c[1])}-r{c[2]}-s{c[3]}",
    ),
)
def test_values_and_input_gradients_match_torchvision(group):
    """Each (sampling_ratio, spatial_scale) of ``group``: one compiled program for all."""
    dtype, aligned = group[0][:2]
    x, rois, cot = (DATA[f"{dtype}/{k}"] for k in ("input", "rois", "cotangent"))

    @jax.jit
    def run(x, rois, cot):
        return [value_and_grad(x, rois, cot, scale, ratio, aligned) for _, _, ratio, scale in group]

    for (_, _, ratio, scale), (out, grad) in zip(group, run(x, rois, cot), strict=True):
        key = f"{dtype}/aligned{int(aligned)}/ratio{ratio}/scale{scale}"
        assert out.dtype == grad.dtype == np.dtype(dtype), key
        np.testing.assert_allclose(out, DATA[f"{key}/value"], **TOL[dtype], err_msg=key)
        np.testing.assert_allclose(grad, DATA[f"{key}/grad"], **TOL[dtype], err_msg=key)


@pytest.mark.parametrize("aligned", [pytest.param(False, marks=pytest.mark.slow), True])
def test_adaptive_sampling_of_boxes_that_need_few_samples(aligned):
    # Bins of at most 7 pixels read at most 8 pixels per axis (one box exactly 8 columns):
    # the short loops run. The boxes with larger bins (one reads 9) take the long ones.
    x, rois, cot = (DATA[f"float64/{k}"] for k in ("input", "rois", "cotangent"))
    key = f"float64/aligned{int(aligned)}/ratio-1/scale1.0"
    x1, y1, x2, y2 = rois[:, 1:].T
    huge = np.maximum((x2 - x1) / 4, (y2 - y1) / 3) > 7.5
    assert huge.sum() == 4
    out, grad = value_and_grad(x, rois[~huge], cot[~huge], 1.0, -1, aligned)
    np.testing.assert_allclose(out, DATA[f"{key}/value"][~huge], rtol=1e-12, atol=1e-12)
    # The input gradient sums over boxes: add the other boxes', padded with boxes that place
    # no sample (a NaN coordinate) to the same shape, so that one program serves both calls.
    pad = np.full((len(out) - huge.sum(), 5), np.nan)
    pad[:, 0] = 0
    padded_rois = np.concatenate([rois[huge], pad])
    padded_cot = np.concatenate([cot[huge], np.zeros((len(pad), *cot.shape[1:]))])
    _, huge_grad = value_and_grad(x, padded_rois, padded_cot, 1.0, -1, aligned)
    np.testing.assert_allclose(grad + huge_grad, DATA[f"{key}/grad"], rtol=1e-12, atol=1e-12)


def _small_cases():
    quick = {("1x6", True, -1)}
    for size in ("1x1", "1x6", "5x1"):
        for aligned in (False, True):
            for ratio in (-1, 2):
                marks = [] if (size, aligned, ratio) in quick else [pytest.mark.slow]
                yield pytest.param(
                    size, aligned, ratio, marks=marks, id=f"{size}-a{int(aligned)}-r{ratio}"
                )


@pytest.mark.parametrize("size,aligned,ratio", list(_small_cases()))
def test_size_one_maps(size, aligned, ratio):
    key = f"small{size}"
    x, rois, cot = (DATA[f"{key}/{k}"] for k in ("input", "rois", "cotangent"))
    out, grad = value_and_grad(x, rois, cot, 1.0, ratio, aligned)
    np.testing.assert_allclose(
        out, DATA[f"{key}/aligned{int(aligned)}/ratio{ratio}/value"], rtol=1e-12, atol=1e-12
    )
    np.testing.assert_allclose(
        grad, DATA[f"{key}/aligned{int(aligned)}/ratio{ratio}/grad"], rtol=1e-12, atol=1e-12
    )


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_half_types_are_float32_rounded_once(dtype):
    x = jnp.asarray(DATA[f"{dtype}/input"]).astype(dtype)
    rois = jnp.asarray(DATA[f"{dtype}/rois"]).astype(dtype)
    for aligned in (False, True):
        out = roi_align(x, rois, OUTPUT, 1.0, -1, aligned)
        assert out.dtype == jnp.dtype(dtype)
        # One rounding of a float32 sum that differs from torchvision's in its last bits.
        tol = TOLERANCE[dtype]
        np.testing.assert_allclose(
            np.asarray(out, np.float32),
            DATA[f"{dtype}/aligned{int(aligned)}/value"],
            rtol=tol,
            atol=tol,
        )


def _float64(ratio=-1):
    x, rois = DATA["float64/input"], DATA["float64/rois"]
    return x, rois, DATA[f"float64/aligned1/ratio{ratio}/scale0.5/value"]


# Box formats, layouts, batch indices and transformations do not depend on how the samples
# are placed: those tests take the fixed sampling_ratio's smaller programs.
FIXED = 2


def test_box_formats_and_channels_last_agree_with_the_rows_format():
    x, rois, expected = _float64(FIXED)
    run = functools.partial(
        roi_align, output_size=OUTPUT, spatial_scale=0.5, sampling_ratio=FIXED, aligned=True
    )
    per_image = [rois[rois[:, 0] == i, 1:] for i in range(2)]
    batched = np.stack([p[:12] for p in per_image])

    @jax.jit  # the three formats in one program
    def formats(x, per_image, batched, x_last):
        return run(x, per_image), run(x, batched), run(x_last, batched, channel_axis=-1)

    rows, out, last = formats(x, per_image, batched, np.moveaxis(x, 1, -1))
    order = np.concatenate([np.flatnonzero(rois[:, 0] == i) for i in range(2)])
    np.testing.assert_allclose(rows, expected[order], rtol=1e-12, atol=1e-12)
    assert out.shape == (2, 12, 3, *OUTPUT)
    first = len(per_image[0])
    want = np.stack([expected[order[:12]], expected[order[first : first + 12]]])
    np.testing.assert_allclose(out, want, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(np.moveaxis(np.asarray(last), -1, 2), want, rtol=1e-12, atol=1e-12)


def test_a_box_with_a_non_finite_coordinate_places_no_sample():
    x, rois, expected = _float64()
    bad, gone = rois.copy(), rois.copy()
    bad[0, 1], bad[1, 4], bad[2, 3] = np.nan, np.inf, -np.inf
    gone[:3, 1:] = 1000, 1000, 1001, 1001  # wholly outside: no sample either

    @jax.jit
    def value_and_grads(a, b):
        def loss(a, b):
            out = roi_align(a, b, OUTPUT, 0.5, -1, True)
            return jnp.sum(out**2), out

        return jax.grad(loss, argnums=(0, 1), has_aux=True)(a, b)

    (gx, gb), out = value_and_grads(x, bad)
    np.testing.assert_array_equal(out[:3], 0)
    np.testing.assert_allclose(out[3:], expected[3:], rtol=1e-12, atol=1e-12)
    (gx_gone, _), _ = value_and_grads(x, gone)
    np.testing.assert_allclose(gx, gx_gone, rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(gb[:3], 0)
    assert np.isfinite(gb).all()


def test_a_traced_batch_index_out_of_range_places_no_sample():
    x, rois, expected = _float64(FIXED)
    bad = rois.copy()
    bad[0, 0], bad[1, 0] = 2, -1
    out = jax.jit(lambda a, b: roi_align(a, b, OUTPUT, 0.5, FIXED, True))(x, bad)
    np.testing.assert_array_equal(out[:2], 0)
    np.testing.assert_allclose(out[2:], expected[2:], rtol=1e-12, atol=1e-12)


def test_no_boxes():
    x = DATA["float32/input"]
    assert roi_align(x, np.zeros((0, 5), np.float32), OUTPUT).shape == (0, 3, *OUTPUT)
    assert roi_align(x, [np.zeros((0, 4), np.float32)], 2).shape == (0, 3, 2, 2)


@pytest.mark.slow
def test_box_gradients_match_central_differences():
    x, rois, _ = _float64()
    rois = rois[:6]
    cot = np.random.default_rng(0).standard_normal((6, 3, *OUTPUT))
    for ratio in (-1, 2):
        f = jax.jit(lambda b, r=ratio: jnp.sum(roi_align(x, b, OUTPUT, 0.5, r, True) * cot))
        grad = np.asarray(jax.jit(jax.grad(f))(rois))
        eps = 1e-6
        steps = np.eye(rois.size).reshape(-1, *rois.shape) * eps
        num = np.array([(f(rois + s) - f(rois - s)) / (2 * eps) for s in steps]).reshape(rois.shape)
        num[:, 0] = 0  # the batch index is not differentiable
        np.testing.assert_allclose(grad, num, rtol=1e-6, atol=1e-6)


def test_jvp_and_vmap():
    x, rois, expected = _float64(FIXED)
    run = lambda a: roi_align(a, rois, OUTPUT, 0.5, FIXED, True)  # noqa: E731

    @jax.jit  # both transformations in one program
    def transformed(x):
        return jax.jvp(run, (x,), (2 * x,)), jax.vmap(run)(jnp.stack([x, -x]))

    (out, tangent), stacked = transformed(x)
    np.testing.assert_allclose(out, expected, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(tangent, 2 * expected, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(stacked[0], expected, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(stacked[1], -expected, rtol=1e-12, atol=1e-12)


def test_bad_arguments():
    x = DATA["float32/input"]
    rois = DATA["float32/rois"]
    with pytest.raises(ValueError, match="input must be 4-D"):
        roi_align(x[0], rois, 2)
    with pytest.raises(ValueError, match=r"\(K, 5\)"):
        roi_align(x, rois[:, 1:], 2)
    with pytest.raises(TypeError, match="input's dtype float32, got float64"):
        roi_align(x, rois.astype(np.float64), 2)
    with pytest.raises(ValueError, match="must lie in"):
        roi_align(x, np.array([[2, 0, 0, 1, 1]], np.float32), 2)
    with pytest.raises(ValueError, match="integer batch indices"):
        roi_align(x, np.array([[0.5, 0, 0, 1, 1]], np.float32), 2)
    with pytest.raises(ValueError, match="output_size must be positive"):
        roi_align(x, rois, (0, 2))
    with pytest.raises(ValueError, match="the input's N = 2"):
        roi_align(x, np.zeros((3, 4, 4), np.float32), 2)
    with pytest.raises(ValueError, match="at most N = 2"):
        roi_align(x, [np.zeros((1, 4), np.float32)] * 3, 2)
    with pytest.raises(TypeError, match="aligned must be a bool"):
        roi_align(x, rois, 2, aligned=1)
    with pytest.raises(TypeError, match="sampling_ratio must be an int"):
        roi_align(x, rois, 2, sampling_ratio=2.0)
    huge = jax.ShapeDtypeStruct((2**15, 1, 2**8, 2**8), np.float32)  # 2**31 pixels
    with pytest.raises(ValueError, match=r"at most 2\*\*31 - 1 pixels .* got 2147483648"):
        jax.eval_shape(lambda a: roi_align(a, rois, 2), huge)


def test_non_finite_input_values():
    x = np.zeros((1, 1, 4, 4), np.float32)
    x[0, 0, 2, 2] = np.inf  # read at weight 0 by the sample at (1.0, 1.0) of box [0, 0, 2, 2]
    x[0, 0, 0, 0] = np.inf  # never read by a dropped sample
    rois = np.array([[0, 0, 0, 2, 2], [0, 10, 10, 12, 12], [0, 0, 0, 1, 1]], np.float32)
    out = np.asarray(roi_align(x, rois, 1, sampling_ratio=1))[:, 0, 0, 0]
    assert np.isnan(out[0])
    assert out[1] == 0
    assert out[2] == np.inf  # the sample at (0.5, 0.5) reads (0, 0) at weight 0.25
