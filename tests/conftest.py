"""Shared helpers: dtype tolerances, fixture loading and x64 handling."""

from __future__ import annotations

import contextlib
import gc
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


# The quick tier, `pytest -m "not slow"` (what CI runs, at the lowest and the newest
# jax), runs every public behaviour once: each mode x padding x align_corners in
# 2-D and 3-D against the fixtures (values and both gradients), every error, dtype
# and transformation test, the examples, one sharded mesh, jit against op by op.
# Below, per heavily parametrised test, the ids it keeps in the quick tier; its
# other ids are marked slow. The device check's dry run carries @pytest.mark.slow
# itself.
_OP_BY_OP_QUICK = (
    "4d-bicubic-reflection-ac0-float32",
    "5d-bilinear-zeros-ac1-float64",
    "5d-nearest-border-ac1-float64",
)
QUICK_IDS = {
    "test_matrix": lambda i: "-float32-s1-" in i,
    "test_matrix_channels_last": lambda i: "-float32-" in i and i.endswith("-pixel"),
    "test_half_dtypes": lambda i: "-float16-" in i and i.endswith("-inside"),
    "test_nonfinite_and_huge_grids": lambda i: "-float32-" in i,
    "test_exact_pixel_positions": lambda i: "-float32-" in i and i.endswith("-pixel0"),
    "test_check_grads_float64": lambda i: i == "4d-bilinear-zeros-ac0",
    "test_jvp_vjp_consistent_and_hessian_finite": lambda i: i.endswith("bilinear-zeros-ac0"),
    "test_fused_and_looped_corner_sums_agree": lambda i: "zeros-ac0" in i and "float32" in i,
    "test_many_channels_match_the_same_channels_in_parts": lambda i: i == "2-bilinear",
    "test_random_against_torch": lambda i: int(i) < 10,
    "test_jit_equals_op_by_op": lambda i: i in _OP_BY_OP_QUICK,
    "test_batch_sharding_on_eight_devices": lambda i: i == "Auto",
    "test_forced_plan_matches_torch": lambda i: i.startswith(
        ("4d-bilinear-zeros-ac0", "4d-bicubic-zeros-ac0")
    ),
    # grid_sample_separable: torch fixtures for each mode x rank (zeros padding, exact
    # pixel positions), the equivalence matrix on one combination (every axis kind), the
    # policy's plan.
    "test_separable": lambda i: "-zeros-ac0-float32-pixel" in i,
    "test_equals_grid_sample_on_expanded_grid": lambda i: i == "4d-bilinear-zeros-ac0-float32",
    "test_every_formulation_equals_grid_sample": lambda i: (
        i == "2-bicubic-reflection-taps_rows-matmul"
    ),
    "test_half_dtypes_separable": lambda i: i == "bilinear-float16",
    "test_check_grads_float64_separable": lambda i: False,
    "test_nan_cotangent_at_nan_outputs": lambda i: (
        i in ("4d-bilinear-zeros-ac0", "5d-bilinear-zeros-ac1")
    ),
    "test_matmuls_with_nans_equals_with_nans": lambda i: i == "4d-bicubic-zeros-ac0",
    "test_windowed_derivatives_equal_every_column": lambda i: i in ("2-bilinear", "2-nearest"),
}


@pytest.hookimpl(tryfirst=True)
def pytest_sessionfinish(session, exitstatus):
    """Frees JAX's compiled executables before an xdist worker reports that it is done.

    Freeing thousands of them at interpreter exit took an xdist worker past
    execnet's 5 s shutdown grace, so execnet sent it SIGINT, which landed in
    hypothesis's gc callback and printed a KeyboardInterrupt traceback as a
    PytestUnraisableExceptionWarning after a green run.
    """
    del session, exitstatus
    jax.clear_caches()
    gc.collect()


def pytest_collection_modifyitems(config, items):
    del config
    for item in items:
        quick = QUICK_IDS.get(getattr(item, "originalname", item.name))
        callspec = getattr(item, "callspec", None)
        if quick is not None and callspec is not None and not quick(callspec.id):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(autouse=True, scope="module")
def _free_compiled_code():
    """Frees JAX's compiled executables after each test module.

    XLA CPU maps every compiled kernel's code into the process (three
    mappings per kernel; about 300 for one `grid_sample_separable` gradient),
    and Linux allows 65530 mappings per process by default
    (``vm.max_map_count``). Kept for the whole suite, an xdist worker ran past
    that and died on a failed mmap (session 8's CI); tests/test_separable.py
    alone reaches about 26000.
    """
    yield
    jax.clear_caches()
    gc.collect()


@pytest.fixture(autouse=True)
def _strict_rank_promotion():
    # Catch silent broadcasting inside the library (equinox's habit).
    with jax.numpy_rank_promotion("raise"):
        yield
