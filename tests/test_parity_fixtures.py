"""Parity with torch on saved fixtures (tests/fixtures/generate.py): no torch needed."""

from __future__ import annotations

import functools

import jax
import numpy as np
import pytest
from conftest import as_jax, assert_close, load_cases, x64_if

from jax_gridsample import affine_grid, grid_sample, grid_sample_separable


@functools.partial(jax.jit, static_argnums=(3, 4, 5))
def _forward_and_grads(x, g, ct, mode, padding_mode, align_corners):
    out, vjp = jax.vjp(lambda a, b: grid_sample(a, b, mode, padding_mode, align_corners), x, g)
    return (out, *vjp(ct))


def _check_case(case, arrays, *, grad_mask=None):
    dtype = case["dtype"]
    with x64_if(dtype):
        x, g, ct = (as_jax(arrays[k], dtype) for k in ("input", "grid", "cotangent"))
        out, gx, gg = _forward_and_grads(
            x, g, ct, case["mode"], case["padding_mode"], case["align_corners"]
        )
    for a in (out, gx, gg):
        assert str(a.dtype) == dtype
    exact = case["mode"] == "nearest"
    assert_close(out, arrays["out"], dtype, what="output", exact=exact)
    assert_close(gx, arrays["grad_input"], dtype, what="grad_input")
    gg, ref = np.asarray(gg, np.float64), arrays["grad_grid"]
    if grad_mask is not None:  # points whose output is NaN may have NaN grid gradients
        gg, ref = gg[grad_mask], ref[grad_mask]
    assert_close(gg, ref, dtype, what="grad_grid", exact=exact)


_, MATRIX, MATRIX_ARRAYS = load_cases("grid_sample.npz")
_, HALF, HALF_ARRAYS = load_cases("half.npz")
_, HOSTILE, HOSTILE_ARRAYS = load_cases("hostile.npz")
_, AFFINE, AFFINE_ARRAYS = load_cases("affine_grid.npz")
_, PIXEL, PIXEL_ARRAYS = load_cases("pixel.npz")
_, SEPARABLE, SEPARABLE_ARRAYS = load_cases("separable.npz")


@pytest.mark.parametrize("i", range(len(MATRIX)), ids=[c["id"] for c in MATRIX])
def test_matrix(i):
    _check_case(MATRIX[i], MATRIX_ARRAYS(i))


@pytest.mark.parametrize("i", range(len(HALF)), ids=[c["id"] for c in HALF])
def test_half_dtypes(i):
    _check_case(HALF[i], HALF_ARRAYS(i))


@pytest.mark.parametrize("i", range(len(HOSTILE)), ids=[c["id"] for c in HOSTILE])
def test_nonfinite_and_huge_grids(i):
    arrays = HOSTILE_ARRAYS(i)
    finite_points = ~arrays["nan_out"][:, 0]
    _check_case(HOSTILE[i], arrays, grad_mask=finite_points)


@pytest.mark.parametrize("i", range(len(PIXEL)), ids=[c["id"] for c in PIXEL])
def test_exact_pixel_positions(i):
    """Grids on integer and half-integer pixel positions as users build them (issue 14).

    One ulp of the unnormalised coordinate decides the pixel nearest picks
    and the side of bilinear's one-sided derivatives, so these match torch
    only if every rounding is torch's, under jit.
    """
    _check_case(PIXEL[i], PIXEL_ARRAYS(i))


@pytest.mark.parametrize("i", range(len(SEPARABLE)), ids=[c["id"] for c in SEPARABLE])
def test_separable(i):
    """grid_sample_separable against torch's grid_sample on the expanded grid."""
    case, arrays = SEPARABLE[i], SEPARABLE_ARRAYS(i)
    dtype = case["dtype"]
    names = [k for k in "xyz" if k in arrays]
    with x64_if(dtype):
        x, ct, *axes = (as_jax(arrays[k], dtype) for k in ("input", "cotangent", *names))
        options = case["mode"], case["padding_mode"], case["align_corners"]
        out, vjp = jax.vjp(lambda x, *a: grid_sample_separable(x, a, *options), x, *axes)
        grads = vjp(ct)
    exact = case["mode"] == "nearest"
    assert_close(out, arrays["out"], dtype, what="output", exact=exact)
    assert_close(grads[0], arrays["grad_input"], dtype, what="grad_input")
    for name, g in zip(names, grads[1:], strict=True):
        assert_close(g, arrays[f"grad_{name}"], dtype, what=f"grad_{name}", exact=exact)


@pytest.mark.parametrize("i", range(len(AFFINE)), ids=[c["id"] for c in AFFINE])
def test_affine_grid(i):
    case, arrays = AFFINE[i], AFFINE_ARRAYS(i)
    dtype = case["dtype"]
    with x64_if(dtype):
        theta, ct = as_jax(arrays["theta"], dtype), as_jax(arrays["cotangent"], dtype)
        out, vjp = jax.vjp(
            lambda t: affine_grid(t, case["size"], align_corners=case["align_corners"]), theta
        )
        (grad_theta,) = vjp(ct)
    assert out.dtype == np.dtype(dtype)
    assert_close(out, arrays["out"], dtype, what="grid")
    assert_close(grad_theta, arrays["grad_theta"], dtype, what="grad_theta")


def test_fixture_provenance():
    meta, cases, _ = load_cases("grid_sample.npz")
    assert meta["torch_version"].startswith("2.")
    assert len(cases) == 648


CHANNELS_LAST = [i for i, c in enumerate(MATRIX) if "-s1-" in c["id"]]  # N > 1, C > 1


@pytest.mark.parametrize("i", CHANNELS_LAST, ids=[MATRIX[i]["id"] for i in CHANNELS_LAST])
def test_matrix_channels_last(i):
    """channel_axis=-1 gives torch's numbers on (N, *spatial, C) arrays."""
    case, arrays = MATRIX[i], MATRIX_ARRAYS(i)
    dtype = case["dtype"]
    last = {k: np.moveaxis(arrays[k], 1, -1) for k in ("input", "cotangent", "out", "grad_input")}
    with x64_if(dtype):
        x, g, ct = (as_jax(a, dtype) for a in (last["input"], arrays["grid"], last["cotangent"]))
        out, vjp = jax.vjp(
            lambda a, b: grid_sample(
                a,
                b,
                case["mode"],
                case["padding_mode"],
                case["align_corners"],
                channel_axis=-1,
            ),
            x,
            g,
        )
        gx, gg = vjp(ct)
    exact = case["mode"] == "nearest"
    assert_close(out, last["out"], dtype, what="output", exact=exact)
    assert_close(gx, last["grad_input"], dtype, what="grad_input")
    assert_close(gg, arrays["grad_grid"], dtype, what="grad_grid", exact=exact)
