"""Shared helpers: dtype tolerances, fixture loading and x64 handling."""

from __future__ import annotations

import contextlib
import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

FIXTURES = pathlib.Path(__file__).parent / "fixtures"

# Max-abs error allowed, relative to max(1, max |reference|): a few ulps of the
# compute dtype for float32/float64, half an ulp of the storage dtype (plus
# float32 noise) for the half types, whose results are rounded once.
TOLERANCE = {
    "float64": 1e-12,
    "float32": 1e-5,
    "float16": 1e-3,
    "bfloat16": 8e-3,
}


def x64_if(dtype: str):
    """Context enabling 64-bit JAX types when ``dtype`` needs them."""
    return jax.enable_x64(True) if dtype == "float64" else contextlib.nullcontext()


def assert_close(
    actual, expected, dtype: str, *, what: str = "", exact: bool = False, scale: float = 0.0
):
    """Max-abs error check with a dtype-based tolerance; NaNs must coincide.

    The error is measured relative to max(1, max |expected|, scale). ``scale``
    is the magnitude of the terms a result sums when that sum cancels (e.g.
    the grid gradient of a far-out bicubic point, where all taps read the
    same edge pixel: torch and we both return rounding noise of that size).
    """
    actual = np.asarray(actual, np.float64)
    expected = np.asarray(expected, np.float64)
    assert actual.shape == expected.shape, (what, actual.shape, expected.shape)
    nan_a, nan_e = np.isnan(actual), np.isnan(expected)
    assert np.array_equal(nan_a, nan_e), f"{what}: NaN positions differ"
    a, e = actual[~nan_e], expected[~nan_e]
    if a.size == 0:
        return
    err = float(np.max(np.abs(a - e)))
    bound = 0.0 if exact else TOLERANCE[dtype] * max(1.0, float(np.max(np.abs(e))), scale)
    assert err <= bound, f"{what}: max abs error {err:.3g} > {bound:.3g}"


def load_cases(name: str):
    """Returns (meta, cases, arrays) of a fixture file written by generate.py."""
    data = np.load(FIXTURES / name)
    meta = json.loads(str(data["__cases__"]))
    cases = meta.pop("cases")

    def arrays(i):
        prefix = f"{i}__"
        return {k[len(prefix) :]: data[k] for k in data.files if k.startswith(prefix)}

    return meta, cases, arrays


def as_jax(a: np.ndarray, dtype: str) -> jax.Array:
    return jnp.asarray(a).astype(dtype)


@pytest.fixture(autouse=True)
def _strict_rank_promotion():
    # Catch silent broadcasting inside the library (equinox's habit).
    with jax.numpy_rank_promotion("raise"):
        yield
