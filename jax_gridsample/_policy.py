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
