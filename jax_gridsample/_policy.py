"""Which formulation computes `grid_sample`'s value, and which its derivatives.

The sum over stencil corners has three formulations (`_kernels.sample_one`),
all the same terms in the same order, so they agree to rounding:

* ``"fused"``: one expression over the corners in the caller's layout, which
  XLA fuses into a single pass; each point's offsets and weights are computed
  inside the gathers, again for every channel.
* ``"fused_stored"``: the same, after a loop over the corners that computes
  every corner's offsets and weights once and stores them, `(K, P)` each.
* ``"loop_channels_last"``: a `lax.scan` over the corners on a channels-last
  input (moved there if needed), each step gathering whole C-vectors; its
  body is checkpointed, so the backward pass re-gathers instead of storing
  every corner.

The derivatives (`jvp`, hence `vjp`, `grad`, `hessian`) are JAX's autodiff of
one of them: ``"loop_channels_last"``, or ``"forward"`` (whatever computed
the value). A plan is chosen per platform from static facts only, and
`grid_sample` picks the platform's plan when it is lowered
(`jax.lax.platform_dependent`), so a function exported or compiled for a GPU
gets the GPU plan even when traced on a CPU host.
"""

from __future__ import annotations

import contextlib
import contextvars
import itertools
import math
from collections.abc import Iterator
from typing import NamedTuple

from jax_gridsample._kernels import num_corners

FORWARDS = ("fused", "fused_stored", "loop_channels_last")
DERIVATIVES = ("loop_channels_last", "forward")
PLATFORMS = ("cpu", "cuda", "rocm", "tpu")

# A channels-first input with a stencil of more than 4 corners (trilinear,
# bicubic) is sampled through the channels-last loop from this many channels
# on (CPU, see `cpu_plan`).
RELAYOUT_MIN_CHANNELS = 64


class Plan(NamedTuple):
    """The formulation of the value (one of `FORWARDS`) and of the derivatives (`DERIVATIVES`)."""

    forward: str
    derivatives: str


def cpu_plan(mode: str, ndim: int, channels: int, channels_last: bool) -> Plan:
    """XLA CPU's plan, measured on a 2-core machine (benchmarks/README.md, sessions 2-6).

    * Derivatives always from the channels-last loop: its transpose (the
      gradient) was several times faster than the fused one's, and, with a
      checkpointed body, its temporaries do not grow with the number of
      corners (fused: 6.1x the arguments' bytes for bilinear, 24x for bicubic).
    * Stencils of more than 4 corners take the loop for the value too when
      the input is channels-last (fused, XLA stored every corner's `(P, C)`
      gather: 9x the arguments for bicubic) or channels-first with at least
      `RELAYOUT_MIN_CHANNELS` channels (gathering contiguous C-vectors then
      beats strided channels by more than the two transposes cost). Bilinear
      2-D never gained from the re-layout, up to C = 2048.
    * Otherwise fused; with C >= 2K channels its offsets and weights are
      stored first (computed once per point instead of once per channel:
      forward 1.3-2x faster at C >= 2K, and the `(K, P)` arrays are at most
      the output's bytes). Nearest is a single gather either way.
    """
    corners = num_corners(mode, ndim)
    if corners > 4 and (channels_last or channels >= RELAYOUT_MIN_CHANNELS):
        forward = "loop_channels_last"
    elif corners > 1 and channels >= 2 * corners:
        forward = "fused_stored"
    else:
        forward = "fused"
    return Plan(forward, "loop_channels_last")


def accelerator_plan(mode: str, ndim: int, channels: int, channels_last: bool) -> Plan:
    """GPUs and TPUs: not measured yet (benchmarks/device_check.py is ready for that).

    Until then they take the CPU plan, judged the safest: its derivatives
    keep temporaries bounded whatever the stencil, and its value is one
    fused pass (or one loop) per point, which any backend runs without
    surprises.
    """
    return cpu_plan(mode, ndim, channels, channels_last)


# ((platform, plan), ...) forced by `force`.
_FORCED: contextvars.ContextVar[tuple[tuple[str, Plan], ...]] = contextvars.ContextVar(
    "forced", default=()
)


@contextlib.contextmanager
def force(forward: str, derivatives: str, platforms: tuple[str, ...] = PLATFORMS) -> Iterator[None]:
    """Private switch for tests and benchmarks: ``platforms`` take this plan.

    `grid_sample` reads it when called (not when a cached trace runs), and
    the plans are part of its jit cache key.
    """
    if forward not in FORWARDS or derivatives not in DERIVATIVES:
        raise ValueError(f"unknown plan ({forward!r}, {derivatives!r})")
    plan = Plan(forward, derivatives)
    token = _FORCED.set(_FORCED.get() + tuple((p, plan) for p in platforms))
    try:
        yield
    finally:
        _FORCED.reset(token)


def plans(mode: str, ndim: int, channels: int, channels_last: bool) -> tuple[tuple[str, Plan], ...]:
    """``((platform, plan), ...)`` for every platform in `PLATFORMS`; hashable (a static arg)."""
    cpu = cpu_plan(mode, ndim, channels, channels_last)
    accelerator = accelerator_plan(mode, ndim, channels, channels_last)
    chosen = {p: cpu if p == "cpu" else accelerator for p in PLATFORMS} | dict(_FORCED.get())
    return tuple((p, chosen[p]) for p in PLATFORMS)


# `grid_sample_separable`'s formulations (`_separable`): every axis by a
# matmul with its dense `(N, O, S)` weight matrix, every axis by tap gathers,
# tap gathers except a matmul for the last axis of a channels-first input
# (there a gather reads single elements; channels-last, "taps_rows" = "taps"),
# or `grid_sample` on the expanded grid.
SEPARABLE = ("matmul", "taps", "taps_rows", "expanded")

# A matmul costs S multiply-adds per output element along an axis of S input
# pixels; a gather T reads (T taps). Up to this S the matmuls won on XLA CPU
# (the value's on the last axis; the derivatives', see `separable_plan`).
SEPARABLE_MATMUL_MAX_SIZE = 128

# The matmul derivatives win up to this many multiply-adds per output point
# (all channels together) and stencil corner (`separable_plan`); beyond,
# `grid_sample`'s own gradient on the expanded grid, whose per-point work
# the channels share.
SEPARABLE_MATMUL_MAX_MACS_PER_CORNER = 1280


def separable_plan(
    mode: str, spatial: tuple[int, ...], out_spatial: tuple[int, ...], channels: int
) -> Plan:
    """The separable formulation of the value and of the derivatives, by shape.

    Measured on XLA CPU, 2 cores, side by side in throwaway runs (medians
    of 7-15 calls, float32, fwd+bwd w.r.t. the input and the axes;
    benchmarks/README.md, sessions 8-10); GPUs and TPUs take the same plan,
    unmeasured (`benchmarks/device_check.py` times the formulations side by
    side there):

    * Value: ``"taps_rows"`` while the last input axis has at most
      `SEPARABLE_MATMUL_MAX_SIZE` pixels (mask pasting 1.2 ms against 4.1
      for all taps, 3.1 for all matmuls, 6.9 for grid_sample on the expanded
      grid; 2x upsampling 19 against 31, 51, 21), else ``"taps"`` (0.5x
      downsampling from 512: 2.0 against 4.8, 15, 2.6).
    * Derivatives: ``"matmul"``, with no scatter at all (deterministic
      gradients), on input axes of at most `SEPARABLE_MATMUL_MAX_SIZE`
      pixels while the products cost at most
      `SEPARABLE_MATMUL_MAX_MACS_PER_CORNER` multiply-adds per output point
      (`matmul_macs` times the channels) and stencil corner (4 bilinear, 16
      bicubic, 8 trilinear); else ``"expanded"``, `grid_sample`'s own.
      fwd+bwd in ms with the cotangent as an argument (as in training),
      matmul / expanded (that cost):

      - wins: mask pasting 4.6 / 101 (8); 16 masks of 16 channels 175 / 403
        (122); 2x upsampling 64 -> 128 px of 16 and 32 channels 14 / 27,
        43 / 45 (384, 768); 48 -> 96 px of 64 channels 41 / 48 (1152); 4x
        upsampling 56 -> 224 px of 64 channels 76 / 116 (1120); bicubic
        128 px zooms of 3 and 32 channels 5.1 / 27, 87 / 161 (48, 512);
        trilinear 2x upsampling of 24^3 px, 64 channels, 200 / 230 (336).
      - losses: 2x upsampling 64 -> 128 px of 64 channels (1536), 87 / 78
        in bench.py (a tie with the cotangent as an argument), of 128
        channels 91 / 85 (3072).
      - axes longer than 128 px were mixed: 3 channels 512 -> 256 px 31 /
        29 (1152), 1024 -> 256 px 76 / 46 (3840), 16 channels 256 px zooms
        41 / 35 (2048); but 3 channels 256 -> 512 px 21 / 48 (288).
    """
    forward = "taps_rows" if spatial[-1] <= SEPARABLE_MATMUL_MAX_SIZE else "taps"
    macs = matmul_macs(spatial, out_spatial) * channels / num_corners(mode, len(spatial))
    short = max(spatial) <= SEPARABLE_MATMUL_MAX_SIZE
    cheap = macs <= SEPARABLE_MATMUL_MAX_MACS_PER_CORNER
    return Plan(forward, "matmul" if short and cheap else "expanded")


def matmul_macs(spatial: tuple[int, ...], out_spatial: tuple[int, ...]) -> float:
    """Multiply-adds per output element of the per-axis matmuls, the first axis last."""
    order = contraction_order(spatial, out_spatial, spatial, last=0)
    return _cost(spatial, out_spatial, spatial, order) / math.prod(out_spatial)


_FORCED_SEPARABLE: contextvars.ContextVar[Plan | None] = contextvars.ContextVar(
    "forced_separable", default=None
)


@contextlib.contextmanager
def force_separable(forward: str, derivatives: str) -> Iterator[None]:
    """Private switch for tests and benchmarks: every platform takes this separable plan."""
    if forward not in SEPARABLE or derivatives not in SEPARABLE:
        raise ValueError(f"unknown separable plan ({forward!r}, {derivatives!r})")
    token = _FORCED_SEPARABLE.set(Plan(forward, derivatives))
    try:
        yield
    finally:
        _FORCED_SEPARABLE.reset(token)


def separable_plans(
    mode: str, spatial: tuple[int, ...], out_spatial: tuple[int, ...], channels: int
) -> tuple[tuple[str, Plan], ...]:
    """``((platform, plan), ...)`` for `grid_sample_separable`; hashable (a static arg)."""
    plan = _FORCED_SEPARABLE.get() or separable_plan(mode, spatial, out_spatial, channels)
    return tuple((p, plan) for p in PLATFORMS)


def contraction_order(
    spatial: tuple[int, ...],
    out_spatial: tuple[int, ...],
    per_axis: tuple[int, ...],
    last: int | None = None,
) -> tuple[int, ...]:
    """The order of per-axis passes that reads the fewest elements in all.

    Resampling axis ``i`` of an array with spatial shape ``shape`` costs
    ``prod(shape) / shape[i] * out_spatial[i] * per_axis[i]``: multiply-adds
    for a matmul (``per_axis`` = the input sizes), reads for tap gathers
    (``per_axis`` = taps per axis). Ties keep the lower axis first. Given
    ``last``, only the orders that resample that axis last are considered.
    """
    orders = itertools.permutations(range(len(spatial)))
    candidates = (o for o in orders if last is None or o[-1] == last)
    return min(candidates, key=lambda o: _cost(spatial, out_spatial, per_axis, o))


def _cost(
    spatial: tuple[int, ...],
    out_spatial: tuple[int, ...],
    per_axis: tuple[int, ...],
    order: tuple[int, ...],
) -> int:
    shape, total = list(spatial), 0
    for i in order:
        total += math.prod(shape) // shape[i] * out_spatial[i] * per_axis[i]
        shape[i] = out_spatial[i]
    return total
