"""grid_sample_separable: grid_sample on the expanded grid, values and every derivative.

The reference is our own `grid_sample` (itself checked against torch's fixtures)
on the grid built from the axis vectors; `tests/fixtures/separable.npz` checks a
subset against torch directly (test_parity_fixtures.py). Cases of one shape go
into one batch, and the options of one (ndim, mode) into one compiled program.
"""

from __future__ import annotations

import math
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import alternating_layout, assert_close, x64_if
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jax.test_util import check_grads
from numpy_reference import grad_input_ref, grid_sample_ref
from pixel_grids import pixel_grid_values

from jax_gridsample import _passes, _policy, _separable, grid_sample, grid_sample_separable
from jax_gridsample._core import Config

MODES = ("bilinear", "nearest", "bicubic")
PADDINGS = ("zeros", "border", "reflection")
KINDS = ("inside", "outside", "pixel", "box", "shuffled")
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
        v.flat[:: max(1, out - 1)] = rng.choice([-1e10, 1e10, -3e38, 3e38])  # see docs/semantics.md
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


def batch_of_kinds(rng, x_shape, out, align, dtype, kinds=KINDS, channels_last=False):
    """One example per axis kind: input `(len(kinds), ...)` and its axis vectors."""
    one = (1, *x_shape[1:])
    axes = [make_axes(k, rng, one, out, align, dtype, channels_last) for k in kinds]
    vectors = tuple(np.concatenate(v) for v in zip(*axes, strict=True))
    x = rng.standard_normal((len(kinds), *x_shape[1:])).astype(dtype)
    return x, vectors


def results(fn, x, axes, ct, tangents):
    """Value, vjp (input and each axis) and jvp of ``fn(x, *axes)``."""
    out, vjp = jax.vjp(fn, x, *axes)
    return out, vjp(ct), jax.jvp(fn, (x, *axes), tangents)[1]


def value_and_vjp(fn, x, axes, ct):
    out, vjp = jax.vjp(fn, x, *axes)
    return out, vjp(ct)


def sep_and_ref(options, channel_axis=1):
    def sep(x, *axes):
        return grid_sample_separable(x, axes, *options, channel_axis=channel_axis)

    def ref(x, *axes):
        return grid_sample(x, expand(axes), *options, channel_axis=channel_axis)

    return sep, ref


def random_like(rng, shape, dtype):
    return jnp.asarray(rng.standard_normal(shape), dtype)


OPTIONS = [(pad, align) for pad in PADDINGS for align in (False, True)]
NDIM_MODES = [(2, "bilinear"), (2, "nearest"), (2, "bicubic"), (3, "bilinear"), (3, "nearest")]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("ndim,mode", NDIM_MODES, ids=[f"{n + 2}d-{m}" for n, m in NDIM_MODES])
def test_equals_grid_sample_on_expanded_grid(ndim, mode, dtype):
    """Every padding and align_corners, each axis kind an example: one program.

    The layouts alternate over the options, so that both meet every padding
    and both values of align_corners. Values and vjps: the jvp is the same
    linear map (its transpose), checked against the vjp in
    `test_jvp_vjp_consistent_and_hessian_equals_expanded`.
    """
    x_shape, out = SHAPES[ndim][0]
    rng = np.random.default_rng([ndim, MODES.index(mode), dtype == "float64"])
    cases = []
    for j, (pad, align) in enumerate(OPTIONS):
        layout = alternating_layout(j)
        x, axes = batch_of_kinds(rng, x_shape, out, align, dtype)
        if layout == -1:
            x = np.moveaxis(x, 1, -1)
        out_shape = (len(KINDS), *(a.shape[1] for a in reversed(axes)))
        ct_shape = (
            out_shape + (x.shape[-1],)
            if layout == -1
            else (out_shape[:1] + (x.shape[1],) + out_shape[1:])
        )
        ct = rng.standard_normal(ct_shape).astype(dtype)
        cases.append(((pad, align, layout), (x, axes, ct)))

    @jax.jit
    def run(arrays):
        got = []
        for ((pad, align, layout), _), (x, axes, ct) in zip(cases, arrays, strict=True):
            sep, ref = sep_and_ref((mode, pad, align), layout)
            got.append([value_and_vjp(f, x, axes, ct) for f in (sep, ref)])
        return got

    with x64_if(dtype):
        arrays = jax.tree.map(jnp.asarray, [c[1] for c in cases])
        for ((pad, align, layout), _), (sep, ref) in zip(cases, run(arrays), strict=True):
            what = f"{pad} ac{int(align)} channel_axis={layout}"
            (out, vjp), (out_ref, vjp_ref) = sep, ref
            assert out.dtype == np.dtype(dtype)
            assert_close(out, out_ref, dtype, what=f"{what} value", exact=mode == "nearest")
            for k, (a, b) in enumerate(zip(vjp, vjp_ref, strict=True)):
                assert_close(a, b, dtype, what=f"{what} vjp {k}", exact=mode == "nearest" and k)


@pytest.mark.slow
def test_every_plan_equals_grid_sample():
    """Each value and derivative formulation, forced, on a zoom whose policy picks others."""
    rng = np.random.default_rng(3)
    plans = [_policy.Plan(v, d) for v in _policy.SEPARABLE_VALUES for d in ("matmul", "expanded")]
    combos = [(2, "bicubic", "reflection", True), (3, "bilinear", "zeros", False)]
    with x64_if("float64"):
        for ndim, mode, pad, align in combos:
            x_shape, out = SHAPES[ndim][0]
            x, axes = batch_of_kinds(rng, x_shape, out, align, "float64")
            x, axes = jnp.asarray(x), tuple(jnp.asarray(a) for a in axes)
            config = Config(mode, pad, align, False)
            ct = random_like(rng, x.shape[:2] + tuple(a.shape[1] for a in reversed(axes)), x.dtype)
            tangents = tuple(random_like(rng, a.shape, a.dtype) for a in (x, *axes))

            @jax.jit
            def run(x, axes, ct, tangents, config=config, mode=mode, pad=pad, align=align):
                got = [
                    results(
                        lambda x, *vs, p=p: _separable.separable(x, vs[::-1], config, p),
                        x,
                        axes,
                        ct,
                        tangents,
                    )
                    for p in plans
                ]
                _, ref = sep_and_ref((mode, pad, align))
                return got, results(ref, x, axes, ct, tangents)

            got, ref = run(x, axes, ct, tangents)
            for plan, g in zip(plans, got, strict=True):
                for a, b in zip(jax.tree.leaves(g), jax.tree.leaves(ref), strict=True):
                    assert_close(a, b, "float64", what=f"{ndim}-D {mode} {pad} {plan}")


# One example per way of being non-finite; ``dirty`` marks its example and the
# channels it may spoil (None: every channel).
NONFINITE_CASES = [
    ("finite", None),
    ("huge coordinates", None),
    ("NaN x", "x"),
    ("+inf y", "y"),
    ("-inf x", "x"),
    ("NaN pixel", 0),
    ("+inf pixel", 1),
    ("NaN cotangent", 0),
    ("-inf cotangent", 1),
]


def nonfinite_batch(rng, ndim, dtype):
    """A batch with one example per `NONFINITE_CASES` entry: input, axes, cotangent."""
    spatial, out = ((5, 6), (4, 5)) if ndim == 2 else ((3, 4, 5), (2, 3, 4))
    n = len(NONFINITE_CASES)
    x = rng.standard_normal((n, 2, *spatial)).astype(dtype)
    axes = [rng.uniform(-1.3, 1.3, (n, o)).astype(dtype) for o in reversed(out)]
    ct = rng.standard_normal((n, 2, *out)).astype(dtype)
    names = "xyz"
    for i, (name, _) in enumerate(NONFINITE_CASES):
        value = {"NaN": np.nan, "+inf": np.inf, "-inf": -np.inf}.get(name.split()[0])
        if name == "huge coordinates":
            axes[0][i, 1], axes[1][i, 0] = 1e30, -3e38
        elif name.endswith(("x", "y")):
            axes[names.index(name[-1])][i, 2] = value
        elif name.endswith("pixel"):
            x[(i, NONFINITE_CASES[i][1], *(s // 2 for s in spatial))] = value
        elif name.endswith("cotangent"):
            ct[(i, NONFINITE_CASES[i][1], *(o // 2 for o in out))] = value
    return x, tuple(axes), ct


def check_nonfinite_rule(got, ref, what, kind, forward_points=None):
    """The docstring's rule for one array: ``kind`` "value", "input" or "axis" (`(N, O)`)."""
    got, ref = np.asarray(got, np.float64), np.asarray(ref, np.float64)
    bad_ref, bad = ~np.isfinite(ref), ~np.isfinite(got)
    if forward_points is not None:  # forward mode may be finite at non-finite coordinates
        bad_ref &= ~forward_points
    assert np.all(bad[bad_ref]), f"{what}: finite where grid_sample is not"
    both = ~bad & ~bad_ref
    assert_close(got[both], ref[both], "float64", what=what)
    for i, (name, dirty) in enumerate(NONFINITE_CASES):
        if dirty is None or ("cotangent" in name and kind == "value"):
            assert not np.any(bad[i]), f"{what}: non-finite in the {name} example"
        elif kind != "axis" and isinstance(dirty, int):
            assert not np.any(bad[i, 1 - dirty]), f"{what}: {name} spoils another channel"


NONFINITE_COMBOS = [
    (2, "bilinear", "zeros", False),
    (2, "bicubic", "border", True),
    (2, "nearest", "zeros", False),
    (2, "bilinear", "reflection", True),
    (3, "bilinear", "zeros", True),
]


@pytest.mark.parametrize(
    "ndim,mode,pad,align", NONFINITE_COMBOS, ids=[combo_id(*c) for c in NONFINITE_COMBOS]
)
def test_nonfinite_rule_for_every_plan(ndim, mode, pad, align):
    """The docstring's non-finite rule, whichever formulation computes each part."""
    rng = np.random.default_rng([ndim, MODES.index(mode)])
    plans = [
        _policy.Plan(v, d)
        for v, d in zip(_policy.SEPARABLE_VALUES, ("matmul", "matmul", "expanded"), strict=True)
    ]
    config = Config(mode, pad, align, False)

    @jax.jit
    def run(x, axes, ct, tangents):
        def planned(p):
            return lambda x, *vs: _separable.separable(x, vs[::-1], config, p)

        _, ref = sep_and_ref((mode, pad, align))
        return [results(f, x, axes, ct, tangents) for f in (*map(planned, plans), ref)]

    with x64_if("float64"):
        x, axes, ct = nonfinite_batch(rng, ndim, "float64")
        tangents = tuple(rng.standard_normal(a.shape) for a in (x, *axes))
        *got, ref = run(x, axes, ct, tangents)
    points = ~np.isfinite(np.asarray(expand(axes, np)).sum(-1))[:, None]
    for plan, (out, vjp, jvp) in zip(plans, got, strict=True):
        check_nonfinite_rule(out, ref[0], f"{plan} value", "value")
        check_nonfinite_rule(vjp[0], ref[1][0], f"{plan} input gradient", "input")
        for k, (a, b) in enumerate(zip(vjp[1:], ref[1][1:], strict=True)):
            check_nonfinite_rule(a, b, f"{plan} gradient of axis {k}", "axis")
        check_nonfinite_rule(jvp, ref[2], f"{plan} jvp", "value", forward_points=points)


# Shapes on both sides of each of the policy's thresholds, with the plan each gets.
THRESHOLD_SHAPES = [
    ((2, 1, 4, 128), (3, 130), ("taps_rows", "matmul")),
    ((2, 1, 4, 129), (3, 130), ("taps", "expanded")),
    ((2, 8, 20, 20), (30, 30), ("taps_rows", "matmul")),
    ((2, 160, 20, 20), (30, 30), ("taps_rows", "expanded")),
    ((2, 1, 13, 13), (2, 2), ("taps_rows", "matmul")),  # the passes read 60 < 4 * 16
    ((2, 1, 14, 14), (2, 2), ("expanded", "matmul")),  # 64 = 4 * 16
    # Where the expanded grid stores its offsets (here forced), from 1x the reads on.
    ((2, 2, 6, 6), (7, 7), ("taps_rows", "matmul")),  # 182 < 49 * 4
    ((2, 2, 6, 6), (6, 6), ("expanded", "matmul")),  # 144 = 36 * 4
]


def test_nonfinite_rule_across_the_policy_thresholds(monkeypatch):
    """The same rule on both sides of every threshold of `_policy.separable_plan`."""
    monkeypatch.setattr(_policy, "stores_few_channels", lambda: True)
    rng = np.random.default_rng(17)
    cases = []
    for shape, out, plan in THRESHOLD_SHAPES:
        assert _policy.separable_plan("bilinear", shape[2:], out, shape[1], False) == plan
        x = rng.standard_normal(shape).astype("f4")
        axes = [rng.uniform(-1.2, 1.2, (2, o)).astype("f4") for o in reversed(out)]
        ct = rng.standard_normal(shape[:2] + out).astype("f4")
        axes[0][1, 1], x[1, 0, 1, 1], ct[1, 0, 0, 0] = np.nan, np.inf, np.nan
        cases.append((x, tuple(axes), ct))
    sep, ref = sep_and_ref(("bilinear", "zeros", False))

    @jax.jit
    def run(cases):
        return [[value_and_vjp(f, x, axes, ct) for f in (sep, ref)] for x, axes, ct in cases]

    for (shape, _, plan), (got, want) in zip(THRESHOLD_SHAPES, run(cases), strict=True):
        for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
            a, b = np.asarray(a), np.asarray(b)
            assert np.all(~np.isfinite(a)[~np.isfinite(b)]), f"{shape} {plan}"
            assert_close(a[0], b[0], "float32", what=f"{shape} {plan}, finite example")


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_half_dtypes_separable(dtype):
    """Computed in float32 and rounded once, as grid_sample: every mode in one program."""
    rng = np.random.default_rng(5)
    x_shape, out = SHAPES[2][0]
    x = jnp.asarray(rng.standard_normal(x_shape), dtype)
    axes = tuple(jnp.asarray(a, dtype) for a in make_axes("box", rng, x_shape, out, False, "f4"))
    ct = random_like(rng, x_shape[:2] + out, dtype)
    tangents = tuple(random_like(rng, a.shape, dtype) for a in (x, *axes))

    @jax.jit
    def run(x, axes, ct, tangents):
        return [
            [results(f, x, axes, ct, tangents) for f in sep_and_ref((mode, "border", False))]
            for mode in MODES
        ]

    for mode, (sep, ref) in zip(MODES, run(x, axes, ct, tangents), strict=True):
        for a, b in zip(jax.tree.leaves(sep), jax.tree.leaves(ref), strict=True):
            assert a.dtype == np.dtype(dtype)
            assert_close(a, b, dtype, what=mode, exact=mode == "nearest")


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

        def f(x, *axes):
            return grid_sample_separable(x, axes, "bilinear", "reflection", True)

        tangents = tuple(jnp.asarray(rng.standard_normal(a.shape)) for a in (x, *axes))
        ct = jnp.asarray(rng.standard_normal(jax.eval_shape(f, x, *axes).shape))

        @jax.jit  # one program
        def run(x, axes, tangents, ct):
            sep = loss(lambda a: grid_sample_separable(x, a, "bicubic", "border", False))
            ref = loss(lambda a: grid_sample(x, expand(a), "bicubic", "border", False))
            hessians = [jax.hessian(h, argnums=(0, 1))(*axes) for h in (sep, ref)]
            t_out = jax.jvp(f, (x, *axes), tangents)[1]
            return hessians, t_out, jax.vjp(f, x, *axes)[1](ct)

        (h_sep, h_ref), t_out, cts = run(x, axes, tangents, ct)
        for a, b in zip(jax.tree.leaves(h_sep), jax.tree.leaves(h_ref), strict=True):
            assert_close(a, b, "float64", what="hessian")
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


def test_compile_does_not_grow_with_the_batch():
    """The gradient's program has no loop unrolled over the examples."""
    sizes = []
    for n in (4, 64):
        x = jnp.zeros((n, 1, 28, 28), jnp.float32)
        axes = (jnp.zeros((n, 50), jnp.float32), jnp.zeros((n, 30), jnp.float32))

        def loss(x, *axes):
            return jnp.sum(jnp.sin(grid_sample_separable(x, axes)))

        hlo = jax.jit(jax.grad(loss, argnums=(0, 1, 2))).lower(x, *axes).as_text()
        sizes.append(len(re.sub(r"\d+", "", hlo)))
    assert sizes[0] == sizes[1]


MASK_PASTE = ((16, 1, 28, 28), (300, 500))


@pytest.mark.parametrize("shape,out", [MASK_PASTE, ((2, 3, 8, 100), (40, 128))])
def test_compiled_gradient_has_no_scatter_and_no_expanded_arrays(shape, out):
    rng = np.random.default_rng(12)
    x = jnp.asarray(rng.standard_normal(shape), jnp.float32)
    axes = tuple(jnp.asarray(a) for a in make_axes("box", rng, shape, out, False, "f4"))
    ct = jnp.asarray(rng.standard_normal(shape[:2] + out), jnp.float32)
    spatial = shape[2:]
    plan = _policy.separable_plan("bilinear", spatial, out, shape[1], False)
    assert plan.derivatives == "matmul"

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


@pytest.mark.parametrize("dim", [1, 2, 3])
@pytest.mark.parametrize("s_first", [False, True])
def test_product_layouts(dim, s_first):
    """`_passes._product` along each axis with the matrix in either layout is the dense product."""
    rng = np.random.default_rng([13, dim, s_first])
    with x64_if("float64"):
        x = jnp.asarray(rng.standard_normal((2, 3, 4, 5)))
        matrix = rng.standard_normal((2, 6, x.shape[dim]))  # (N, O, S)
        laid_out = np.swapaxes(matrix, 1, 2) if s_first else matrix
        got = _passes._product(x, jnp.asarray(laid_out), dim, s_first)
        want = np.moveaxis(
            np.einsum("nos,n...s->n...o", matrix, np.moveaxis(np.asarray(x), dim, -1)), -1, dim
        )
        assert_close(got, want, "float64")


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
    # Reflection of huge values is precision noise (docs/semantics.md): not compared here.
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
