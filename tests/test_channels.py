"""The weights' spread over the channels and its transpose, the channel sums."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import x64_if

from jax_gridsample import grid_sample
from jax_gridsample._channels import channel_sum, spread

NAN, INF = np.nan, np.inf
# Per row of three channels: the sums 6, -0 + -0 = 0 (an add from +0), inf, NaN, -inf.
ROWS = np.array(
    [
        [1.0, 2.0, 3.0],
        [-0.0, -0.0, -0.0],
        [INF, 1.0, 2.0],
        [INF, -INF, 0.0],
        [-INF, NAN, 1.0],
        [-INF, -1.0, -2.0],
    ]
)
SUMS = np.array([6.0, 0.0, INF, NAN, NAN, -INF])


def _same_bits(actual, expected, what):
    actual = np.asarray(actual)
    np.testing.assert_array_equal(actual, expected, err_msg=what)
    signed = ~np.isnan(expected)  # a NaN's sign means nothing
    assert np.array_equal(np.signbit(actual[signed]), np.signbit(expected[signed])), what


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_channel_sums_and_spread_equal_sum_and_broadcast(dtype):
    """Exact sums (signed zeros and non-finite values too) and broadcasts, on either axis."""

    @jax.jit
    def run(rows, w):
        return (
            channel_sum(rows, 1),
            channel_sum(rows.T, 0),
            spread(w, (w.shape[0], 3), 1),
            spread(w, (3, w.shape[0]), 0),
        )

    with x64_if(dtype):
        rows, w = jnp.asarray(ROWS, dtype), jnp.asarray(SUMS, dtype)
        by_row, by_column, spread_last, spread_first = run(rows, w)
    assert by_row.dtype == np.dtype(dtype)
    _same_bits(by_row, SUMS, "channel_sum over the last axis")
    _same_bits(by_column, SUMS, "channel_sum over the first axis")
    _same_bits(spread_last, np.broadcast_to(SUMS[:, None], (6, 3)), "spread to the last axis")
    _same_bits(spread_first, np.broadcast_to(SUMS[None], (3, 6)), "spread to the first axis")


def test_each_is_the_others_transpose_under_jvp_vmap_and_second_derivatives():
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(4, 5, 3)), jnp.float32)  # (batch, points, channels)
    w = jnp.asarray(rng.normal(size=(4, 5)), jnp.float32)

    def weighted_sum(x, w):
        return jnp.sum(jax.vmap(lambda a, b: a * spread(b, a.shape, 1))(x, w) ** 2)

    @jax.jit
    def run(x, w):
        spread_t = jax.linear_transpose(lambda b: spread(b, (5, 3), 1), w[0])(x[0])[0]
        sum_t = jax.linear_transpose(lambda a: channel_sum(a, 1), x[0])(w[0])[0]
        tangent = jax.jvp(lambda a: channel_sum(a, 1), (x[0],), (x[1],))[1]
        batched = jax.vmap(lambda a: channel_sum(a, 0), in_axes=2)(jnp.moveaxis(x, 2, 0))
        spread_batched = jax.vmap(lambda b: spread(b, (3, 5), 0), in_axes=1, out_axes=2)(w.T)
        hessian = jax.hessian(weighted_sum, argnums=1)(x, w)
        return (
            spread_t,
            sum_t,
            tangent,
            batched,
            spread_batched,
            jax.grad(weighted_sum, 1)(x, w),
            hessian,
        )

    spread_t, sum_t, tangent, batched, spread_batched, grad_w, hessian = run(x, w)
    x64, w64 = np.asarray(x, np.float64), np.asarray(w, np.float64)
    tol = {"rtol": 1e-5, "atol": 1e-6}
    np.testing.assert_allclose(spread_t, x64[0].sum(1), **tol)
    np.testing.assert_allclose(sum_t, np.broadcast_to(w64[0][:, None], (5, 3)), **tol)
    np.testing.assert_allclose(tangent, x64[1].sum(1), **tol)
    np.testing.assert_allclose(batched, x64.sum(2).T, **tol)
    np.testing.assert_allclose(spread_batched, np.broadcast_to(w64.T[None], (3, 5, 4)), **tol)
    # d/dw of sum((x w)^2) is 2 w sum_c x^2, and its Hessian is diagonal, 2 sum_c x^2.
    squares = (x64**2).sum(2)
    np.testing.assert_allclose(grad_w, 2 * w64 * squares, **tol)
    expected = np.zeros((4, 5, 4, 5))
    for n in range(4):
        for p in range(5):
            expected[n, p, n, p] = 2 * squares[n, p]
    np.testing.assert_allclose(hessian, expected, **tol)


def test_gradient_channel_sums_stay_in_xla_loops():
    """On a jaxlib that hands add reductions to YNNPACK, `grid_sample`'s gradient has none."""
    points = jnp.ones((2, 128 * 128, 3))  # the size of the gradient's channel sums below
    control = jax.jit(lambda a, b: jnp.sum(a * b, axis=-1)).lower(points, points)
    if "__ynn_fusion" not in control.compile().as_text():
        pytest.skip("this jaxlib hands no reduction of this size to YNNPACK")
    g = jnp.zeros((2, 128, 128, 2))
    for channel_axis in (1, -1):
        x = jnp.ones((2, 3, 64, 64) if channel_axis == 1 else (2, 64, 64, 3))
        ct = jnp.ones((2, 3, 128, 128) if channel_axis == 1 else (2, 128, 128, 3))

        def pullback(x, g, ct, axis=channel_axis):
            return jax.vjp(lambda x, g: grid_sample(x, g, channel_axis=axis), x, g)[1](ct)

        text = jax.jit(pullback).lower(x, g, ct).compile().as_text()
        assert "__ynn_fusion" not in text, f"channel_axis={channel_axis}"
