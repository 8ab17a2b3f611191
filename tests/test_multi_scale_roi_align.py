"""multi_scale_roi_align against torchvision 0.29.1's MultiScaleRoIAlign (saved fixtures)."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import FIXTURES, TOLERANCE

from jax_gridsample import multi_scale_roi_align, roi_align

DATA = np.load(FIXTURES / "multi_scale_roi_align.npz")
OUTPUT = (3, 4)
IMAGE = (128, 160)
TOL = {"float32": dict(rtol=1e-5, atol=1e-5), "float64": dict(rtol=1e-12, atol=1e-12)}


@pytest.fixture(autouse=True)
def _x64():
    """float64 cases stay float64; float32 ones follow their inputs' dtype."""
    with jax.enable_x64(True):
        yield


def features(dtype: str = "float64", levels: slice = slice(None)) -> list[np.ndarray]:
    return [DATA[f"{dtype}/features{i}"] for i in range(4)][levels]


@functools.partial(jax.jit, static_argnames=("ratio", "image", "canonical"))
def value_and_grad(xs, rois, cotangent, ratio, image=IMAGE, canonical=()):
    def run(xs):
        return multi_scale_roi_align(xs, rois, OUTPUT, ratio, image, **dict(canonical))

    out, pullback = jax.vjp(run, xs)
    return out, pullback(cotangent)[0]


@pytest.mark.parametrize(
    "dtype,ratio",
    [
        ("float32", -1),
        ("float64", 2),
        pytest.param("float32", 2, marks=pytest.mark.slow),
        pytest.param("float64", -1, marks=pytest.mark.slow),
    ],
)
def test_values_and_input_gradients_match_torchvision(dtype, ratio):
    rois, cot = DATA[f"{dtype}/rois"], DATA[f"{dtype}/cotangent"]
    out, grads = value_and_grad(features(dtype), rois, cot, ratio)
    assert out.dtype == np.dtype(dtype) and out.shape == (len(rois), 3, *OUTPUT)
    np.testing.assert_allclose(out, DATA[f"{dtype}/ratio{ratio}/value"], **TOL[dtype])
    for i, grad in enumerate(grads):
        np.testing.assert_allclose(grad, DATA[f"{dtype}/ratio{ratio}/grad{i}"], **TOL[dtype])


@pytest.mark.parametrize(
    "key,levels,image,canonical",
    [
        ("one_level", slice(1, 2), IMAGE, ()),
        ("canonical", slice(1, 3), IMAGE, (("canonical_scale", 60), ("canonical_level", 3))),
        pytest.param("inexact_image", slice(None), (125, 165), (), marks=pytest.mark.slow),
    ],
)
def test_other_level_setups_match_torchvision(key, levels, image, canonical):
    rois, cot = DATA["float64/rois"], DATA["float64/cotangent"]
    out, grads = value_and_grad(features("float64", levels), rois, cot, 2, image, canonical)
    np.testing.assert_allclose(out, DATA[f"{key}/value"], rtol=1e-12, atol=1e-12)
    for i, grad in enumerate(grads):
        np.testing.assert_allclose(grad, DATA[f"{key}/grad{i}"], rtol=1e-12, atol=1e-12)


def test_each_box_is_roi_align_of_the_level_its_area_picks():
    # Level floor(4 + log2(sqrt(area) / 224) + 1e-6) clamped to [2, 5], scale 2 ** -level.
    sides_and_levels = [
        (112, 3),
        (112 * (1 - 5e-7), 3),  # log2 is 7.2e-7 below 3: the epsilon lifts it
        (112 * (1 - 2e-6), 2),
        (111.99, 2),
        (224, 4),
        (448, 5),
        (5000, 5),
        (0.5, 2),
        (0, 2),
    ]
    rows = np.array([[0, 7, 3, 7 + s, 3 + s] for s, _ in sides_and_levels])
    out = jax.jit(lambda xs: multi_scale_roi_align(xs, rows, OUTPUT, 2, IMAGE))(features())
    maps = features()
    for row, (_, level), got in zip(rows, sides_and_levels, np.asarray(out), strict=True):
        want = roi_align(maps[level - 2], row[None], OUTPUT, 2.0**-level, 2)[0]
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


def test_box_formats_and_channels_last_agree_with_the_rows_format():
    rois = DATA["float64/rois"]
    expected = DATA["float64/ratio2/value"]
    run = functools.partial(
        multi_scale_roi_align, output_size=OUTPUT, sampling_ratio=2, image_size=IMAGE
    )
    per_image = [rois[rois[:, 0] == i, 1:] for i in range(2)]
    batched = np.stack([p[:20] for p in per_image])

    @jax.jit  # the three formats in one program
    def formats(xs, per_image, batched, xs_last):
        return run(xs, per_image), run(xs, batched), run(xs_last, batched, channel_axis=-1)

    last_features = [np.moveaxis(f, 1, -1) for f in features()]
    rows, out, last = formats(features(), per_image, batched, last_features)
    np.testing.assert_allclose(rows, expected, rtol=1e-12, atol=1e-12)
    first = len(per_image[0])
    want = np.stack([expected[:20], expected[first : first + 20]])
    assert out.shape == (2, 20, 3, *OUTPUT)
    np.testing.assert_allclose(out, want, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(np.moveaxis(np.asarray(last), -1, 2), want, rtol=1e-12, atol=1e-12)


@pytest.mark.slow
def test_a_box_with_a_non_finite_coordinate_places_no_sample():
    rois, expected = DATA["float64/rois"], DATA["float64/ratio2/value"]
    bad = rois.copy()
    bad[0, 1], bad[1, 4], bad[2, 3] = np.nan, np.inf, -np.inf

    def loss(xs, b):
        return jnp.sum(multi_scale_roi_align(xs, b, OUTPUT, 2, IMAGE) ** 2)

    out = jax.jit(lambda xs, b: multi_scale_roi_align(xs, b, OUTPUT, 2, IMAGE))(features(), bad)
    np.testing.assert_array_equal(out[:3], 0)
    np.testing.assert_allclose(out[3:], expected[3:], rtol=1e-12, atol=1e-12)
    gx, gb = jax.jit(jax.grad(loss, argnums=(0, 1)))(features(), bad)
    clean = jax.jit(jax.grad(loss))(features(), rois[3:])
    for a, b in zip(gx, clean, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(gb[:3], 0)
    assert np.isfinite(gb).all()


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_half_types_pick_levels_and_pool_in_float32(dtype):
    # Areas over float16's 65504 are computed in float32, as torchvision upcasts them.
    xs = [jnp.asarray(f, dtype) for f in features()]
    out = multi_scale_roi_align(xs, jnp.asarray(DATA["float64/rois"], dtype), OUTPUT, 2, IMAGE)
    assert out.dtype == jnp.dtype(dtype)
    tol = TOLERANCE[dtype]
    want = DATA[f"{dtype}/value"]
    np.testing.assert_allclose(np.asarray(out, np.float32), want, rtol=tol, atol=tol)


@pytest.mark.slow
def test_no_boxes_jvp_and_box_gradients():
    xs = features()
    assert multi_scale_roi_align(xs, np.zeros((0, 5)), 2, 2, IMAGE).shape == (0, 3, 2, 2)
    rows = DATA["float64/rois"][:8]
    run = lambda fs: multi_scale_roi_align(fs, rows, OUTPUT, 2, IMAGE)  # noqa: E731
    out, tangent = jax.jvp(run, (xs,), ([2 * f for f in xs],))
    np.testing.assert_allclose(tangent, 2 * np.asarray(out), rtol=1e-12, atol=1e-12)
    # Within a level, the box gradient is roi_align's.
    row = np.array([[1, 20.3, 11.6, 80.2, 70.9]])  # side about 59: level 2, scale 1/4
    by_level = jax.grad(lambda b: jnp.sum(multi_scale_roi_align(xs, b, OUTPUT, 2, IMAGE)))(row)
    direct = jax.grad(lambda b: jnp.sum(roi_align(xs[0], b, OUTPUT, 0.25, 2)))(row)
    np.testing.assert_allclose(by_level, direct, rtol=1e-12, atol=1e-12)
    assert np.abs(direct[0, 1:]).min() > 0


def test_bad_arguments():
    xs = features("float32")
    rows = DATA["float32/rois"]

    def run(fs=xs, boxes=rows, **kw):
        args = dict(output_size=2, sampling_ratio=2, image_size=IMAGE) | kw
        return multi_scale_roi_align(fs, boxes, **args)

    with pytest.raises(TypeError, match="non-empty list or tuple of maps, got list of length 0"):
        run([])
    with pytest.raises(TypeError, match="got ndarray"):
        run(xs[0])
    with pytest.raises(ValueError, match=r"features\[1\] must be 4-D"):
        run([xs[0], xs[1][0]])
    with pytest.raises(ValueError, match=r"features\[1\] must have the dtype, N and C"):
        run([xs[0], xs[1].astype(np.float64)])
    with pytest.raises(ValueError, match=r"features\[1\] must have the dtype, N and C"):
        run([xs[0], xs[1][:, :2]])
    with pytest.raises(ValueError, match=r"scales halving .* got scales \[0.25, 0.0625\]"):
        run([xs[0], xs[2]])
    with pytest.raises(ValueError, match=r"scales halving"):
        run(xs[::-1])
    with pytest.raises(ValueError, match="image_size must be a pair"):
        run(image_size=128)
    with pytest.raises(ValueError, match="image_size must be positive"):
        run(image_size=(0, 160))
    with pytest.raises(ValueError, match="canonical_scale must be a positive number, got 0"):
        run(canonical_scale=0)
    with pytest.raises(TypeError, match="canonical_level must be an int"):
        run(canonical_level=4.0)
    with pytest.raises(TypeError, match="input's dtype float32, got float64"):
        run(boxes=rows.astype(np.float64))
    with pytest.raises(ValueError, match="output_size must be positive"):
        run(output_size=0)
    with pytest.raises(TypeError, match="sampling_ratio must be an int"):
        run(sampling_ratio=None)
