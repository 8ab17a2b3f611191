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


LAYOUTS = (1, -1)  # channel_axis: channels first, channels last


def alternating_layout(j: int, part: int = 0) -> int:
    """The layout of option set ``j`` (padding-major over align_corners) when each runs in
    one: alternating so that both layouts meet every padding and both align_corners, or the
    other layout for ``part=1``."""
    return LAYOUTS[(j + j // 2 + part) % 2]


def quick_apart(items, family, quick, ident):
    """pytest params: per ``family(item)``, each ``quick`` item alone, then the rest in one.

    A test that compiles one program for all the items of a param keeps the quick
    tier's programs small and gives the slow tier one program per family. The ids
    are ``ident(item)`` for the items alone and ``"{family}-others"`` for the rest.
    """
    families = {}
    for item in items:
        families.setdefault(family(item), []).append(item)
    params = []
    for name, members in families.items():
        params += [pytest.param([m], id=ident(m)) for m in members if quick(m)]
        others = [m for m in members if not quick(m)]
        if others:
            params.append(pytest.param(others, id=f"{name}-others"))
    return params


# The quick tier, `pytest -m "not slow"` (what CI runs, at the lowest and the newest
# jax), runs every public behaviour once: each mode x padding x align_corners in
# 2-D and 3-D against the fixtures (values and both gradients), every error, dtype
# and transformation test, the examples' functions, jit against op by op once.
# Below, per heavily parametrised test, the ids it keeps in the quick tier; its
# other ids are marked slow. The device check's dry run carries @pytest.mark.slow
# itself.
OP_BY_OP_QUICK = ("5d-nearest-border-ac1-float64",)
QUICK_IDS = {
    # Fixture groups (rank-mode-dtype-shape): each is one program, both layouts, except
    # float64's s1 groups, which run in two parts like the groups below (`in_parts`).
    "test_matrix": lambda i: i.endswith(("-float32-s1-both", "-float64-s1-part0")),
    # Outside the matrix, the groups that test_parity_fixtures.py splits in two parts (each
    # case in one layout per part) keep part 0; the others run both layouts, slow.
    "test_half_dtypes": lambda i: i.endswith("-part0"),
    "test_exact_pixel_positions": lambda i: i.endswith("-part0"),
    "test_separable": lambda i: i.endswith("-part0"),
    "test_check_grads_float64": lambda i: i == "4d-bilinear-zeros-ac0",
    "test_jvp_vjp_consistent_and_hessian_finite": lambda i: i.endswith("bilinear-zeros-ac0"),
    "test_fused_and_looped_corner_sums_agree": lambda i: "zeros-ac0" in i and "float32" in i,
    "test_many_channels_match_the_same_channels_in_parts": lambda i: i == "2-bilinear",
    "test_random_against_torch": lambda i: i == "0-9",
    "test_jit_equals_op_by_op": lambda i: i in OP_BY_OP_QUICK,
    "test_batch_sharding_on_eight_devices": lambda i: False,
    "test_every_formulation_matches_torch": lambda i: not i.endswith("-others"),
    "test_values_and_input_gradients_match_torchvision": lambda i: not i.endswith("-others"),
    # grid_sample_separable against grid_sample on the expanded grid, slow: the torch fixtures
    # (test_parity_fixtures.py) cover every option and layout on box and pixel axes, and the
    # non-finite rule tests every plan on unsorted axes with huge values.
    "test_equals_grid_sample_on_expanded_grid": lambda i: False,
    "test_check_grads_float64_separable": lambda i: False,
    # Half types take one float32 path (`_core.compute_dtype`); the fixtures' bfloat16
    # groups of grid_sample stay quick.
    "test_half_dtypes_separable": lambda i: i == "float16",
    # Bilinear, and bicubic channels-last, take the same formulations with 16 channels as with
    # 64; channels-first bicubic does not (`_policy.RELAYOUT_MIN_CHANNELS`).
    "test_temporaries_stay_a_few_times_the_arguments": lambda i: (
        i.endswith("-16") or i == "bicubic-1-64"
    ),
    # The matrix's non-finite grids (hostile.npz) check the same rule in every mode, padding,
    # align_corners, rank and layout.
    "test_grad_input_finite_for_nonfinite_grids": lambda i: False,
}


# The suite's time is compiling: each test reports how many XLA programs it compiled
# and how long that took, and the summary lists the heaviest tests.
_BACKEND_COMPILE = "/jax/core/compile/backend_compile_duration"
_COMPILED = {"programs": 0, "seconds": 0.0}


def _count_compile(event, duration, *args, **kwargs):
    del args, kwargs
    if event == _BACKEND_COMPILE:
        _COMPILED["programs"] += 1
        _COMPILED["seconds"] += duration


jax.monitoring.register_event_duration_secs_listener(_count_compile)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item):
    before = dict(_COMPILED)
    yield
    item.user_properties.append(("compiled programs", _COMPILED["programs"] - before["programs"]))
    item.user_properties.append(("compile seconds", _COMPILED["seconds"] - before["seconds"]))


def pytest_terminal_summary(terminalreporter):
    rows = []
    for report in terminalreporter.stats.get("passed", []) + terminalreporter.stats.get(
        "failed", []
    ):
        props = dict(getattr(report, "user_properties", ()))
        if report.when == "call" and "compiled programs" in props:
            rows.append((props["compile seconds"], props["compiled programs"], report.nodeid))
    if not rows:
        return
    total_s, total_n = sum(r[0] for r in rows), sum(r[1] for r in rows)
    terminalreporter.write_sep("-", f"XLA compiled {total_n} programs in {total_s:.0f} s")
    for seconds, count, nodeid in sorted(rows, reverse=True)[:10]:
        terminalreporter.write_line(f"{seconds:6.1f} s {count:4d} programs  {nodeid}")


def pytest_configure(config):
    # Tests differ in length by 100x: with pytest-xdist, idle workers take queued tests from
    # busy ones instead of waiting for them at the end (measured 4% faster on 2 workers).
    if getattr(config.option, "dist", None) == "load":
        config.option.dist = "worksteal"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtestloop():
    """Frees JAX's compiled executables before an xdist worker reports that it is done.

    Freeing thousands of them at interpreter exit took an xdist worker past
    execnet's 5 s shutdown grace, so execnet sent it SIGINT, which landed in
    hypothesis's gc callback and printed a KeyboardInterrupt traceback as a
    PytestUnraisableExceptionWarning after a green run.
    """
    yield
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
    that and died on a failed mmap.
    """
    yield
    jax.clear_caches()
    gc.collect()


@pytest.fixture(autouse=True)
def _strict_rank_promotion():
    # Catch silent broadcasting inside the library (equinox's habit).
    with jax.numpy_rank_promotion("raise"):
        yield
