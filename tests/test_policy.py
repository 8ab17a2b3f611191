"""The formulation policy (`jax_gridsample._policy`): every plan reachable and parity-tested.

Each plan is forced through the public API on CPU and checked against the torch
fixtures (values and both gradients); plans chosen per platform are deferred to
lowering.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import as_jax, assert_close, load_cases

from jax_gridsample import _policy, grid_sample

_, MATRIX, MATRIX_ARRAYS = load_cases("grid_sample.npz")
# float32, N > 1 and C > 1, exact pixel positions: every mode x padding x align x rank.
CASES = [i for i, c in enumerate(MATRIX) if c["id"].endswith("-float32-s1-pixel")]
# Each forced plan's programs, each compiled once: the value per forward formulation
# (it depends on nothing else), the gradients per derivative program. The loop's
# derivatives are one program whatever the forward
# (`test_loop_derivatives_do_not_depend_on_the_forward`), and the autodiff of the
# loop's forward is the loop's (`test_the_loops_own_derivatives_are_the_loops`).
LOOP = "loop_channels_last"
PROGRAMS = (
    [("value", f, LOOP) for f in _policy.FORWARDS]
    + [("gradients", "fused", LOOP)]
    + [("gradients", f, "forward") for f in _policy.FORWARDS if f != LOOP]
)


@pytest.mark.parametrize("part,forward,derivatives", PROGRAMS, ids=["-".join(p) for p in PROGRAMS])
@pytest.mark.parametrize("channel_axis", [1, -1])
@pytest.mark.parametrize("i", CASES, ids=[MATRIX[i]["id"] for i in CASES])
def test_forced_plan_matches_torch(i, channel_axis, part, forward, derivatives):
    case, arrays = MATRIX[i], MATRIX_ARRAYS(i)
    last = channel_axis == -1
    move = (lambda a: np.moveaxis(a, 1, -1)) if last else (lambda a: a)
    x, g, ct = (
        as_jax(a, "float32")
        for a in (move(arrays["input"]), arrays["grid"], move(arrays["cotangent"]))
    )
    args = (case["mode"], case["padding_mode"], case["align_corners"])
    exact = case["mode"] == "nearest"

    def f(a, b):
        return grid_sample(a, b, *args, channel_axis=channel_axis)

    # A new function per test: the plan is read when it is traced and is not part of
    # jit's cache key, so a shared jitted helper would reuse the first plan's trace.
    @jax.jit
    def run(x, g, ct):
        return f(x, g) if part == "value" else jax.vjp(f, x, g)[1](ct)

    with _policy.force(forward, derivatives):
        result = run(x, g, ct)
    if part == "value":
        assert_close(result, move(arrays["out"]), "float32", what="output", exact=exact)
    else:
        gx, gg = result
        assert_close(gx, move(arrays["grad_input"]), "float32", what="grad_input")
        assert_close(gg, arrays["grad_grid"], "float32", what="grad_grid", exact=exact)


# The jaxpr comparisons: every mode and rank, both layouts, on a small case.
MODES_AND_RANKS = pytest.mark.parametrize(
    "ndim,mode", [(2, "bilinear"), (2, "nearest"), (2, "bicubic"), (3, "bilinear"), (3, "nearest")]
)
LAYOUTS = pytest.mark.parametrize("channel_axis", [1, -1])


def _small_case(ndim: int, channel_axis: int) -> tuple[jax.Array, jax.Array]:
    """An input of 3 channels and a grid of 4 points per axis, all at 0.25."""
    spatial = (5, 6, 4)[:ndim]
    x = jnp.ones((2, *spatial, 3) if channel_axis == -1 else (2, 3, *spatial))
    return x, jnp.full((2, *(4,) * ndim, ndim), 0.25)


@MODES_AND_RANKS
@LAYOUTS
def test_loop_derivatives_do_not_depend_on_the_forward(ndim, mode, channel_axis):
    """The gradients' program with the loop's derivatives is the same for every forward.

    Compared after dead-code elimination (what XLA does to the unused value),
    so `test_forced_plan_matches_torch` compiles it once. The autodiff of each
    forward ("forward") differs, which shows that the comparison can tell.
    """
    from jax._src.interpreters import partial_eval as pe

    if jax.__version_info__ < (0, 10, 2):
        pytest.skip("checked from jax 0.10.2: 0.8.0's DCE keeps unused constants of inner jaxprs")
    x, g = _small_case(ndim, channel_axis)
    ct = jnp.ones((2, *(4,) * ndim, 3) if channel_axis == -1 else (2, 3, *(4,) * ndim))

    def traced(forward, derivatives):
        def gradients(a, b, c):  # a new function per trace: the plan is read when traced
            _, vjp = jax.vjp(lambda a, b: grid_sample(a, b, mode, channel_axis=channel_axis), a, b)
            return vjp(c)

        with _policy.force(forward, derivatives):
            closed = jax.make_jaxpr(gradients)(x, g, ct)
        jaxpr, _ = pe.dce_jaxpr(closed.jaxpr, [True] * len(closed.jaxpr.outvars))
        return str(jaxpr)

    loop = {traced(f, LOOP) for f in _policy.FORWARDS}
    assert len(loop) == 1
    own = {traced(f, "forward") for f in _policy.FORWARDS}
    assert len(own) == (2 if mode == "nearest" else 3)  # nearest: one gather, stored or not


@MODES_AND_RANKS
@LAYOUTS
def test_the_loops_own_derivatives_are_the_loops(ndim, mode, channel_axis):
    """Derivatives "forward" of the loop's value trace the loop's derivatives exactly."""
    x, g = _small_case(ndim, channel_axis)

    def loss(a, b):
        return jnp.sum(grid_sample(a, b, mode, channel_axis=channel_axis))

    def traced(derivatives):
        with _policy.force("loop_channels_last", derivatives):
            return str(jax.make_jaxpr(jax.grad(loss, (0, 1)))(x, g))

    assert traced("forward") == traced("loop_channels_last")


def _jaxpr_text(forward, platforms, channels=3):
    x = jnp.ones((2, channels, 5, 6))
    g = jnp.zeros((2, 4, 4, 2))
    with _policy.force(forward, "loop_channels_last", platforms):
        return str(jax.make_jaxpr(lambda a, b: grid_sample(a, b))(x, g))


def test_forcing_is_part_of_the_trace():
    """A forced plan reaches the traced program (not hidden by a cached trace)."""
    stored, fused = (
        _jaxpr_text("fused_stored", _policy.PLATFORMS),
        _jaxpr_text("fused", _policy.PLATFORMS),
    )
    assert "scan" in stored and "scan" not in fused  # lax.map of the stored offsets


def test_plans_differing_by_platform_are_chosen_at_lowering():
    """A GPU plan unlike the CPU one: both traced, picked by platform_dependent."""
    text = _jaxpr_text("fused_stored", ("cuda", "rocm", "tpu"))
    assert "platform_index" in text and "cond" in text
    x = jnp.asarray(np.random.default_rng(0).standard_normal((2, 3, 5, 6)), jnp.float32)
    g = jnp.asarray(np.random.default_rng(1).uniform(-1.2, 1.2, (2, 4, 4, 2)), jnp.float32)
    reference = grid_sample(x, g)
    with _policy.force("loop_channels_last", "forward", ("cuda", "rocm", "tpu")):
        out = jax.jit(lambda a, b: grid_sample(a, b))(x, g)
        gx = jax.grad(lambda a: grid_sample(a, g).sum())(x)
    np.testing.assert_allclose(np.asarray(out), np.asarray(reference), rtol=1e-6, atol=1e-6)
    assert gx.shape == x.shape


def test_cpu_plan_follows_the_measured_rules():
    cpu = _policy.cpu_plan
    assert cpu("bilinear", 2, 1, False) == ("fused", "loop_channels_last")
    assert cpu("bilinear", 2, 8, False).forward == "fused_stored"  # C >= 2K = 8
    assert cpu("bilinear", 2, 2048, False).forward == "fused_stored"  # bilinear never re-lays out
    assert cpu("bicubic", 2, 31, False).forward == "fused"
    assert cpu("bicubic", 2, 32, False).forward == "fused_stored"
    assert cpu("bicubic", 2, 64, False).forward == "loop_channels_last"
    assert cpu("bicubic", 2, 1, True).forward == "loop_channels_last"
    assert cpu("bilinear", 3, 64, False).forward == "loop_channels_last"
    assert cpu("nearest", 3, 4096, False).forward == "fused"  # a single gather
    assert _policy.accelerator_plan("bilinear", 2, 8, False) == cpu("bilinear", 2, 8, False)


def test_unknown_forced_plan_is_an_error():
    with pytest.raises(ValueError, match="unknown plan"), _policy.force("gathers", "forward"):
        pass


def test_separable_plan_follows_the_measured_rules():
    plan = _policy.separable_plan
    limit = _policy.SEPARABLE_MATMUL_MAX_SIZE
    most = _policy.SEPARABLE_MATMUL_MAX_MACS_PER_CORNER
    assert plan("bilinear", (28, 28), (300, 500), 1) == ("taps_rows", "matmul")  # mask pasting
    assert plan("bicubic", (limit, limit), (128, 128), 3) == ("taps_rows", "matmul")
    # The value looks at the last axis only.
    assert plan("bilinear", (limit + 1, 8), (4, 4), 1)[0] == "taps_rows"
    assert plan("bilinear", (8, limit + 1), (4, 4), 1)[0] == "taps"
    # The derivatives at the matmuls' multiply-adds per output point and
    # stencil corner: 2x upsampling 64 -> 128 px costs 64 * 64 / 128 + 64 =
    # 96 per channel, the y axis resampled last.
    assert _policy.matmul_macs((64, 64), (128, 128)) == 96
    assert _policy.matmul_macs((100, 100), (300, 500)) == 100 * 100 / 300 + 100
    assert _policy.matmul_macs((24, 24, 24), (48, 48, 48)) == 24 / 4 + 24 / 2 + 24
    assert 53 * 96 / 4 <= most < 54 * 96 / 4
    assert plan("bilinear", (64, 64), (128, 128), 53)[1] == "matmul"
    assert plan("bilinear", (64, 64), (128, 128), 54)[1] == "expanded"
    # Axes longer than the matmul limit: grid_sample's derivatives.
    assert plan("bilinear", (512, 512), (256, 256), 3) == ("taps", "expanded")
    assert plan("bilinear", (limit + 1, 8), (4, 4), 1)[1] == "expanded"
    assert plan("bilinear", (8, limit + 1), (4, 4), 1)[1] == "expanded"
    assert plan("bilinear", (8, limit), (4, 4), 1)[1] == "matmul"
    # Bicubic has 16 corners: 256 * 80 / 16 = 1280.
    assert plan("bicubic", (128, 128), (128, 128), 80)[1] == "matmul"
    assert plan("bicubic", (128, 128), (128, 128), 81)[1] == "expanded"
    assert plan("bilinear", (24, 24, 24), (48, 48, 48), 243)[1] == "matmul"  # 8 corners
    assert plan("bilinear", (24, 24, 24), (48, 48, 48), 244)[1] == "expanded"
    with _policy.force_separable("matmul", "taps"):
        assert _policy.separable_plans("bilinear", (8, 8), (4, 4), 1) == tuple(
            (p, ("matmul", "taps")) for p in _policy.PLATFORMS
        )
    with pytest.raises(ValueError, match="unknown separable plan"):
        with _policy.force_separable("fused", "matmul"):
            pass


def test_contraction_order_minimises_the_summed_cost():
    order = _policy.contraction_order
    # Matmuls (cost = input sizes), 28x28 -> 300x500: y first costs 300*28*28 +
    # 300*500*28 = 4.43M, x first 28*500*28 + 300*500*28 = 4.59M.
    assert order((28, 28), (300, 500), (28, 28)) == (0, 1)
    # Downsampling 512x64 -> 256x64 by gathers (2 taps): shrink the long axis first.
    assert order((512, 64), (256, 64), (2, 2)) == (0, 1)
    assert order((64, 512), (64, 256), (2, 2)) == (1, 0)
    assert order((4, 4, 4), (4, 4, 4), (2, 2, 2)) == (0, 1, 2)  # ties: lower axis first
    # With the last axis fixed, the cheapest of the rest: x first for mask pasting.
    assert order((28, 28), (300, 500), (28, 28), last=0) == (1, 0)
    assert order((8, 8, 64), (8, 8, 4), (2, 2, 2), last=0) == (2, 1, 0)
    assert order((8, 64, 8), (8, 4, 8), (2, 2, 2), last=0) == (1, 2, 0)
