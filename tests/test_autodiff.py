"""What JAX gives beyond torch: jvp, hessian, check_grads, vmap, jit caching."""

from __future__ import annotations

import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import assert_close, quick_apart, x64_if
from jax.test_util import check_grads

from jax_gridsample import affine_grid, grid_sample
from jax_gridsample._grid_sample import _grid_sample

COMBOS = [
    (ndim, mode, pad, align)
    for ndim, mode, pad, align in itertools.product(
        (2, 3), ("bilinear", "nearest", "bicubic"), ("zeros", "border", "reflection"), (False, True)
    )
    if not (ndim == 3 and mode == "bicubic")
]
IDS = [f"{n + 2}d-{m}-{p}-ac{int(a)}" for n, m, p, a in COMBOS]


def _smooth_grid(rng, spatial, out, align):
    """Grid points at least 0.1 pixel away from every kink (integers, borders)."""
    ndim = len(spatial)
    comps = []
    for k in range(ndim):
        size = spatial[ndim - 1 - k]
        x = rng.integers(0, max(size - 1, 1), out) + rng.uniform(0.1, 0.9, out)
        if size == 1:
            x = np.zeros(out)
        comps.append(2 * x / (size - 1) - 1 if align and size > 1 else (2 * x + 1) / size - 1)
    return np.stack(comps, -1)[None]


# On `_smooth_grid`'s points every bilinear and nearest tap is inside the
# input, so their padding never acts: zeros stands for all three there.
SMOOTH_COMBOS = [c for c in COMBOS if c[1] == "bicubic" or c[2] == "zeros"]


@pytest.mark.parametrize(
    "ndim,mode,pad,align", SMOOTH_COMBOS, ids=[IDS[COMBOS.index(c)] for c in SMOOTH_COMBOS]
)
def test_check_grads_float64(ndim, mode, pad, align):
    rng = np.random.default_rng(0)
    spatial = (3, 4, 5)[-ndim:]
    with jax.enable_x64(True):
        x = jnp.asarray(rng.standard_normal((1, 2) + spatial))
        g = jnp.asarray(_smooth_grid(rng, spatial, (2, 3) if ndim == 2 else (2, 2, 2), align))

        def f(x, g):
            return grid_sample(x, g, mode, pad, align)

        # Linear in the input, for every mode (so order 1 says it all).
        check_grads(lambda x: f(x, g), (x,), order=1, modes=("fwd", "rev"))
        if mode != "nearest":
            check_grads(lambda g: f(x, g), (g,), order=2, modes=("fwd", "rev"), eps=1e-5)
        else:  # piecewise constant: the grid gradient is exactly zero
            assert not np.any(np.asarray(jax.grad(lambda g: f(x, g).sum())(g)))


@pytest.mark.parametrize(
    "combos",
    quick_apart(
        COMBOS,
        family=lambda c: IDS[COMBOS.index(c)].rsplit("-", 2)[0],
        quick=lambda c: c[2:] == ("zeros", False),
        ident=lambda c: IDS[COMBOS.index(c)],
    ),
)
def test_jvp_vjp_consistent_and_hessian_finite(combos):
    """jvp and vjp agree and the Hessian is finite, each combination of ``combos``."""
    ndim = combos[0][0]
    rng = np.random.default_rng(1)
    spatial = (3, 4, 5)[-ndim:]
    x = jnp.asarray(rng.standard_normal((2, 2) + spatial), jnp.float32)
    # Include exact pixel positions and borders: derivatives must stay finite.
    g = rng.choice([-1.0, -0.5, 0.0, 0.5, 1.0, 1.5, -1.25], (2,) + (3,) * ndim + (ndim,))
    g = jnp.asarray(g + rng.uniform(-0.5, 0.5, g.shape) * (rng.random(g.shape) < 0.5), jnp.float32)
    tx = jnp.asarray(rng.standard_normal(x.shape), jnp.float32)
    tg = jnp.asarray(rng.standard_normal(g.shape), jnp.float32)
    ct = jnp.asarray(rng.standard_normal((2, 2) + (3,) * ndim), jnp.float32)

    @jax.jit  # one program for the three transformations of every combination
    def transformed(x, g, tx, tg, ct):
        got = []
        for _, mode, pad, align in combos:

            def f(x, g, options=(mode, pad, align)):
                return grid_sample(x, g, *options)

            _, jvp_out = jax.jvp(f, (x, g), (tx, tg))
            _, vjp = jax.vjp(f, x, g)
            hess = jax.hessian(lambda g, f=f: f(x, g)[0, 0].sum())(g)
            got.append((jvp_out, vjp(ct), hess))
        return got

    results = jax.tree.map(np.asarray, transformed(x, g, tx, tg, ct))
    for combo, (jvp_out, (vx, vg), hess) in zip(combos, results, strict=True):
        lhs = float(np.vdot(jvp_out, ct))
        rhs = float(np.vdot(tx, vx) + np.vdot(tg, vg))
        assert abs(lhs - rhs) <= 1e-4 * max(1.0, abs(lhs)), combo
        assert np.all(np.isfinite(hess)), combo


def test_vmap_over_extra_axis_matches_loop():
    rng = np.random.default_rng(2)
    x = jnp.asarray(rng.standard_normal((3, 2, 4, 5, 6)), jnp.float32)
    g = jnp.asarray(rng.uniform(-1.2, 1.2, (3, 2, 7, 8, 2)), jnp.float32)
    f = jax.vmap(lambda a, b: grid_sample(a, b, "bicubic", "reflection", True))
    batched = f(x, g)
    looped = jnp.stack([grid_sample(x[i], g[i], "bicubic", "reflection", True) for i in range(3)])
    np.testing.assert_allclose(np.asarray(batched), np.asarray(looped), rtol=1e-6, atol=1e-6)


def test_same_shapes_compile_once():
    rng = np.random.default_rng(3)
    x = jnp.asarray(rng.standard_normal((2, 3, 9, 11)), jnp.float32)
    g = jnp.asarray(rng.uniform(-1, 1, (2, 5, 7, 2)), jnp.float32)
    grid_sample(x, g, "bilinear", "border", True)
    before = _grid_sample._cache_size()
    for _ in range(3):  # new values, same shapes and options
        g = g + 0.01
        grid_sample(x * 2.0, g, "bilinear", "border", True)
    assert _grid_sample._cache_size() == before
    grid_sample(x, g, "bilinear", "border", False)  # a new option does compile
    assert _grid_sample._cache_size() == before + 1


def test_user_jit_traces_once():
    traces = []

    @jax.jit
    def f(x, g):
        traces.append(None)
        return grid_sample(x, g, align_corners=False)

    x = jnp.ones((1, 1, 4, 4))
    for v in (0.1, 0.2, 0.3):
        f(x, jnp.full((1, 2, 2, 2), v))
    assert len(traces) == 1


@pytest.mark.parametrize(
    "x_shape,g_shape,out_shape",
    [
        ((0, 2, 3, 4), (0, 5, 6, 2), (0, 2, 5, 6)),
        ((2, 0, 3, 4), (2, 5, 6, 2), (2, 0, 5, 6)),
        ((2, 3, 3, 4), (2, 0, 6, 2), (2, 3, 0, 6)),
        ((1, 2, 2, 3, 4), (1, 2, 0, 3, 3), (1, 2, 2, 0, 3)),
        ((0, 2, 2, 3, 4), (0, 2, 1, 3, 3), (0, 2, 2, 1, 3)),
    ],
)
def test_empty_sizes(x_shape, g_shape, out_shape):
    x, g = jnp.ones(x_shape), jnp.zeros(g_shape)
    out = grid_sample(x, g)
    assert out.shape == out_shape and out.dtype == x.dtype
    gx, gg = jax.grad(lambda x, g: grid_sample(x, g).sum(), argnums=(0, 1))(x, g)
    assert gx.shape == x_shape and gg.shape == g_shape
    assert not np.any(np.asarray(gg))


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32"])
def test_output_dtype_follows_input(dtype):
    x = jnp.ones((1, 2, 3, 3), dtype)
    g = jnp.zeros((1, 2, 2, 2), dtype)
    for mode in ("bilinear", "nearest", "bicubic"):
        assert grid_sample(x, g, mode).dtype == jnp.dtype(dtype)
    assert affine_grid(jnp.ones((1, 2, 3), dtype), (1, 1, 2, 2)).dtype == jnp.dtype(dtype)


def test_numpy_inputs_accepted():
    x = np.arange(16, dtype=np.float32).reshape(1, 1, 4, 4)
    g = np.zeros((1, 1, 1, 2), np.float32)
    assert float(grid_sample(x, g, align_corners=True)[0, 0, 0, 0]) == pytest.approx(7.5)


@pytest.mark.parametrize("pad", ["zeros", "border", "reflection"])
@pytest.mark.parametrize("mode", ["bilinear", "nearest", "bicubic"])
def test_grad_input_finite_for_nonfinite_grids(mode, pad):
    """Input gradients finite, grid gradients NaN only where the output is (docs/semantics.md)."""
    x = jnp.arange(12.0).reshape(1, 1, 3, 4)
    g = jnp.array([[[[jnp.nan, 0.0], [jnp.inf, 0.2], [-jnp.inf, jnp.nan], [0.3, -0.4]]]])
    f = lambda x, g: grid_sample(x, g, mode, pad, False)  # noqa: E731
    out = np.asarray(f(x, g))
    gx, gg = jax.grad(lambda x, g: f(x, g).sum(), argnums=(0, 1))(x, g)
    assert np.all(np.isfinite(np.asarray(gx)))
    nan_points = np.isnan(np.asarray(gg)).any(-1)
    assert np.all(np.isnan(out[:, 0])[nan_points])
    assert np.isfinite(out[0, 0, 0, 3])


def test_affine_grid_then_grid_sample_identity():
    x = jnp.asarray(np.random.default_rng(4).standard_normal((2, 3, 5, 7)), jnp.float32)
    theta = jnp.tile(jnp.array([[1.0, 0, 0], [0, 1.0, 0]]), (2, 1, 1))
    for align in (False, True):
        out = grid_sample(x, affine_grid(theta, x.shape, align), align_corners=align)
        np.testing.assert_allclose(np.asarray(out), np.asarray(x), atol=1e-5)


def test_affine_grid_gradient_check_float64():
    with jax.enable_x64(True):
        theta = jnp.asarray(np.random.default_rng(5).standard_normal((2, 3, 4)))
        check_grads(lambda t: affine_grid(t, (2, 1, 3, 4, 5), False), (theta,), order=2)


@pytest.mark.parametrize(
    "ndim,mode", [(2, "bilinear"), (2, "bicubic"), (3, "bilinear"), (3, "nearest")]
)
def test_many_channels_match_the_same_channels_in_parts(ndim, mode):
    """Many channels at once match the same channels sampled in parts.

    Bicubic and trilinear: the whole goes through the channels-last kernel,
    the parts (below `RELAYOUT_MIN_CHANNELS`) through the channels-first one.
    """
    from jax_gridsample._policy import RELAYOUT_MIN_CHANNELS

    rng = np.random.default_rng(6)
    c = 2 * RELAYOUT_MIN_CHANNELS
    x = jnp.asarray(rng.standard_normal((2, c) + (4, 5, 6)[-ndim:]), jnp.float32)
    g = jnp.asarray(rng.uniform(-1.3, 1.3, (2,) + (3, 2, 4)[-ndim:] + (ndim,)), jnp.float32)
    ct = jnp.asarray(rng.standard_normal((2, c) + (3, 2, 4)[-ndim:]), jnp.float32)

    def f(x, g):
        return grid_sample(x, g, mode, "reflection", False)

    def split(x, g):  # parts below the threshold take the channels-first kernel
        h = c // 2 - 1
        return jnp.concatenate([f(x[:, :h], g), f(x[:, h : 2 * h], g), f(x[:, 2 * h :], g)], 1)

    @jax.jit  # one program for both
    def values_and_gradients(x, g, ct):
        (out, vjp), (ref, vjp_ref) = jax.vjp(f, x, g), jax.vjp(split, x, g)
        return (out, ref), (vjp(ct), vjp_ref(ct))

    (out, ref), (grads, grads_ref) = values_and_gradients(x, g, ct)
    np.testing.assert_allclose(np.asarray(out), np.asarray(ref), rtol=1e-6, atol=1e-6)
    for a, b in zip(grads, grads_ref, strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("ndim,mode,pad,align", COMBOS, ids=IDS)
def test_fused_and_looped_corner_sums_agree(ndim, mode, pad, align, dtype):
    """The three corner-sum formulations of `sample_one` agree to rounding.

    Same terms in the same order; only XLA's multiply-add contraction may
    differ between them. Both layouts, each with "few" and "many" channels:
    the sizes around C = 2K where the CPU plan switches from "fused" to
    "fused_stored" (for nearest, 3 and 2: "fused_stored" stores its offsets
    from two halves of the points, the second padded by one here).
    """
    from jax_gridsample._kernels import sample_one
    from jax_gridsample._taps import num_corners

    rng = np.random.default_rng(7)
    spatial = (4, 5, 6)[-ndim:]
    kw = dict(mode=mode, padding_mode=pad, align_corners=align)
    formulations = ("loop", "fused", "fused_stored")
    variants, args = [], []
    for channels_last in (False, True):
        for c in (3, 2 * num_corners(mode, ndim)):  # few, many
            shape = spatial + (c,) if channels_last else (c,) + spatial
            x = rng.standard_normal(shape).astype(dtype)
            g = rng.uniform(-1.3, 1.3, (3, 5, ndim)).astype(dtype)  # an odd number of points
            g[0, :4, 0] = [np.nan, np.inf, -np.inf, 1e30]  # non-finite and huge points too
            variants.append((channels_last, c))
            args.append((x, g))

    @jax.jit  # one compile for all (the loop and the map stay loops in it)
    def all_sums(args):
        return [
            [sample_one(x, g, formulation=f, channels_last=last, **kw) for f in formulations]
            for (last, _), (x, g) in zip(variants, args, strict=True)
        ]

    with x64_if(dtype):
        results = all_sums(args)
    for (last, c), sums in zip(variants, results, strict=True):
        sums = dict(zip(formulations, sums, strict=True))
        for f in ("fused", "fused_stored"):
            what = f"{f} vs loop, channels_last={last}, C={c}"
            assert sums[f].dtype == sums["loop"].dtype == dtype, what
            assert_close(sums[f], sums["loop"], dtype, what=what)


@pytest.mark.parametrize("c", [16, 64])
@pytest.mark.parametrize("channel_axis", [1, -1])
@pytest.mark.parametrize("mode", ["bilinear", "bicubic"])
def test_temporaries_stay_a_few_times_the_arguments(mode, channel_axis, c):
    """XLA's compiled memory analysis: no (K, P, C) stack of corners is stored.

    Storing the 16 bicubic corners would take 16x the output's bytes; the
    bound of 3x the arguments' bytes (benchmarks/memory.py measures 1.0x
    forward and 2.5x fwd+bwd) would catch it. Channels-first bicubic with
    C = 16 takes the fused forward, C = 64 the re-layout and the loop.
    """
    n, size = 8, 128  # as benchmarks/memory.py; compiled, never run
    x_shape = (n, c, size, size) if channel_axis == 1 else (n, size, size, c)
    x = jax.ShapeDtypeStruct(x_shape, jnp.float32)
    g = jax.ShapeDtypeStruct((n, size, size, 2), jnp.float32)
    args_bytes = 4 * (2 * math.prod(x_shape) + math.prod(g.shape))  # input, output, grid

    def loss(x, g):  # a consumer XLA fuses the sampling into
        return jnp.sum(grid_sample(x, g, mode, channel_axis=channel_axis) ** 2)

    for f in (loss, jax.grad(loss, argnums=(0, 1))):
        temp = jax.jit(f).lower(x, g).compile().memory_analysis().temp_size_in_bytes
        assert temp <= 3 * args_bytes, (temp, args_bytes)
