"""grid_sample_separable: grid_sample on the expanded grid, values and every gradient.

The reference is our own `grid_sample` (itself checked against torch's fixtures)
on the grid built from the axis vectors; `tests/fixtures/separable.npz` checks a
subset against torch directly (test_parity_fixtures.py).
"""

from __future__ import annotations

import functools
import math
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import assert_close, x64_if
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jax.test_util import check_grads
from numpy_reference import grad_input_ref, grid_sample_ref
from pixel_grids import pixel_grid_values

from jax_gridsample import _policy, _separable, grid_sample, grid_sample_separable
from jax_gridsample._grid_sample import Config

MODES = ("bilinear", "nearest", "bicubic")
PADDINGS = ("zeros", "border", "reflection")
KINDS = ("inside", "outside", "pixel", "box", "shuffled", "nonfinite")
# (input shape, output spatial shape): N > 1, C > 1, non-square, size-1 axes.
SHAPES = {
    2: [((2, 3, 5, 7), (4, 6)), ((1, 2, 1, 6), (3, 1))],
    3: [((2, 2, 3, 4, 5), (2, 3, 4)), ((1, 1, 1, 3, 1), (2, 1, 3))],
}
COMBOS = [
    (ndim, mode, pad, align)
    for ndim in (2, 3)
    for mode in MODES
    if not (ndim == 3 and mode == "bicubic")
    for pad in PADDINGS
    for align in (False, True)
]


def combo_id(ndim, mode, pad, align):
    return f"{ndim + 2}d-{mode}-{pad}-ac{int(align)}"


def axis_values(kind, rng, n, out, size, align, dtype):
    """`(n, out)` normalised coordinates of one kind along an input axis of ``size``."""
    dtype = np.dtype(dtype)
    if kind == "inside":
        v = rng.uniform(-1, 1, (n, out))
    elif kind == "outside":
        v = rng.choice([-1, 1], (n, out)) * rng.uniform(1, 4, (n, out))
        v.flat[:: max(1, out - 1)] = rng.choice([-1e10, 1e10, -3e38, 3e38])  # decision 5
    elif kind == "pixel":  # exact integer and half-integer pixel positions
        return rng.choice(pixel_grid_values(size, align, dtype), (n, out))
    elif kind in ("box", "shuffled"):  # box pastes, partly outside the input
        start = rng.uniform(-0.5, 0.7, (n, 1)) * out
        width = rng.uniform(0.3, 1.5, (n, 1)) * out
        v = (np.arange(out) + 0.5 - start) / width * 2 - 1
        if kind == "shuffled":
            v = rng.permuted(v, axis=1)
    else:  # nonfinite
        v = rng.uniform(-1.2, 1.2, (n, out))
        specials = [np.nan, np.inf, -np.inf, 1e30]
        v.flat[rng.choice(v.size, min(v.size, 2), replace=False)] = rng.choice(specials, 2)
    return v.astype(dtype)


def make_axes(kind, rng, x_shape, out, align, dtype, channels_last=False):
    """Axis vectors in grid order (x, y[, z]) for an input of ``x_shape``."""
    spatial = x_shape[1:-1] if channels_last else x_shape[2:]
    n = x_shape[0]
    return tuple(
        axis_values(kind, rng, n, o, s, align, dtype)
        for o, s in zip(reversed(out), reversed(spatial), strict=True)
    )


def expand(axes, xp=jnp):
    """The full grid: grid[n, (d,) h, w] = (x[n, w], y[n, h], (z[n, d]))."""
    ndim = len(axes)
    n = axes[0].shape[0]
    shape = (n,) + tuple(a.shape[1] for a in reversed(axes))
    comps = []
    for k, a in enumerate(axes):
        view = [n] + [1] * ndim
        view[ndim - k] = a.shape[1]
        comps.append(xp.broadcast_to(xp.reshape(a, view), shape))
    return xp.stack(comps, axis=-1)


def sum_per_axis(grid_grad):
    """The grid's gradient summed over the output axes other than each component's own."""
    ndim = grid_grad.shape[-1]
    out = []
    for k in range(ndim):
        own = ndim - k  # output axis of component k (x: the last one)
        others = tuple(a for a in range(1, ndim + 1) if a != own)
        out.append(jnp.sum(grid_grad[..., k], axis=others))
    return tuple(out)


def comparison(mode, pad, align, *, channel_axis=1):
    """``compare`` for these options, compiled once for all the calls with the same shapes.

    Returns a function of ``(x, axes, dtype, what)``. Compiles dominate the
    suite's time: one jitted function computes the value, the vjp (input and
    each axis) and the jvp of both sides, and the callers reuse it for every
    axis kind of one shape. It is made per test, because `_policy`'s forcing
    switches act at trace time, which a cached trace would skip.
    """

    def sep(x, *axes):
        return grid_sample_separable(x, axes, mode, pad, align, channel_axis=channel_axis)

    def ref(x, *axes):
        return grid_sample(x, expand(axes), mode, pad, align, channel_axis=channel_axis)

    @jax.jit
    def both(primals, ct, tangents):
        results = []
        for f in (sep, ref):
            out, vjp = jax.vjp(f, *primals)
            results.append((out, vjp(ct), jax.jvp(f, primals, tangents)[1]))
        return results

    def check(x, axes, dtype, what=""):
        rng = np.random.default_rng(7)
        out_spatial = tuple(a.shape[1] for a in reversed(axes))  # (..., H_out, W_out)
        if channel_axis == -1:
            shape = (x.shape[0], *out_spatial, x.shape[-1])
        else:
            shape = (*x.shape[:2], *out_spatial)
        ct = jnp.asarray(rng.standard_normal(shape), x.dtype)
        tangents = tuple(jnp.asarray(rng.standard_normal(a.shape), a.dtype) for a in (x, *axes))
        (out, sep_vjp, t_sep), (expected, ref_vjp, t_ref) = both((x, *axes), ct, tangents)
        assert out.dtype == expected.dtype and out.shape == expected.shape
        assert_close(out, expected, dtype, what=f"{what} value", exact=mode == "nearest")
        for k, (a, b) in enumerate(zip(sep_vjp, ref_vjp, strict=True)):
            assert_close(a, b, dtype, what=f"{what} vjp {k}")
        assert_close(t_sep, t_ref, dtype, what=f"{what} jvp")

    return check


def compare(x, axes, mode, pad, align, dtype, *, channel_axis=1, what=""):
    """Values, vjp (input and each axis) and jvp against grid_sample on the expanded grid."""
    comparison(mode, pad, align, channel_axis=channel_axis)(x, axes, dtype, what)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("ndim,mode,pad,align", COMBOS, ids=[combo_id(*c) for c in COMBOS])
def test_equals_grid_sample_on_expanded_grid(ndim, mode, pad, align, dtype):
    """Every axis kind (`KINDS`) of one shape per dtype; both shapes for every combination."""
    x_shape, out = SHAPES[ndim][dtype == "float64"]
    check = comparison(mode, pad, align)
    with x64_if(dtype):
        for kind in KINDS:
            seed = [ndim, MODES.index(mode), PADDINGS.index(pad), align, len(kind)]
            rng = np.random.default_rng(seed)
            x = jnp.asarray(rng.standard_normal(x_shape), dtype)
            axes = tuple(jnp.asarray(a) for a in make_axes(kind, rng, x_shape, out, align, dtype))
            check(x, axes, dtype, what=f"{kind} {x_shape}->{out}")


# Every pair of the gather and matmul formulations; the fallback to grid_sample on the
# expanded grid as the derivatives (as the policy uses it) and as the value.
_OWN = [f for f in _policy.SEPARABLE if f != "expanded"]
FORCED = [(f, d) for f in _OWN for d in _OWN] + [("taps", "expanded"), ("expanded", "matmul")]


@pytest.mark.parametrize("plan", FORCED, ids=[f"{f}-{d}" for f, d in FORCED])
@pytest.mark.parametrize("ndim,mode,pad", [(2, "bicubic", "reflection"), (3, "bilinear", "zeros")])
def test_every_formulation_equals_grid_sample(plan, ndim, mode, pad):
    rng = np.random.default_rng(3)
    with x64_if("float64"), _policy.force_separable(*plan):
        x_shape, out = SHAPES[ndim][0]
        x = jnp.asarray(rng.standard_normal(x_shape))
        check = comparison(mode, pad, False)
        for kind in ("box", "pixel", "nonfinite"):
            axes = tuple(jnp.asarray(a) for a in make_axes(kind, rng, x_shape, out, False, "f8"))
            check(x, axes, "float64", what=f"{plan} {kind}")


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
@pytest.mark.parametrize("mode", MODES)
def test_half_dtypes_separable(mode, dtype):
    rng = np.random.default_rng(5)
    x_shape, out = SHAPES[2][0]
    x = jnp.asarray(rng.standard_normal(x_shape), dtype)
    axes = tuple(jnp.asarray(a, dtype) for a in make_axes("box", rng, x_shape, out, False, "f4"))
    compare(x, axes, mode, "border", False, dtype)


@pytest.mark.parametrize("ndim", [2, 3])
def test_channels_last(ndim):
    rng = np.random.default_rng(6)
    x_shape, out = SHAPES[ndim][0]
    x = jnp.asarray(rng.standard_normal(x_shape), jnp.float32)
    axes = tuple(jnp.asarray(a) for a in make_axes("box", rng, x_shape, out, False, "f4"))
    x_last = jnp.moveaxis(x, 1, -1)
    compare(x_last, axes, "bilinear", "zeros", False, "float32", channel_axis=-1)
    first = grid_sample_separable(x, axes)
    last = grid_sample_separable(x_last, axes, channel_axis=-1)
    # Same numbers to rounding: channels-first reads x by a matmul, channels-last by gathers.
    assert_close(jnp.moveaxis(last, -1, 1), first, "float32")


@pytest.mark.parametrize("ndim", [2, 3])
def test_check_grads_float64_separable(ndim):
    rng = np.random.default_rng(8)
    x_shape, out = SHAPES[ndim][0]
    with jax.enable_x64(True):
        x = jnp.asarray(rng.standard_normal(x_shape))
        # Off the kinks (integer and half-integer pixel positions), inside.
        axes = tuple(
            jnp.asarray(np.round(a * 8) / 8 + 0.03)
            for a in make_axes("inside", rng, x_shape, out, False, "f8")
        )
        mode = "bicubic" if ndim == 2 else "bilinear"

        def f(x, *axes):
            return grid_sample_separable(x, axes, mode, "zeros", False)

        check_grads(lambda x: f(x, *axes), (x,), order=1, modes=("fwd", "rev"))
        check_grads(lambda *a: f(x, *a), axes, order=2, modes=("fwd", "rev"), eps=1e-5)


def test_jvp_vjp_consistent_and_hessian_equals_expanded():
    rng = np.random.default_rng(9)
    x_shape, out = SHAPES[2][0]
    with jax.enable_x64(True):
        x = jnp.asarray(rng.standard_normal(x_shape))
        axes = tuple(jnp.asarray(a) for a in make_axes("box", rng, x_shape, out, False, "f8"))

        def loss(f):
            return lambda *axes: jnp.sum(jnp.sin(f(axes)))

        sep = loss(lambda a: grid_sample_separable(x, a, "bicubic", "border", False))
        ref = loss(lambda a: grid_sample(x, expand(a), "bicubic", "border", False))
        h_sep = jax.hessian(sep, argnums=(0, 1))(*axes)
        h_ref = jax.hessian(ref, argnums=(0, 1))(*axes)
        for a, b in zip(jax.tree.leaves(h_sep), jax.tree.leaves(h_ref), strict=True):
            assert_close(a, b, "float64", what="hessian")

        tangents = tuple(jnp.asarray(rng.standard_normal(a.shape)) for a in (x, *axes))

        def f(x, *axes):
            return grid_sample_separable(x, axes, "bilinear", "reflection", True)

        out_, t_out = jax.jvp(f, (x, *axes), tangents)
        ct = jnp.asarray(rng.standard_normal(out_.shape))
        cts = jax.vjp(f, x, *axes)[1](ct)
        lhs = float(jnp.vdot(t_out, ct))
        rhs = sum(float(jnp.vdot(t, c)) for t, c in zip(tangents, cts, strict=True))
        assert abs(lhs - rhs) <= 1e-12 * max(1.0, abs(lhs))


def test_vmap_equals_loop_and_jit():
    rng = np.random.default_rng(10)
    x = jnp.asarray(rng.standard_normal((3, 2, 1, 4, 5)), jnp.float32)  # (B, N, C, H, W)
    ax = jnp.asarray(rng.uniform(-1.2, 1.2, (3, 2, 6)), jnp.float32)
    ay = jnp.asarray(rng.uniform(-1.2, 1.2, (3, 2, 3)), jnp.float32)

    def f(x, ax, ay):
        return grid_sample_separable(x, (ax, ay), "bicubic", "reflection", False)

    batched = jax.vmap(f)(x, ax, ay)
    jitted = jax.jit(jax.vmap(f))(x, ax, ay)
    for b in range(3):
        assert_close(batched[b], f(x[b], ax[b], ay[b]), "float32", exact=True)
    assert_close(jitted, batched, "float32")


def test_empty_sizes_and_size_one_axes():
    x = jnp.ones((2, 3, 1, 1), jnp.float32)
    assert grid_sample_separable(x, (jnp.zeros((2, 0)), jnp.zeros((2, 4)))).shape == (2, 3, 4, 0)
    assert grid_sample_separable(jnp.ones((0, 3, 2, 2)), (jnp.zeros((0, 2)),) * 2).shape == (
        0,
        3,
        2,
        2,
    )
    empty_c = jnp.ones((2, 0, 2, 2))
    assert grid_sample_separable(empty_c, (jnp.zeros((2, 5)), jnp.zeros((2, 4)))).shape == (
        2,
        0,
        4,
        5,
    )
    # align_corners=True on a size-1 axis: every finite value reads the one pixel.
    axes = (jnp.array([[-3.0, 0.0, 0.7]] * 2), jnp.array([[5.0, -1.0]] * 2))
    out = grid_sample_separable(x, axes, "bilinear", "zeros", True)
    assert_close(out, np.ones((2, 3, 2, 3)), "float32", exact=True)


@pytest.mark.parametrize("mode", ["bilinear", "nearest", "bicubic"])
@pytest.mark.parametrize("pad", ["zeros", "border", "reflection"])
@pytest.mark.parametrize("align", [False, True])
def test_nan_terms_are_nan_exactly_where_the_rule_says(mode, pad, align):
    """`_with_nans` tests ``isfinite`` of the coordinates instead of each axis' `nan` term.

    That holds only if the term is NaN exactly at non-finite coordinates
    where `_weights_can_be_nan`; elsewhere no term is made, so every weight
    must be finite.
    """
    probe = jnp.array([[jnp.nan, jnp.inf, -jnp.inf, 3e38, -3e38, 1e30, 0.5, -7.0]])
    config = Config(mode, pad, align, False, ())
    for size in (1, 2, 5):
        axis = _separable._axis(probe, size, config, 2)
        if _separable._weights_can_be_nan(config):
            np.testing.assert_array_equal(np.isnan(np.asarray(axis.nan)), ~np.isfinite(probe))
        else:
            assert axis.nan is None
            assert all(np.isfinite(np.asarray(w)).all() for w in axis.weight), size


@pytest.mark.parametrize("ndim,mode,pad,align", COMBOS, ids=[combo_id(*c) for c in COMBOS])
def test_nan_cotangent_at_nan_outputs(ndim, mode, pad, align):
    """A loss of the NaN outputs (non-finite coordinates) gives grid_sample's gradients.

    Its cotangent is NaN there; the matmul derivatives must not spread it
    through zero weights to the input gradient, nor lose it from the axis
    gradients (`_separable._matmuls_with_nans_jvp`).
    """
    rng = np.random.default_rng([11, ndim, MODES.index(mode), PADDINGS.index(pad), align])
    with x64_if("float64"):
        for x_shape, out in SHAPES[ndim][align : align + 1]:  # both shapes over both settings
            x = jnp.asarray(rng.standard_normal(x_shape))
            axes = tuple(
                jnp.asarray(a) for a in make_axes("nonfinite", rng, x_shape, out, align, "f8")
            )

            def sep(x, *axes):
                return grid_sample_separable(x, axes, mode, pad, align)

            def ref(x, *axes):
                return grid_sample(x, expand(axes), mode, pad, align)

            value, sep_vjp = jax.vjp(sep, x, *axes)
            expected, ref_vjp = jax.vjp(ref, x, *axes)
            assert_close(value, expected, "float64", exact=mode == "nearest")
            ct = jnp.where(jnp.isnan(expected), jnp.nan, rng.standard_normal(value.shape))
            if _separable._weights_can_be_nan(Config(mode, pad, align, False, ())):
                assert np.isnan(np.asarray(ct)).any()  # the case has NaN outputs
            for k, (a, b) in enumerate(zip(sep_vjp(ct), ref_vjp(ct), strict=True)):
                assert_close(a, b, "float64", what=f"{x_shape}->{out} vjp {k}")


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_nan_slope_depends_only_on_the_coordinates_class(dtype):
    """`_separable._nan_slope` transposes NaN, +inf and -inf only; finite values give (0, True).

    Compared with the transpose of each axis' `nan` term taken at every
    coordinate, for every configuration that has the term.
    """
    values = [np.nan, np.inf, -np.inf, 3e38, -3e38, 1e30, 2.0**64, 1e19, 7.0, 0.5, 0.0, -1.0]
    with x64_if(dtype):
        probe = jnp.asarray([values], dtype)
        for ndim, mode, pad, align in COMBOS:
            config = Config(mode, pad, align, False, ())
            if not _separable._weights_can_be_nan(config):
                continue
            for size in (1, 2, 5, 128, 3000):
                term = _separable._nan_term(size, config, ndim)
                _, transpose = jax.vjp(term, probe)
                (slope,) = transpose(jnp.ones_like(probe))
                (passed,) = transpose(jnp.full_like(probe, jnp.nan))
                by_class = _separable._nan_slope(probe, term)
                what = f"{ndim}d {mode} {pad} {align} {size}"
                np.testing.assert_array_equal(by_class[0], slope, err_msg=what)
                np.testing.assert_array_equal(by_class[1], np.isnan(passed), err_msg=what)


def _has_nan_terms(combo):
    return _separable._weights_can_be_nan(Config(*combo[1:], False, ()))


NAN_COMBOS = [c for c in COMBOS if _has_nan_terms(c)]


@pytest.mark.parametrize("ndim,mode,pad,align", NAN_COMBOS, ids=[combo_id(*c) for c in NAN_COMBOS])
def test_matmuls_with_nans_equals_with_nans(ndim, mode, pad, align):
    """`_matmuls_with_nans` has the value and derivatives of `_with_nans` of the same passes.

    For each argument differentiated alone, and all, forward and reverse, with
    non-finite coordinates and a NaN cotangent at the NaN outputs. The
    others' tangents are symbolic zeros for `_matmuls_with_nans`, and zeros
    for `_with_nans`, as `_sample_jvp` gives both (a symbolic zero would
    skip `_outer_product`'s NaN tangent).
    """
    config = Config(mode, pad, align, False, ())
    rng = np.random.default_rng([12, ndim, MODES.index(mode), PADDINGS.index(pad), align])
    with x64_if("float64"):
        x_shape, out = SHAPES[ndim][0]
        x = jnp.asarray(rng.standard_normal(x_shape))
        vectors = [
            jnp.asarray(a) for a in make_axes("nonfinite", rng, x_shape, out, align, "f8")[::-1]
        ]

        def fused(x, *vectors):
            return _separable._matmuls_with_nans(x, vectors, config)

        def plain(x, *vectors):
            spatial = x.shape[2:]
            axes = [
                _separable._axis(v, s, config, ndim) for v, s in zip(vectors, spatial, strict=True)
            ]
            out = _separable._resample(x, axes, config, ("matmul",) * ndim)
            return _separable._with_nans(out, axes, config)

        args = (x, *vectors)
        for which in [[k] for k in range(len(args))] + [list(range(len(args)))]:

            def part(f, which=which):
                def g(*parts):
                    full = list(args)
                    for k, p in zip(which, parts, strict=True):
                        full[k] = p
                    return f(*full)

                return g

            primals = tuple(args[k] for k in which)
            tangents = tuple(jnp.asarray(rng.standard_normal(p.shape)) for p in primals)
            value, t_fused = jax.jvp(part(fused), primals, tangents)
            every = [jnp.zeros_like(a) for a in args]
            for k, t in zip(which, tangents, strict=True):
                every[k] = t
            expected, t_plain = jax.jvp(plain, args, tuple(every))
            assert_close(value, expected, "float64", what=f"value {which}")
            assert_close(t_fused, t_plain, "float64", what=f"jvp {which}")
            ct = jnp.where(jnp.isnan(expected), jnp.nan, rng.standard_normal(value.shape))
            got = jax.vjp(part(fused), *primals)[1](ct)
            want = jax.vjp(part(plain), *primals)[1](ct)
            for k, a, b in zip(which, got, want, strict=True):
                assert_close(a, b, "float64", what=f"vjp {k} of {which}")


@pytest.mark.parametrize("dim", [1, 2, 3])
@pytest.mark.parametrize("s_first", [False, True])
def test_product_layouts(dim, s_first):
    """`_product` along each axis with the matrix in either layout is the dense product."""
    rng = np.random.default_rng([13, dim, s_first])
    with x64_if("float64"):
        x = jnp.asarray(rng.standard_normal((2, 3, 4, 5)))
        matrix = rng.standard_normal((2, 6, x.shape[dim]))  # (N, O, S)
        laid_out = np.swapaxes(matrix, 1, 2) if s_first else matrix
        got = _separable._product(x, jnp.asarray(laid_out), dim, s_first)
        want = np.moveaxis(
            np.einsum("nos,n...s->n...o", matrix, np.moveaxis(np.asarray(x), dim, -1)), -1, dim
        )
        assert_close(got, want, "float64")


def _six_pixel_axes() -> tuple[jax.Array, jax.Array]:
    """Two examples' x and y, 5 outputs each, on a 6x6 input.

    Pixel coordinates ((g + 1) * 6 - 1) / 2. x: -0.2, 1.15, 2.5, 3.85, 5.2,
    valid taps {0}, {1, 2}, {2, 3}, {3, 4}, {5}. y: -0.2, 0.475, 1.15, 1.825,
    2.5, taps {0}, {0, 1}, {1, 2}, {1, 2}, {2, 3}: rows 0-3 only.
    """
    return (
        jnp.asarray(np.tile(np.linspace(-0.9, 0.9, 5), (2, 1)), jnp.float32),
        jnp.asarray(np.tile(np.linspace(-0.9, 0.0, 5), (2, 1)), jnp.float32),
    )


def test_nonfinite_input_values():
    """What the docstring's Note and the README promise for NaN and inf pixels.

    For these sizes (at most 128 pixels per axis, one channel) the policy computes the
    value's x pass and every derivative with matmuls, where a non-finite pixel
    meets zero weights (0 x inf = NaN). So the value is non-finite on whole
    output rows, those whose y taps read its input row (grid_sample's only
    where the x taps read its column too); the axis gradients are non-finite
    at every output whose taps read an input column (x) or row (y) holding
    such a pixel; the input gradient is grid_sample's.
    """
    rng = np.random.default_rng(11)
    x = rng.standard_normal((2, 1, 6, 6)).astype(np.float32)
    x[0, 0, 2, 3] = np.inf  # row 2, column 3
    x[0, 0, 4, 5] = np.nan  # row 4, column 5: no output reads it
    x = jnp.asarray(x)
    axes = _six_pixel_axes()
    assert _policy.separable_plan("bilinear", (6, 6), (5, 5), 1) == ("taps_rows", "matmul")

    sep = lambda x, ax, ay: grid_sample_separable(x, (ax, ay))  # noqa: E731
    ref = lambda x, ax, ay: grid_sample(x, expand((ax, ay)))  # noqa: E731
    out, expected = np.asarray(sep(x, *axes)), np.asarray(ref(x, *axes))
    # Output rows 2, 3, 4 read input row 2 (the inf); grid_sample's are non-finite
    # only at columns 2, 3, which read column 3, and there both are +inf.
    rows = np.zeros((5, 5), bool)
    rows[2:] = True
    np.testing.assert_array_equal(~np.isfinite(out[0, 0]), rows)
    np.testing.assert_array_equal(~np.isfinite(expected[0, 0]), rows & (np.arange(5) % 4 >= 2))
    np.testing.assert_array_equal(out[0, 0, 2:, 2:4], expected[0, 0, 2:, 2:4])
    assert_close(out[0, 0, :2], expected[0, 0, :2], "float32", what="value, other rows")
    assert_close(out[1], expected[1], "float32", what="value, finite example")

    ct = jnp.ones(out.shape, jnp.float32)
    g_sep = jax.vjp(sep, x, *axes)[1](ct)
    g_ref = jax.vjp(ref, x, *axes)[1](ct)
    assert_close(g_sep[0], g_ref[0], "float32", what="input gradient")
    # x's taps read column 3 at outputs 2, 3 and column 5 at output 4; y's read
    # row 2 at outputs 2, 3, 4 (row 4 at none).
    np.testing.assert_array_equal(~np.isfinite(g_sep[1][0]), [0, 0, 1, 1, 1])
    np.testing.assert_array_equal(~np.isfinite(g_sep[2][0]), [0, 0, 1, 1, 1])
    np.testing.assert_array_equal(~np.isfinite(g_ref[1][0]), [0, 0, 1, 1, 0])
    for a, b in zip(g_sep[1:], g_ref[1:], strict=True):
        keep = np.isfinite(a[0])
        assert_close(a[0][keep], b[0][keep], "float32", what="axis gradient, other outputs")
        assert_close(a[1], b[1], "float32", what="axis gradient, finite example")


@pytest.mark.parametrize("plan", [("taps", "taps"), ("taps", "expanded")])
def test_nonfinite_input_values_without_matmuls_are_grid_samples(plan):
    """Gathers (and the fallback to grid_sample's derivatives) read only the stencils' pixels."""
    rng = np.random.default_rng(13)
    x = rng.standard_normal((2, 1, 6, 6)).astype(np.float32)
    x[0, 0, 2, 3] = np.inf
    x[0, 0, 4, 5] = np.nan
    x = jnp.asarray(x)
    axes = _six_pixel_axes()
    with _policy.force_separable(*plan):
        sep = jax.vjp(lambda x, *a: grid_sample_separable(x, a), x, *axes)
        ct = jnp.ones(sep[0].shape, jnp.float32)
        got = (sep[0], *sep[1](ct))
    ref = jax.vjp(lambda x, *a: grid_sample(x, expand(a)), x, *axes)
    expected = (ref[0], *ref[1](ct))
    assert not np.isfinite(np.asarray(expected[0])).all()  # the case reads the inf
    for what, a, b in zip(("value", "d input", "d x", "d y"), got, expected, strict=True):
        a, b = np.asarray(a), np.asarray(b)
        np.testing.assert_array_equal(np.isfinite(a), np.isfinite(b), err_msg=what)
        np.testing.assert_array_equal(a[np.isinf(b)], b[np.isinf(b)], err_msg=what)
        keep = np.isfinite(b)
        assert_close(a[keep], b[keep], "float32", what=what)


def _nonfinite_cotangent_case():
    """Finite input and axes (as in the tests above); a cotangent of ones, +inf at one output.

    The output (n=0, c=1, h=2, w=3) reads input rows 1, 2 (y = 1.15) and
    columns 3, 4 (x = 3.85) of channel 1.
    """
    rng = np.random.default_rng(14)
    x = jnp.asarray(rng.standard_normal((2, 2, 6, 6)), jnp.float32)
    axes = _six_pixel_axes()
    ct = np.ones((2, 2, 5, 5), np.float32)
    ct[0, 1, 2, 3] = np.inf
    return x, axes, jnp.asarray(ct)


def _gradients(fn, x, axes, ct):
    return tuple(np.asarray(g) for g in jax.vjp(fn, x, *axes)[1](ct))


@pytest.mark.parametrize("pad", ["zeros", "border"])
def test_nonfinite_cotangent_and_input_tangent(pad):
    """What the docstring's Note and the README promise for non-finite (co)tangents.

    The matmul derivatives (these sizes, `_policy.separable_plan`) contract
    the whole cotangent with weight matrices, mostly zeros: an inf there
    makes the input gradient of its (example, channel) non-finite at every
    pixel, where grid_sample's is non-finite only at the four pixels that
    output reads. The axis gradients are non-finite where grid_sample's are
    (its own x and y), and elsewhere both are grid_sample's. In forward
    mode an inf in the input's tangent makes the output's tangent
    non-finite on its whole (example, channel). Zeros padding takes
    `_matmuls_with_nans`, border `_with_nans`.
    """
    x, axes, ct = _nonfinite_cotangent_case()
    assert _policy.separable_plan("bilinear", (6, 6), (5, 5), 2).derivatives == "matmul"
    got = _gradients(lambda x, *a: grid_sample_separable(x, a, padding_mode=pad), x, axes, ct)
    expected = _gradients(lambda x, *a: grid_sample(x, expand(a), padding_mode=pad), x, axes, ct)

    reads = np.zeros((6, 6), bool)
    reads[1:3, 3:5] = True
    np.testing.assert_array_equal(~np.isfinite(expected[0][0, 1]), reads)
    assert not np.isfinite(got[0][0, 1]).any()
    others = np.ones(x.shape, bool)
    others[0, 1] = False
    assert_close(got[0][others], expected[0][others], "float32", what="input gradient, others")
    for what, a, b, index in (("d x", got[1], expected[1], 3), ("d y", got[2], expected[2], 2)):
        bad = np.zeros(b.shape, bool)
        bad[0, index] = True
        np.testing.assert_array_equal(~np.isfinite(b), bad, err_msg=what)
        np.testing.assert_array_equal(~np.isfinite(a), bad, err_msg=what)
        assert_close(a[~bad], b[~bad], "float32", what=what)

    # Forward mode, the same products untransposed: an inf in the input's
    # tangent at a pixel that outputs (2..4, 2..3) read.
    dx = np.zeros(x.shape, np.float32)
    dx[0, 1, 2, 3] = np.inf
    zeros = tuple(jnp.zeros_like(a) for a in axes)
    tangents = [
        np.asarray(jax.jvp(fn, (x, *axes), (jnp.asarray(dx), *zeros))[1])
        for fn in (
            lambda x, *a: grid_sample_separable(x, a, padding_mode=pad),
            lambda x, *a: grid_sample(x, expand(a), padding_mode=pad),
        )
    ]
    reads = np.zeros((5, 5), bool)
    reads[2:, 2:4] = True
    np.testing.assert_array_equal(~np.isfinite(tangents[1][0, 1]), reads)
    assert not np.isfinite(tangents[0][0, 1]).any()
    others = np.ones(tangents[1].shape, bool)
    others[0, 1] = False
    assert_close(tangents[0][others], tangents[1][others], "float32", what="tangent, others")


@pytest.mark.parametrize("plan", [("taps", "taps"), ("taps", "expanded")])
def test_nonfinite_cotangent_without_matmuls_is_grid_samples(plan):
    """Gathers' transposes (and the fallback) send a cotangent only to its stencil's pixels."""
    x, axes, ct = _nonfinite_cotangent_case()
    with _policy.force_separable(*plan):
        got = _gradients(lambda x, *a: grid_sample_separable(x, a), x, axes, ct)
    expected = _gradients(lambda x, *a: grid_sample(x, expand(a)), x, axes, ct)
    assert not np.isfinite(expected[0]).all()  # the case's inf reaches the input gradient
    for what, a, b in zip(("d input", "d x", "d y"), got, expected, strict=True):
        np.testing.assert_array_equal(np.isfinite(a), np.isfinite(b), err_msg=what)
        keep = np.isfinite(b)
        assert_close(a[keep], b[keep], "float32", what=what)


MASK_PASTE = ((16, 1, 28, 28), (300, 500))


@pytest.mark.parametrize("shape,out", [MASK_PASTE, ((2, 3, 8, 100), (40, 128))])
def test_compiled_gradient_has_no_scatter_and_no_expanded_arrays(shape, out):
    rng = np.random.default_rng(12)
    x = jnp.asarray(rng.standard_normal(shape), jnp.float32)
    axes = tuple(jnp.asarray(a) for a in make_axes("box", rng, shape, out, False, "f4"))
    ct = jnp.asarray(rng.standard_normal(shape[:2] + out), jnp.float32)

    def loss(x, *axes):
        return jnp.sum(grid_sample_separable(x, axes) * ct)

    out_size = math.prod(shape[:2] + out)
    for fn in (jax.grad(loss, argnums=(0, 1, 2)), lambda x, *a: grid_sample_separable(x, a)):
        hlo = jax.jit(fn).lower(x, *axes).compile().as_text()
        assert not re.search(r"\sscatter\(", hlo)
        # No expanded grid (2 x the output for C = 1) and no per-corner stack.
        sizes = [
            math.prod(map(int, filter(None, s.split(","))))
            for s in re.findall(r"\[([\d,]*)\]", hlo)
        ]
        assert max(sizes) <= out_size


@pytest.mark.parametrize(
    "axes,exc,match",
    [
        (
            [np.zeros((2, 4))],
            ValueError,
            r"axes must hold 2 vectors \(x, y\) for a 4-D input, got 1",
        ),
        ("xy", TypeError, r"axes must be a tuple \(x, y\) of arrays for a 4-D input, got str"),
        (np.zeros((2, 2, 4)), TypeError, r"axes must be a tuple .* got ndarray"),
        (([[0.0]], np.zeros((2, 4))), TypeError, r"axes\[0\] \(x\) must be a jax.Array or numpy"),
        (
            (np.zeros((2, 4)), np.zeros(4)),
            ValueError,
            r"axes\[1\] \(y\) must have shape \(N, Y_out\), got \(4,\)",
        ),
        (
            (np.zeros((3, 4)), np.zeros((2, 4))),
            ValueError,
            r"axes\[0\] \(x\) must have the batch size of input \(2\), got 3",
        ),
        (
            (np.zeros((2, 4), np.float32), np.zeros((2, 4), np.float16)),
            TypeError,
            r"axes\[1\] \(y\) must have the dtype of input \(float32\), got float16",
        ),
        (
            (np.zeros((2, 4), np.int32),) * 2,
            TypeError,
            r"axes\[0\] \(x\) must have the dtype of input",
        ),
    ],
)
def test_bad_axes(axes, exc, match):
    x = np.zeros((2, 3, 4, 5), np.float32)
    with pytest.raises(exc, match=match):
        grid_sample_separable(x, axes)


def test_bad_options_and_inputs():
    x = np.zeros((2, 3, 4, 5), np.float32)
    axes = (np.zeros((2, 4), np.float32),) * 2
    with pytest.raises(ValueError, match="mode must be one of"):
        grid_sample_separable(x, axes, mode="linear")
    with pytest.raises(ValueError, match="padding_mode must be one of"):
        grid_sample_separable(x, axes, padding_mode="reflect")
    with pytest.raises(TypeError, match="align_corners must be a bool or None, got int"):
        grid_sample_separable(x, axes, align_corners=1)
    with pytest.raises(ValueError, match="channel_axis must be 1 or -1, got 2"):
        grid_sample_separable(x, axes, channel_axis=2)
    with pytest.raises(TypeError, match="input must have a floating dtype"):
        grid_sample_separable(x.astype(np.int32), (np.zeros((2, 4), np.int32),) * 2)
    with pytest.raises(ValueError, match="input must be 4-D or 5-D"):
        grid_sample_separable(x[0], axes)
    with pytest.raises(ValueError, match="non-empty spatial dimensions"):
        grid_sample_separable(x[:, :, :0], axes)
    with pytest.raises(NotImplementedError, match="bicubic"):
        grid_sample_separable(x[..., None], axes + axes[:1], mode="bicubic")
    with pytest.raises(ValueError, match=r"axes must hold 3 vectors \(x, y, z\) for a 5-D input"):
        grid_sample_separable(x[..., None], axes)
    # At trace time: no XLA error under jit.
    with pytest.raises(TypeError, match="dtype of input"):
        jax.jit(lambda x, a, b: grid_sample_separable(x, (a, b)))(
            x, axes[0], axes[1].astype(jnp.float16)
        )


@pytest.mark.slow
@settings(
    max_examples=40,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(
    st.sampled_from(COMBOS),
    st.sampled_from(["float32", "float64"]),
    st.integers(0, 2**32 - 1),
)
def test_matches_numpy_reference(combo, dtype, seed):
    ndim, mode, pad, align = combo
    rng = np.random.default_rng(seed)
    spatial = tuple(rng.integers(1, 5, ndim))
    out = tuple(rng.integers(1, 4, ndim))
    shape = (int(rng.integers(1, 3)), int(rng.integers(1, 3))) + spatial
    # Reflection of huge values is precision noise (decision 5): not compared here.
    kind = rng.choice(["inside", "box", "nonfinite"] + ["outside"] * (pad != "reflection"))
    axes = make_axes(kind, rng, shape, out, align, dtype)
    grid = expand(axes, np)
    x = rng.standard_normal(shape).astype(dtype)
    ct = rng.standard_normal(shape[:2] + out).astype(dtype)
    ref_out, taps = grid_sample_ref(x, grid, mode, pad, align)
    with x64_if(dtype):
        got, vjp = jax.vjp(
            lambda a: grid_sample_separable(
                a, tuple(jnp.asarray(v) for v in axes), mode, pad, align
            ),
            jnp.asarray(x),
        )
        assert_close(
            got, ref_out, dtype, what="value", exact=mode == "nearest" and dtype == "float64"
        )
        (gx,) = vjp(jnp.asarray(ct))
    assert_close(gx, grad_input_ref(shape, taps, ct), dtype, what="input gradient")


WINDOW_CASES = [(2, "bilinear"), (2, "nearest"), (2, "bicubic"), (3, "bilinear")]


def _window_case(ndim, variant):
    """Zeros padding, 256 output columns: `_separable._windowed`'s window is 128 of them.

    Example 0 pastes a box 60 columns wide (200 for ``"wide"``, more than the
    window), example 1 one at the right edge (its window starts at column
    128), example 2 lies outside the input (no column reached). ``"nan"``
    puts a NaN x coordinate and ``"inf_input"`` an infinite pixel in
    example 2, where nothing reads it.
    """
    rng = np.random.default_rng(21)
    shape = (3, 2, 5, 7) if ndim == 2 else (3, 2, 3, 4, 5)
    out = (4, 256) if ndim == 2 else (2, 3, 256)
    x = rng.standard_normal(shape)
    cols = np.arange(256) + 0.5
    x_axis = np.stack(
        [(cols - 30) / (200 if variant == "wide" else 60), (cols - 230) / 60, 2 + cols / 256]
    )
    x_axis[:2] = x_axis[:2] * 2 - 1
    if variant == "nan":
        x_axis[2, 5] = np.nan
    if variant == "inf_input":
        x[2, 1, 1, 1] = np.inf
    others = [rng.uniform(-1.3, 1.3, (3, o)) for o in reversed(out[:-1])]
    ct = rng.standard_normal(shape[:2] + out)
    return jnp.asarray(x), tuple(jnp.asarray(a) for a in (x_axis, *others)), jnp.asarray(ct)


@pytest.mark.parametrize("ndim,mode", WINDOW_CASES)
def test_windowed_derivatives_equal_every_column(ndim, mode, monkeypatch):
    """Derivatives over the reached columns' window, and the fallback to every column.

    Values, gradients, a tangent and a Hessian-vector product against
    `grid_sample` on the expanded grid (finite inputs) and against the same
    function with the window off (any case), float64. A NaN coordinate, an
    infinite pixel or a box wider than the window take every column. (The
    tangent w.r.t. the axes at a NaN x coordinate, nearest, was NaN in
    the y pass before `_matmul_jvp` skipped nearest's zero slopes.)
    """

    def fn(x, *axes):
        return grid_sample_separable(x, axes, mode)

    def expanded(x, *axes):
        return grid_sample(x, expand(axes), mode)

    def results(f, x, axes, ct):
        def loss(x, *axes):
            return jnp.sum(f(x, *axes) * ct)

        hvp = jax.jvp(jax.grad(loss, tuple(range(1 + len(axes)))), (x, *axes), (x, *axes))[1]
        tangent = jax.jvp(f, (x, *axes), (x, *axes))[1]
        return (f(x, *axes), *jax.vjp(f, x, *axes)[1](ct), tangent, *hvp)

    with jax.enable_x64(True):
        config = Config(mode, "zeros", False, False, ())
        plan = _policy.separable_plan(mode, (7,) if ndim == 2 else (5,), (256,), 2)
        assert plan.derivatives == "matmul"
        assert _separable._window_width(config, plan, (3, 2) + (1,) * (ndim - 1) + (256,)) == 128
        windowed = jax.jit(functools.partial(results, fn))
        every = jax.jit(functools.partial(results, fn))
        reference = jax.jit(functools.partial(results, expanded))
        x, axes, ct = _window_case(ndim, "fits")
        assert "cond[" in str(jax.make_jaxpr(windowed)(x, axes, ct))
        with monkeypatch.context() as m:
            m.setattr(_separable, "_WINDOW_MIN_WIDTH", 10**9)
            jax.clear_caches()
            assert "cond[" not in str(jax.make_jaxpr(every)(x, axes, ct))
        for variant in ("fits", "wide", "nan", "inf_input"):
            x, axes, ct = _window_case(ndim, variant)
            got = windowed(x, axes, ct)
            with monkeypatch.context() as m:
                m.setattr(_separable, "_WINDOW_MIN_WIDTH", 10**9)
                jax.clear_caches()  # `_separable`'s jit would reuse the windowed trace
                off = every(x, axes, ct)
            jax.clear_caches()
            for k, (a, b) in enumerate(zip(got, off, strict=True)):
                assert_close(a, b, "float64", what=f"{variant} {k} (window off)")
            # Non-finite pixels: the docstring's Note; second derivatives at
            # non-finite coordinates are not grid_sample's.
            compared = {"fits": 8, "wide": 8, "nan": 5, "inf_input": 0}[variant]
            expected = reference(x, axes, ct)
            for k, (a, b) in enumerate(zip(got[:compared], expected, strict=False)):
                assert_close(a, b, "float64", what=f"{variant} {k} (grid_sample)")


@pytest.mark.parametrize("ndim,mode", WINDOW_CASES[::3])
def test_windowed_derivatives_skip_cotangents_that_no_tap_reaches(ndim, mode):
    """An infinite cotangent at an output that no x tap reaches (the docstring's Note).

    Over the window the cotangent is not read: the input gradient is
    grid_sample's (finite) and the axis gradients are 0 at that output's
    column and row, where grid_sample's (and torch's) are NaN. Over every
    column (here: a box wider than the window) it spreads over the input
    gradient of its example and channel, and the axis gradients are
    grid_sample's. In forward mode an infinite pixel of the input's tangent
    makes the output's tangent non-finite on the window's 128 columns of its
    example and channel (on all 256 over every column).
    """
    with jax.enable_x64(True):
        for variant in ("fits", "wide"):
            x, axes, ct = _window_case(ndim, variant)
            dx = jnp.zeros_like(x).at[(0, 1, *(1,) * ndim)].set(jnp.inf)
            zero_axes = tuple(jnp.zeros_like(a) for a in axes)
            tangent = jax.jvp(
                lambda x, a: grid_sample_separable(x, a, mode), (x, axes), (dx, zero_axes)
            )[1]
            bad = ~np.isfinite(np.asarray(tangent))
            columns = bad[0, 1].reshape(-1, 256)
            assert (columns == columns[:1]).all() and bad.sum() == columns.sum()
            window = np.flatnonzero(columns[0])
            assert len(window) == (128 if variant == "fits" else 256)
            assert window[-1] - window[0] == len(window) - 1
            ct = ct.at[(2, 1, *(0,) * (ndim - 1), 200)].set(jnp.inf)
            got = _gradients(lambda x, *a: grid_sample_separable(x, a, mode), x, axes, ct)
            expected = _gradients(lambda x, *a: grid_sample(x, expand(a), mode), x, axes, ct)
            assert np.isfinite(expected[0]).all()
            if variant == "fits":
                assert_close(got[0], expected[0], "float64", what="input gradient")
            else:
                assert not np.isfinite(got[0][2, 1]).any()
                assert_close(got[0][:2], expected[0][:2], "float64", what="input gradient")
            for k, index in ((1, 200), *((k, 0) for k in range(2, ndim + 1))):
                nan = np.zeros(expected[k].shape, bool)
                nan[2, index] = True
                np.testing.assert_array_equal(np.isnan(expected[k]), nan)
                if variant == "fits":
                    assert got[k][2, index] == 0
                    assert_close(got[k][~nan], expected[k][~nan], "float64", what=f"{k}")
                else:
                    assert_close(got[k], expected[k], "float64", what=f"{k}")


def test_windowed_derivatives_under_vmap():
    """vmap over a window case and a fallback case (a batched `lax.cond`) equals the loop."""
    with jax.enable_x64(True):
        cases = [_window_case(2, variant) for variant in ("fits", "wide")]

        def grads(x, axes, ct):
            return jax.vjp(lambda x, *a: grid_sample_separable(x, a), x, *axes)[1](ct)

        stacked = jax.tree.map(lambda *a: jnp.stack(a), *cases)
        batched = jax.jit(jax.vmap(grads))(*stacked)
        for i, case in enumerate(cases):
            for k, (a, b) in enumerate(zip(batched, jax.jit(grads)(*case), strict=True)):
                assert_close(a[i], b, "float64", what=f"case {i}, gradient {k}")
