"""`grid_sample`: torch.nn.functional.grid_sample in JAX."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from jax_gridsample import _checks, _policy
from jax_gridsample._coordinates import PADDING_FNS
from jax_gridsample._kernels import TAP_FNS, sample_one

MODES = tuple(TAP_FNS)
# Gather offsets are int32 and index one channel's spatial elements; N and C
# are separate gather dimensions, so only prod(spatial) is limited.
_MAX_SPATIAL = 2**31 - 1
PADDING_MODES = tuple(PADDING_FNS)


def grid_sample(
    input: ArrayLike,  # noqa: A002 -- torch's argument name
    grid: ArrayLike,
    mode: str = "bilinear",
    padding_mode: str = "zeros",
    align_corners: bool | None = None,
    *,
    channel_axis: int = 1,
) -> jax.Array:
    """Samples ``input`` at the points of ``grid``, like `torch.nn.functional.grid_sample`.

    Same arguments, same defaults and the same numbers as torch (CPU, float32
    and float64) for every mode, padding mode and ``align_corners``, values
    and gradients alike. Gradients come from JAX autodiff, so `jax.grad`,
    `jax.jvp`, `jax.vjp` and `jax.hessian` work w.r.t. both ``input`` and
    ``grid``.

    Conventions:
      ``grid`` holds normalised coordinates: ``grid[..., 0]`` is x and indexes
      the *last* input axis (width), ``grid[..., 1]`` is y (height) and, for
      5-D input, ``grid[..., 2]`` is z (depth). -1 and 1 are the left and right
      ends of the input. With ``align_corners=True`` they are the centres of
      the corner pixels (``x = (g + 1) / 2 * (W - 1)``); with ``False`` they
      are the outer edges of the corner pixels (``x = ((g + 1) * W - 1) / 2``).
      Points outside are padded by ``padding_mode``: ``"zeros"`` reads 0,
      ``"border"`` clamps to the edge pixel, ``"reflection"`` mirrors about the
      border (pixel centres or edges, as ``align_corners`` says).

    Args:
      input: `(N, C, H, W)` or `(N, C, D, H, W)` array of float16, bfloat16,
        float32 or float64.
      grid: `(N, H_out, W_out, 2)` or `(N, D_out, H_out, W_out, 3)` array of
        the same dtype as ``input``.
      mode: ``"bilinear"`` (trilinear for 5-D input), ``"nearest"`` (ties
        round half to even) or ``"bicubic"`` (4-D input only; cubic
        convolution with a = -0.75, padding applied to each tap).
      padding_mode: ``"zeros"``, ``"border"`` or ``"reflection"``.
      align_corners: see Conventions. None means False, torch's default
        (without torch's warning).
      channel_axis: keyword-only, not in torch. 1 (torch's layout) or -1 for
        channels-last input `(N, H, W, C)` / `(N, D, H, W, C)`, as Flax
        convolutions produce; the output then is `(N, H_out, W_out, C)` /
        `(N, D_out, H_out, W_out, C)`. Same numbers either way.

    Returns:
      `(N, C, H_out, W_out)` or `(N, C, D_out, H_out, W_out)` array (channels
      last if ``channel_axis=-1``) with the dtype of ``input``.

    Raises:
      TypeError: non-array arguments, non-float or mismatched dtypes, or a
        non-bool ``align_corners``.
      ValueError: unknown ``mode`` or ``padding_mode``, wrong ranks, batch
        sizes or last grid dimension, or an empty input spatial dimension.
      NotImplementedError: ``mode="bicubic"`` with 5-D input (as torch).

    Example:
      >>> import jax.numpy as jnp
      >>> from jax_gridsample import grid_sample
      >>> image = jnp.arange(16.0).reshape(1, 1, 4, 4)
      >>> grid = jnp.array([[[[-0.5, -0.5], [0.5, -0.5]],
      ...                    [[-0.5, 0.5], [0.5, 0.5]]]])
      >>> grid_sample(image, grid, align_corners=False)[0, 0]
      Array([[ 3.5,  5.5],
             [11.5, 13.5]], dtype=float32)

    Note:
      Where torch has no single answer, this function picks one and uses it
      for 4-D and 5-D input alike: non-finite grid values follow torch's CPU
      4-D forward (NaN or ±inf gives NaN with zeros padding for bilinear and
      bicubic and 0 for nearest; border sends NaN and -inf to the first
      pixel and +inf to the last; reflection sends all three to the first
      pixel), and their gradients are finite w.r.t. ``input`` (torch crashes
      or returns garbage there). Huge finite grid values never give NaN
      (torch #51911). float16 and bfloat16 are computed in float32 and
      rounded once, as torch does on CUDA.
    """
    mode = _checks.check_choice("mode", mode, MODES)
    padding_mode = _checks.check_choice("padding_mode", padding_mode, PADDING_MODES)
    align_corners = _checks.check_align_corners(align_corners)
    input = _checks.as_array("input", input)  # noqa: A001
    grid = _checks.as_array("grid", grid)
    channels_last = check_channel_axis(channel_axis, input.ndim)
    check_input(input, mode, channels_last)
    _check_grid(input, grid)
    _checks.check_float_dtype("input", input)
    if grid.dtype != input.dtype:
        raise TypeError(f"grid must have the dtype of input ({input.dtype}), got {grid.dtype}")

    if channels_last:
        out_shape = grid.shape[:-1] + input.shape[-1:]
    else:
        out_shape = input.shape[:2] + grid.shape[1:-1]
    if 0 in out_shape:
        return jnp.zeros(out_shape, input.dtype)
    channels = input.shape[-1 if channels_last else 1]
    plans = _policy.plans(mode, input.ndim - 2, channels, channels_last)
    return _grid_sample(input, grid, mode, padding_mode, align_corners, channels_last, plans)


def check_channel_axis(channel_axis: int, ndim: int) -> bool:
    """Returns whether the layout is channels-last; only 1 and -1 are accepted."""
    channel_axis = _checks.check_int("channel_axis", channel_axis)
    if channel_axis not in (1, -1, ndim - 1):
        raise ValueError(f"channel_axis must be 1 or -1, got {channel_axis}")
    return channel_axis != 1


def check_input(input: jax.Array, mode: str, channels_last: bool) -> None:  # noqa: A002
    """Checks the input's rank and spatial size, and that ``mode`` supports it."""
    if input.ndim not in (4, 5):
        layouts = (
            "(N, H, W, C) or (N, D, H, W, C)"
            if channels_last
            else ("(N, C, H, W) or (N, C, D, H, W)")
        )
        raise ValueError(
            f"input must be 4-D or 5-D, {layouts}, got {input.ndim}-D with shape {input.shape}"
        )
    spatial = input.shape[1:-1] if channels_last else input.shape[2:]
    if math.prod(spatial) > _MAX_SPATIAL:
        raise ValueError(
            f"input's spatial size must be at most 2**31 - 1 elements per channel "
            f"(int32 gather offsets), got {' x '.join(map(str, spatial))} = "
            f"{math.prod(spatial)} (input shape {input.shape})"
        )
    if 0 in spatial:
        raise ValueError(f"input must have non-empty spatial dimensions, got shape {input.shape}")
    if mode == "bicubic" and input.ndim == 5:
        raise NotImplementedError(
            "mode='bicubic' supports 4-D input only (as torch), got a 5-D input "
            f"with shape {input.shape}"
        )


def _check_grid(input: jax.Array, grid: jax.Array) -> None:  # noqa: A002
    ndim = input.ndim - 2
    expected = "(N, H_out, W_out, 2)" if ndim == 2 else "(N, D_out, H_out, W_out, 3)"
    if grid.ndim != input.ndim or grid.shape[-1] != ndim:
        raise ValueError(
            f"grid must have shape {expected} for a {input.ndim}-D input, got {grid.shape}"
        )
    if grid.shape[0] != input.shape[0]:
        raise ValueError(
            "grid must have the batch size of input "
            f"({input.shape[0]}), got {grid.shape[0]} (grid shape {grid.shape})"
        )


@functools.partial(
    jax.jit, static_argnames=("mode", "padding_mode", "align_corners", "channels_last", "plans")
)
def _grid_sample(
    input: jax.Array,  # noqa: A002
    grid: jax.Array,
    mode: str,
    padding_mode: str,
    align_corners: bool,
    channels_last: bool,
    plans: tuple[tuple[str, _policy.Plan], ...],
) -> jax.Array:
    # Half types are computed in float32 and rounded once (SPEC decision 6).
    compute = jnp.promote_types(input.dtype, jnp.float32)
    config = Config(mode, padding_mode, align_corners, channels_last, plans)
    out = sample_batch(input.astype(compute), grid.astype(compute), config)
    return out.astype(input.dtype)


class Config(NamedTuple):
    """The static arguments of `sample_batch` (and of `grid_sample_separable`'s passes)."""

    mode: str
    padding_mode: str
    align_corners: bool
    channels_last: bool
    # Per platform: from _policy.plans (grid_sample), _policy.separable_plans (separable).
    plans: tuple[tuple[str, _policy.Plan], ...]


def _vmapped_kernel(config: Config, formulation: str, channels_last: bool):
    """`sample_one` for ``config`` in one formulation and layout, vmapped over the batch."""
    kernel = functools.partial(
        sample_one,
        mode=config.mode,
        padding_mode=config.padding_mode,
        align_corners=config.align_corners,
        channels_last=channels_last,
        formulation=formulation,
    )
    return jax.vmap(kernel)


def _channels_last_loop(x: jax.Array, grid: jax.Array, config: Config) -> jax.Array:
    """The channels-last corner loop, moving a channels-first ``x`` and its result."""
    if not config.channels_last:
        x = jnp.moveaxis(x, 1, -1)
    out = _vmapped_kernel(config, "loop", channels_last=True)(x, grid)
    return out if config.channels_last else jnp.moveaxis(out, -1, 1)


def _forward(x: jax.Array, grid: jax.Array, config: Config, plan: _policy.Plan) -> jax.Array:
    if plan.forward == "loop_channels_last":
        return _channels_last_loop(x, grid, config)
    # The barrier keeps a consumer (say, a reduction that XLA CPU hands to
    # YNNPACK) out of the fusion; fused with one, XLA stored every corner's
    # gather (2.5x the arguments' bytes for bilinear, 9x for bicubic).
    out = _vmapped_kernel(config, plan.forward, config.channels_last)(x, grid)
    return jax.lax.optimization_barrier(out)


def per_platform(make: Callable[[_policy.Plan], Callable], plans, *args):
    """Applies ``make(plan)`` to ``args``, the plan chosen for the platform it is lowered for."""
    plans = dict(plans)
    if len(set(plans.values())) == 1:  # no choice to defer to lowering
        return make(plans["cpu"])(*args)
    branches = {platform: make(plan) for platform, plan in plans.items()}
    return jax.lax.platform_dependent(*args, **branches, default=branches["cpu"])


# The value and the derivatives may come from two formulations of the same sum
# over stencil corners (same terms in the same order; they agree to rounding,
# as XLA may contract multiply-adds differently): `_policy` says which. The
# derivatives are still JAX's own autodiff of a formulation, so jvp, vjp, grad
# and hessian all work.
@functools.partial(jax.custom_jvp, nondiff_argnums=(2,))
def sample_batch(x: jax.Array, grid: jax.Array, config: Config) -> jax.Array:
    return per_platform(
        lambda plan: functools.partial(_forward, config=config, plan=plan), config.plans, x, grid
    )


@sample_batch.defjvp
def _sample_batch_jvp(config, primals, tangents):
    # This traces the value a second time (a bicubic gradient traces 34 corners,
    # 16 of them here). Wrapped in jax.jit, the value missed jit's trace cache:
    # jax 0.10.2 keys it on the abstract mesh, None at the first trace and an
    # empty AbstractMesh in this rule; the trace took 1.8 s instead of 1.3.
    out = sample_batch(*primals, config)

    def derivative(plan):
        if plan.derivatives == "forward":
            formulation = functools.partial(_forward, config=config, plan=plan)
        else:
            formulation = functools.partial(_channels_last_loop, config=config)

        def tangent(x, grid, dx, dgrid):
            return jax.jvp(formulation, (x, grid), (dx, dgrid))[1]

        return tangent

    return out, per_platform(derivative, config.plans, *primals, *tangents)
