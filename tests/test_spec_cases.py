"""Adversarial cases and a worked example, with expected values written out.

Expected values are torch 2.13's outputs, except where docs/semantics.md defines
a different behaviour (non-finite, huge and half-precision grids); those values
are derived by hand in the comments.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import assert_close

from jax_gridsample import grid_sample

NAN, INF = math.nan, math.inf
ROW = [10.0, 11.0, 12.0, 13.0]
STEP = [0.0, 0.0, 0.0, 10.0]
RAMP12 = [float(v) for v in range(12)]
RAMP24 = [float(v) for v in range(24)]
SQUARES10 = [float(v * v) for v in range(10)]

# (name, mode, padding, align, input, input shape, grid, grid shape, out, dgrid, dinput)
CASES = [
    (
        "1-nearest-ties-half-even",
        "nearest",
        "zeros",
        False,
        ROW,
        (1, 1, 1, 4),
        [-0.5, 0, 0, 0, 0.5, 0],
        (1, 1, 3, 2),
        [10, 12, 12],
        None,
        None,
    ),
    (
        "2-nearest-minus-half-in-bounds",
        "nearest",
        "zeros",
        False,
        ROW,
        (1, 1, 1, 4),
        [-1.0, 0, -1.000100016593933, 0],
        (1, 1, 2, 2),
        [10, 0],
        None,
        None,
    ),
    (
        "3-nearest-149013",
        "nearest",
        "zeros",
        True,
        [float(v) for v in range(10)],
        (1, 1, 1, 10),
        [1.0055999755859375, 0, 1.100000023841858, 0, 1.1200000047683716, 0],
        (1, 1, 3, 2),
        [9, 9, 0],
        None,
        None,
    ),
    (
        "4-bilinear-right-edge-one-sided",
        "bilinear",
        "zeros",
        True,
        ROW,
        (1, 1, 1, 4),
        [1.0, 0],
        (1, 1, 1, 2),
        [13],
        [-19.5, 0],
        [0, 0, 0, 1],
    ),
    (
        "5-bilinear-half-weight",
        "bilinear",
        "zeros",
        False,
        ROW,
        (1, 1, 1, 4),
        [-1.0, 0],
        (1, 1, 1, 2),
        [5],
        [20, -2.5],
        [0.5, 0, 0, 0],
    ),
    (
        "6-bilinear-integer-right-difference",
        "bilinear",
        "zeros",
        True,
        ROW,
        (1, 1, 1, 4),
        [-0.3333333432674408, 0],
        (1, 1, 1, 2),
        [11],
        [1.5, 0],
        [5.960464477539063e-08, 0.9999999403953552, 0, 0],
    ),
    # Non-finite values as torch here; 1e10 is a far-out point.
    (
        "7-bilinear-zeros-nonfinite",
        "bilinear",
        "zeros",
        False,
        ROW,
        (1, 1, 1, 4),
        [NAN, 0, INF, 0, -INF, 0, 1e10, 0],
        (1, 1, 4, 2),
        [NAN, NAN, NAN, 0],
        [0, NAN, 0, NAN, 0, NAN, 0, 0],
        [0, 0, 0, 0],
    ),
    # Huge values (torch gives NaN, pytorch/pytorch#51911): a far-out point reads 0, gradient 0.
    (
        "8-overflow-is-far-out",
        "bilinear",
        "zeros",
        False,
        [1.0] * 5,
        (1, 1, 1, 5),
        [3.0000000054977558e38, 0],
        (1, 1, 1, 2),
        [0],
        [0, 0],
        [0] * 5,
    ),
    # As torch's forward; torch's backward crashes, ours: zero grid gradient.
    (
        "9-bilinear-border-nonfinite",
        "bilinear",
        "border",
        False,
        ROW,
        (1, 1, 1, 4),
        [NAN, 0, INF, 0, -INF, 0],
        (1, 1, 3, 2),
        [10, 13, 10],
        [0] * 6,
        [2, 0, 0, 1],
    ),
    (
        "10-bilinear-reflection-nonfinite",
        "bilinear",
        "reflection",
        True,
        ROW,
        (1, 1, 1, 4),
        [NAN, 0, INF, 0, -INF, 0],
        (1, 1, 3, 2),
        [10, 10, 10],
        [0] * 6,
        [3, 0, 0, 0],
    ),
    (
        "12-reflection-margin-clamps",
        "bilinear",
        "reflection",
        False,
        ROW,
        (1, 1, 1, 4),
        [-0.8999999761581421, 0, -1.0, 0, 0.8999999761581421, 0, 1.0, 0],
        (1, 1, 4, 2),
        [10, 10, 13, 13],
        [0] * 8,
        [2, 0, 0, 2],
    ),
    (
        "13-reflection-sign-flip",
        "bilinear",
        "reflection",
        True,
        ROW,
        (1, 1, 1, 4),
        [-1.100000023841858, 0, 1.100000023841858, 0, -3.0, 0, 5.0, 0],
        (1, 1, 4, 2),
        [10.15000057220459, 12.850000381469727, 13, 13],
        [-1.5, 0, -1.5, 0, 0, 0, 0, 0],
        [0.8499999642372131, 0.15000003576278687, 0.14999985694885254, 2.8500001430511475],
    ),
    (
        "14-border-zero-grad-at-edges",
        "bilinear",
        "border",
        True,
        ROW,
        (1, 1, 1, 4),
        [-1.0, 0, 1.0, 0, 1.5, 0, -1.5, 0, -0.9990000128746033, 0],
        (1, 1, 5, 2),
        [10, 13, 13, 10, 10.00149917602539],
        [0, 0, 0, 0, 0, 0, 0, 0, 1.5, 0],
        [2.998499870300293, 0.0014999806880950928, 0, 2],
    ),
    (
        "15-size1-align-never-padded",
        "bilinear",
        "zeros",
        True,
        [7.0],
        (1, 1, 1, 1),
        [-5.0, 9, 0.30000001192092896, 9, 5.0, 9],
        (1, 1, 3, 2),
        [7, 7, 7],
        [0] * 6,
        [3],
    ),
    (
        "16-size1-x-is-g-over-2",
        "bilinear",
        "zeros",
        False,
        [7.0],
        (1, 1, 1, 1),
        [-1.0, 0, -0.5, 0, 0.5, 0, 1.5, 0],
        (1, 1, 4, 2),
        [3.5, 5.25, 5.25, 1.75],
        [3.5, -1.75, 3.5, -2.625, -3.5, -2.625, -3.5, -0.875],
        [2.25],
    ),
    (
        "17-size1-reflection",
        "bilinear",
        "reflection",
        False,
        [7.0],
        (1, 1, 1, 1),
        [-7.300000190734863, 2, 3.299999952316284, 2],
        (1, 1, 2, 2),
        [7, 7],
        [0] * 4,
        [2],
    ),
    (
        "18-bicubic-border-overshoot",
        "bicubic",
        "border",
        True,
        STEP,
        (1, 1, 1, 4),
        [1.3333333730697632, 0, 1.6666666269302368, 0],
        (1, 1, 2, 2),
        [10.937503814697266, 10],
        None,
        None,
    ),
    (
        "19-bicubic-reflection-per-tap",
        "bicubic",
        "reflection",
        True,
        STEP,
        (1, 1, 1, 4),
        [1.3333333730697632, 0, 1.6666666269302368, 0, 2.3333332538604736, 0],
        (1, 1, 3, 2),
        [5.937497138977051, 2.384185791015625e-06, 0],
        None,
        None,
    ),
    (
        "20-bicubic-zeros-step",
        "bicubic",
        "zeros",
        True,
        STEP,
        (1, 1, 1, 4),
        [0.25, 0, 0.5, 0, 0.75, 0],
        (1, 1, 3, 2),
        [-0.7177734375, 2.6171875, 7.4951171875],
        [6.15234375, 0, 18.984375, 0, 17.40234375, 0],
        [-0.01025390625, -0.056640625, 2.2724609375, 0.939453125],
    ),
    (
        "21-bicubic-nan",
        "bicubic",
        "zeros",
        False,
        ROW,
        (1, 1, 1, 4),
        [NAN, 0],
        (1, 1, 1, 2),
        [NAN],
        [NAN, NAN],
        [0, 0, 0, 0],
    ),
    (
        "22-bicubic-border-huge",
        "bicubic",
        "border",
        False,
        ROW,
        (1, 1, 1, 4),
        [1e10, 0, -1e10, 0],
        (1, 1, 2, 2),
        [13, 10],
        None,
        None,
    ),
    (
        "23-bicubic-1x1",
        "bicubic",
        "zeros",
        False,
        [7.0],
        (1, 1, 1, 1),
        [-1.0, 0, 0.9900000095367432, 0, 1.0, 0],
        (1, 1, 3, 2),
        [4.15625, 4.202120780944824, 4.15625],
        [4.59375, 0, -4.580296516418457, 0, -4.59375, 0],
        [1.7878029346466064],
    ),
    (
        "24-bilinear-generic",
        "bilinear",
        "zeros",
        False,
        RAMP12,
        (1, 1, 3, 4),
        [0.12345670163631439, -0.7654321193695068, 0.3333333134651184, 0.6666666865348816],
        (1, 1, 2, 2),
        [1.4881113767623901, 10.166666030883789],
        [1.7037036418914795, 2.6203701496124268, 2.0, -15.249999046325684],
        [
            0,
            0.21559225022792816,
            0.6362595558166504,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
            0.8333334922790527,
            0.16666650772094727,
        ],
    ),
    (
        "25-bicubic-generic",
        "bicubic",
        "border",
        False,
        RAMP12,
        (1, 1, 3, 4),
        [0.12345670163631439, -0.7654321193695068, 0.3333333134651184, 0.6666666865348816],
        (1, 1, 2, 2),
        [1.3777250051498413, 10.230327606201172],
        [1.8657965660095215, 2.129631996154785, 2.541682243347168, 4.500001430511475],
        [
            -0.038774311542510986,
            0.28704774379730225,
            0.9467865228652954,
            -0.11443210393190384,
            0.0028930415865033865,
            -0.021417299285531044,
            -0.07064194232225418,
            0.00853804498910904,
            0,
            -0.08680558204650879,
            0.9432871341705322,
            0.14351880550384521,
        ],
    ),
    # Non-finite 5-D as 4-D (torch's 3-D kernel gives 11.5, 11.5, 8.5): the input
    # is 12z + 4y + x; y=0.25 -> 1.375, z=-0.25 -> 0.25 (align False), so the
    # value is 8.5 + x, with NaN -> x=0, +inf -> x=3, -inf -> x=0.
    (
        "26-3d-border-nonfinite",
        "bilinear",
        "border",
        False,
        RAMP24,
        (1, 1, 2, 3, 4),
        [NAN, 0.25, -0.25, INF, 0.25, -0.25, -INF, 0.25, -0.25],
        (1, 1, 1, 3, 3),
        [8.5, 11.5, 8.5],
        None,
        None,
    ),
    # Non-finite 5-D as 4-D (torch's 3-D kernel gives 0): zeros + non-finite -> NaN.
    (
        "27-3d-zeros-nonfinite",
        "bilinear",
        "zeros",
        False,
        RAMP24,
        (1, 1, 2, 3, 4),
        [NAN, 0.25, -0.25, INF, 0.25, -0.25],
        (1, 1, 1, 2, 3),
        [NAN, NAN],
        None,
        None,
    ),
    (
        "28-3d-nearest-ties",
        "nearest",
        "zeros",
        False,
        ROW,
        (1, 1, 1, 1, 4),
        [-0.5, 0.25, -0.25, 0, 0.25, -0.25, 0.5, 0.25, -0.25],
        (1, 1, 1, 3, 3),
        [10, 12, 12],
        None,
        None,
    ),
    # One rounding in 2-D, two in 3-D (align_corners=False, W = 10, g one ulp below
    # float32(0.7), u = g + 1 = 1.6999999): 2-D fma(u, 5, -0.5) = 7.99999952 (x lies left of
    # pixel 8: the grid gradient takes the left difference, (64 - 49) * 5 = 75); 3-D
    # u * 10 = 16.999999 rounds to 17, so x = (17 - 1) / 2 = 8 (the right difference,
    # (81 - 64) * 5 = 85).
    (
        "29-2d-rounded-once",
        "bilinear",
        "zeros",
        False,
        SQUARES10,
        (1, 1, 1, 10),
        [0.6999999284744263, 0],
        (1, 1, 1, 2),
        [63.99999237060547],
        [75, -31.999996185302734],
        [0] * 7 + [4.76837158203125e-07, 0.9999995231628418, 0],
    ),
    (
        "30-3d-rounded-twice",
        "bilinear",
        "zeros",
        False,
        SQUARES10,
        (1, 1, 1, 1, 10),
        [0.6999999284744263, 0, 0],
        (1, 1, 1, 1, 3),
        [64],
        [85, -32, -32],
        [0] * 8 + [1, 0],
    ),
]


def test_spec_cases():
    """Every case above, its value and both gradients of ``sum(out)``, in one program."""

    @jax.jit
    def run(arrays):
        got = []
        for (x, g), case in zip(arrays, CASES, strict=True):
            options = dict(mode=case[1], padding_mode=case[2], align_corners=case[3])

            def total(x, g, options=options):
                return jnp.sum(grid_sample(x, g, **options))

            got.append((grid_sample(x, g, **options), jax.grad(total, argnums=(0, 1))(x, g)))
        return got

    # Shaped in NumPy: an eager reshape compiles a program per shape.
    arrays = [
        (
            jnp.asarray(np.reshape(np.asarray(c[4], np.float32), c[5])),
            jnp.asarray(np.reshape(np.asarray(c[6], np.float32), c[7])),
        )
        for c in CASES
    ]
    results = jax.tree.map(np.asarray, run(arrays))
    for case, (result, grads) in zip(CASES, results, strict=True):
        name, mode, out, dgrid, dinput = case[0], case[1], case[8], case[9], case[10]
        assert_close(
            result.reshape(-1), out, "float32", what=f"{name} output", exact=mode == "nearest"
        )
        assert np.all(np.isfinite(np.asarray(grads[0]))), f"{name}: grad_input must never be NaN"
        if dgrid is not None:
            assert_close(grads[1].reshape(-1), dgrid, "float32", what=f"{name} grad_grid")
        if dinput is not None:
            assert_close(grads[0].reshape(-1), dinput, "float32", what=f"{name} grad_input")


@pytest.mark.parametrize("ndim", [2, 3])
@pytest.mark.parametrize("align", [False, True])
def test_huge_reflection_stays_in_range(ndim, align):
    """Huge values under reflection: finite and inside the input's range."""
    spatial = (2, 3, 4)[-ndim:]
    x = jnp.arange(np.prod(spatial), dtype=jnp.float32).reshape((1, 1) + spatial)
    huge = jnp.array([1e10, -1e10, 1e30, 12345.677734375, 3e38, -3e38], jnp.float32)
    g = jnp.zeros((1, 1, 6, ndim), jnp.float32).at[0, 0, :, 0].set(huge)
    if ndim == 3:
        g = g[:, None]
    out = np.asarray(grid_sample(x, g, padding_mode="reflection", align_corners=align))
    assert np.all(np.isfinite(out))
    assert out.min() >= 0 and out.max() <= x.max()
    dg = jax.grad(
        lambda g: grid_sample(x, g, padding_mode="reflection", align_corners=align).sum()
    )(g)
    assert np.all(np.isfinite(np.asarray(dg)))


def test_half_computed_in_float32():
    """Half types: torch CPU rounds coordinates to float16 per op; we compute in float32."""
    x = jnp.linspace(0, 1, 1000, dtype=jnp.float32).astype(jnp.float16).reshape(1, 1, 1, 1000)
    g = jnp.array([0.300048828125, 0.0, -0.77001953125, 0.0], jnp.float16).reshape(1, 1, 2, 2)
    out = grid_sample(x, g, align_corners=False)
    assert out.dtype == jnp.float16
    # torch's float32 result on the same half-valued inputs.
    assert_close(out.reshape(-1), [0.650174617767334, 0.11460483819246292], "float16")


def test_bfloat16_wide_row_has_no_index_overflow():
    """A 32768-wide bfloat16 row: torch CPU's int16 indices zero this out; we read the ones."""
    x = jnp.ones((1, 1, 1, 32768), jnp.bfloat16)
    g = jnp.array([0.0, 0.0, 0.5, 0.0], jnp.bfloat16).reshape(1, 1, 2, 2)
    out = grid_sample(x, g, mode="nearest", align_corners=True)
    np.testing.assert_array_equal(np.asarray(out, np.float32).reshape(-1), [1.0, 1.0])


@pytest.mark.parametrize(
    "align,expected",
    [(True, [[4.75, 6.25], [10.75, 12.25]]), (False, [[3.5, 5.5], [11.5, 13.5]])],
)
def test_worked_example(align, expected):
    """A 4x4 example, by hand.

    By hand for align_corners=False: g = -0.5 -> x = ((g + 1) * 4 - 1) / 2 = 0.5,
    and the input is 4y + x + 1, so (0, 0) reads 4 * 0.5 + 0.5 + 1 = 3.5.
    With True: x = (g + 1) / 2 * 3 = 0.75 -> 4 * 0.75 + 0.75 + 1 = 4.75.
    """
    image = jnp.arange(1.0, 17.0).reshape(1, 1, 4, 4)
    grid = jnp.array([[[[-0.5, -0.5], [0.5, -0.5]], [[-0.5, 0.5], [0.5, 0.5]]]])
    out = grid_sample(image, grid, mode="bilinear", padding_mode="zeros", align_corners=align)
    np.testing.assert_allclose(np.asarray(out[0, 0]), expected, rtol=1e-6)


# A float32 grid value whose reflected coordinate is a half-integer only
# if every rounding of the unnormalisation is torch's. W=5, g=float32(-2.6):
# g + 1 = -1.5999999 (exact); 2-D: fma(-1.5999999, 2.5, -0.5) = -4.49999976 rounds
# to the tie -4.5 (ulp 4.8e-7 there, ties to even); 3-D: (-1.5999999 * 5) - 1 =
# -8.99999952 rounds to -9, halved -4.5. Reflected about [-0.5, 4.5]: 3.5, which
# rounds half to even to pixel 4. Folding the unnormalisation's -0.5 into the
# reflection's +0.5 skips the rounding and gives 3.4999998 -> pixel 3. W=7 with
# g=float32(-2.142857) is its relative (torch 2.13: 4.0 in 2-D and 3-D).
@pytest.mark.parametrize("ndim", [2, 3])
@pytest.mark.parametrize(("width", "g", "expected"), [(5, -2.6, 4.0), (7, -2.142857, 4.0)])
def test_reflected_half_pixel_rounds_like_torch(ndim, width, g, expected):
    x = np.arange(width, dtype=np.float32).reshape((1, 1) + (1,) * (ndim - 1) + (width,))
    grid = np.array([g] + [0.0] * (ndim - 1), np.float32).reshape((1,) * (ndim + 1) + (ndim,))
    out = jax.jit(grid_sample, static_argnums=(2, 3, 4))(x, grid, "nearest", "reflection", False)
    assert float(out.ravel()[0]) == expected
    # Bilinear at 3.5: the grid gradient is S/2 * (-1, the reflection) * (v4 - v3).
    grad = jax.grad(lambda g: grid_sample(x, g, "bilinear", "reflection", False).sum())(grid)
    assert float(grad.ravel()[0]) == -width / 2


# Sizes past the exact partial products of _coordinates._scaled_sum (float32,
# align_corners=False: more than 11 significant bits in 4-D, 12 in 5-D) take the
# plain product; pixel centres (2k + 1) / S - 1, a quarter pixel from any tie,
# still pick pixel k, whose value here is k.
@pytest.mark.parametrize(("ndim", "size"), [(2, 2048), (2, 2049), (3, 4096), (3, 4097)])
def test_long_axes_pick_the_right_pixels(ndim, size):
    k = np.array([0, 1, 7, size // 2, size - 2, size - 1])
    x = np.arange(size, dtype=np.float32).reshape((1, 1) + (1,) * (ndim - 1) + (size,))
    grid = np.zeros((1,) * ndim + (len(k), ndim), np.float32)
    grid[..., 0] = (2 * k + 1) / size - 1
    for mode in ("nearest", "bilinear"):
        out = grid_sample(x, grid, mode, "zeros", False)
        assert_close(out.ravel(), k, "float32", what=mode, exact=mode == "nearest")
