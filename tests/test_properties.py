"""Property tests: jax_gridsample against the independent NumPy reference.

Random ranks, shapes (size-1 axes, empty N/C/output), modes, paddings,
align_corners, dtypes and grid values (NaN, ±inf, huge, exact pixel positions).
Forward values and grad_input are compared directly; grid gradients (float64) are
compared with central differences of the reference at points away from its kinks.

Example counts are bounded and derandomized (CI reproducible);
JAX_GRIDSAMPLE_HYPOTHESIS=deep runs 1000 random examples.
"""

from __future__ import annotations

import math
import os

import jax
import numpy as np
import pytest
from conftest import OP_BY_OP_QUICK, as_jax, assert_close, quick_apart, x64_if
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from numpy_reference import grad_input_ref, grid_sample_ref, unnormalize
from pixel_grids import pixel_grid_values

from jax_gridsample import grid_sample

DEEP = os.environ.get("JAX_GRIDSAMPLE_HYPOTHESIS") == "deep"
SPECIAL = [
    math.nan,
    math.inf,
    -math.inf,
    1e10,
    -1e10,
    3e38,
    -3e38,
    -1.0,
    -0.5,
    0.0,
    0.5,
    1.0,
    2.0,
    -1.25,
    1.5,
]


@st.composite
def cases(draw):
    ndim = draw(st.sampled_from([2, 3]))
    mode = draw(st.sampled_from(["bilinear", "nearest"] + (["bicubic"] if ndim == 2 else [])))
    padding = draw(st.sampled_from(["zeros", "border", "reflection"]))
    align = draw(st.booleans())
    dtype = draw(st.sampled_from(["float32", "float64"]))
    n = draw(st.integers(0, 2))
    c = draw(st.integers(0, 2))
    spatial = tuple(draw(st.lists(st.integers(1, 4), min_size=ndim, max_size=ndim)))
    out = tuple(draw(st.lists(st.integers(0, 3), min_size=ndim, max_size=ndim)))
    value = st.one_of(st.sampled_from(SPECIAL), st.floats(-3, 3, width=32))
    count = n * math.prod(out) * ndim
    grid = np.array(draw(st.lists(value, min_size=count, max_size=count)), np.float64)
    grid = grid.reshape((n,) + out + (ndim,))
    seed = draw(st.integers(0, 2**32 - 1))
    return mode, padding, align, dtype, (n, c) + spatial, grid, seed


def _near_tie(grid, spatial, align, dtype):
    """Points with a pixel coordinate within 8 ulps of a half-integer."""
    eps = 8 * np.finfo(dtype).eps
    near = np.zeros(grid.shape[:-1], bool)
    d = len(spatial)
    with np.errstate(invalid="ignore", over="ignore"):
        for k in range(d):
            size = spatial[d - 1 - k]
            x = unnormalize(grid[..., k].astype(np.float64), size, align)
            dist = np.abs(x - np.floor(x) - 0.5)
            near |= np.isfinite(x) & (dist <= eps * np.maximum(1.0, np.abs(x)))
    return near


# Central differences of the float64 reference: a step of H in grid units, at points
# whose pixel coordinates lie at least KINK_MARGIN pixels from the kinks (multiples
# of 0.5: integer taps, clip ends, reflection folds). Between kinks the reference is
# a polynomial of degree <= 3 in the grid, so the truncation error is O(H**2) ~ 1e-14;
# the rounding error is ~ eps * |terms| / H ~ 1e-10 |terms|, hence FD_TOLERANCE.
H = 1e-6
KINK_MARGIN = 1e-4
FD_TOLERANCE = 1e-7


def _grid_gradient_fd(x, grid, mode, padding, align, ct):
    """d sum(ref * ct) / d grid by central differences, one axis at a time."""
    out = np.zeros_like(grid)
    for k in range(grid.shape[-1]):
        step = np.zeros_like(grid)
        step[..., k] = H
        plus, _ = grid_sample_ref(x, grid + step, mode, padding, align)
        minus, _ = grid_sample_ref(x, grid - step, mode, padding, align)
        out[..., k] = np.sum(ct * (plus - minus), axis=1) / (2 * H)
    return out


def _smooth_points(grid, spatial, align):
    """Points whose every pixel coordinate is finite, moderate and off the kinks."""
    ok = np.all(np.isfinite(grid) & (np.abs(grid) <= 10), axis=-1)
    d = len(spatial)
    with np.errstate(invalid="ignore", over="ignore"):
        for k in range(d):
            x = unnormalize(grid[..., k], spatial[d - 1 - k], align)
            ok &= np.abs(2 * x - np.round(2 * x)) > 2 * KINK_MARGIN
    return ok


@settings(
    max_examples=1000 if DEEP else 60,
    derandomize=not DEEP,  # CI sees the same examples every run; deep runs explore
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(cases())
def test_matches_numpy_reference(case):
    mode, padding, align, dtype, shape, grid, seed = case
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape).astype(dtype)
    grid = grid.astype(dtype)  # the reference sees the same (rounded) values
    ct = rng.standard_normal(shape[:2] + grid.shape[1:-1]).astype(dtype)
    # docs/semantics.md: where reflection meets a huge finite value, the reflected position
    # is precision noise (ours need not equal the exact float64 fmod); it must only
    # be finite and in range. Those points are checked apart, with no cotangent.
    huge = (np.isfinite(grid) & (np.abs(grid) > 1e9)).any(-1)
    wild = huge if padding == "reflection" else np.zeros_like(huge)
    # Nearest is discontinuous at half-integers: within a few ulps of a tie, float32
    # (ours, as torch's float32 kernel) and the float64 reference may round apart.
    tie = _near_tie(grid, shape[2:], align, dtype) if mode == "nearest" else np.zeros_like(wild)
    ct = ct * ~(wild | tie)[:, None]
    ref_out, taps = grid_sample_ref(x, grid, mode, padding, align)
    ref_gx = grad_input_ref(shape, taps, ct)
    with x64_if(dtype):
        out, vjp = jax.vjp(
            lambda a, b: grid_sample(a, b, mode, padding, align),
            as_jax(x, dtype),
            as_jax(grid, dtype),
        )
        gx, gg = vjp(as_jax(ct, dtype))
    what = f"{mode} {padding} align={align} {dtype} x{shape} grid{grid.shape}"
    assert out.dtype == np.dtype(dtype)
    out_np = np.asarray(out, np.float64)
    tame = np.broadcast_to(~(wild | tie)[:, None], out_np.shape)
    assert_close(out_np[tame], ref_out[tame], dtype, what=f"output {what}", exact=mode == "nearest")
    finite_wild = np.broadcast_to((wild & np.isfinite(grid).all(-1))[:, None], out_np.shape)
    assert np.all(np.isfinite(out_np[finite_wild])), what
    if mode != "bicubic" and finite_wild.any():  # convex combinations of input values
        assert x.min() - 1e-6 <= out_np[finite_wild].min(), what
        assert out_np[finite_wild].max() <= x.max() + 1e-6, what
    assert_close(gx, ref_gx, dtype, what=f"grad_input {what}")
    assert np.all(np.isfinite(np.asarray(gx))), "grad_input must never be NaN"
    # Grid gradients are NaN only at points whose output is NaN (docs/semantics.md).
    gg_nan = np.isnan(np.asarray(gg)).any(-1)
    out_nan = np.isnan(np.asarray(out)).any(1) if shape[1] else np.zeros_like(gg_nan)
    assert not np.any(gg_nan & ~out_nan), what
    if dtype == "float64" and shape[1] > 0:
        smooth = _smooth_points(grid, shape[2:], align)
        fd = _grid_gradient_fd(x, grid, mode, padding, align, ct)
        terms = np.sum(np.abs(ct), axis=1) * np.max(np.abs(x), initial=0.0)
        err = np.abs(np.asarray(gg) - fd)[smooth]
        bound = FD_TOLERANCE * np.maximum(1.0, np.broadcast_to(terms[..., None], gg.shape)[smooth])
        assert np.all(err <= bound), f"grad_grid {what}: errors {err[err > bound]}"


OP_BY_OP_CASES = [
    (ndim, mode, padding, align, dtype)
    for ndim in (2, 3)
    for mode in ("bilinear", "nearest", "bicubic")
    for padding in ("zeros", "border", "reflection")
    for align in (False, True)
    for dtype in ("float32", "float64")
    if not (ndim == 3 and mode == "bicubic")
]


def _value_and_grads(x, grid, ct, mode, padding, align):
    out, vjp = jax.vjp(lambda a, b: grid_sample(a, b, mode, padding, align), x, grid)
    return (out, *vjp(ct))


def _op_by_op_args(case, rng):
    """A random input, grid and cotangent for ``case``: sizes 1 to 17, 80% of the grid
    on exact pixel positions as users build them (reflected several times)."""
    ndim, _, _, align, dtype = case
    spatial = tuple(int(s) for s in rng.integers(1, 18, ndim))
    out_sp = (4, 16) if ndim == 2 else (2, 4, 8)
    grid = np.stack(
        [
            rng.choice(pixel_grid_values(spatial[ndim - 1 - k], align, dtype), (2,) + out_sp)
            for k in range(ndim)
        ],
        axis=-1,
    )
    off_pixel = rng.random(grid.shape) < 0.2
    grid[off_pixel] = rng.uniform(-3, 3, np.count_nonzero(off_pixel))
    x = rng.standard_normal((2, 2) + spatial).astype(dtype)
    ct = rng.standard_normal((2, 2) + out_sp).astype(dtype)
    return x, grid, ct


def _op_by_op_id(case):
    return f"{case[0] + 2}d-{case[1]}-{case[2]}-ac{int(case[3])}-{case[4]}"


@pytest.mark.parametrize(
    "cases",
    quick_apart(
        OP_BY_OP_CASES,
        family=lambda c: f"{c[0] + 2}d-{c[1]}-{c[4]}",
        quick=lambda c: _op_by_op_id(c) in OP_BY_OP_QUICK,
        ident=_op_by_op_id,
    ),
)
def test_jit_equals_op_by_op(cases):
    """XLA's rewrites under jit (constant folding, FMA contraction) change no pixel.

    Op by op, under `jax.disable_jit`, every operation rounds on its own:
    the jitted function must give the same pixels (nearest exactly) and the
    same one-sided derivatives, so values and gradients agree to rounding.
    Grids: see `_op_by_op_args`. The jitted side of all ``cases`` (one rank,
    mode and dtype) is one program.
    """
    dtype = cases[0][4]
    draws = [np.random.default_rng(OP_BY_OP_CASES.index(c)) for c in cases]
    options = [c[1:4] for c in cases]

    @jax.jit
    def jitted(args):
        return [_value_and_grads(*a, *o) for a, o in zip(args, options, strict=True)]

    for _ in range(8 if DEEP else 1):
        args = [_op_by_op_args(c, rng) for c, rng in zip(cases, draws, strict=True)]
        with x64_if(dtype):
            results = jitted(args)
            with jax.disable_jit():
                op_by_op = [_value_and_grads(*a, *o) for a, o in zip(args, options, strict=True)]
        for (_, mode, padding, align, _), (x, _, _), a3, b3 in zip(
            cases, args, results, op_by_op, strict=True
        ):
            exact = mode == "nearest"
            what = f"{mode} {padding} align={align} {dtype} {x.shape[2:]}"
            for name, a, b in zip(("output", "grad_input", "grad_grid"), a3, b3, strict=True):
                assert_close(
                    a, b, dtype, what=f"{name} {what}", exact=exact and name != "grad_input"
                )
