"""`grid_sample`: torch.nn.functional.grid_sample in JAX."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from jax_gridsample import _checks, _policy
from jax_gridsample._core import Config, check_options, in_compute_dtype, value_and_derivatives
from jax_gridsample._kernels import sample_one


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
    input = _checks.as_array("input", input)  # noqa: A001
    grid = _checks.as_array("grid", grid)
    config = check_options(mode, padding_mode, align_corners, channel_axis, input)
    _check_grid(input, grid)
    if grid.dtype != input.dtype:
        raise TypeError(f"grid must have the dtype of input ({input.dtype}), got {grid.dtype}")

    if config.channels_last:
        out_shape = grid.shape[:-1] + input.shape[-1:]
    else:
        out_shape = input.shape[:2] + grid.shape[1:-1]
    if 0 in out_shape:
        return jnp.zeros(out_shape, input.dtype)
    channels = input.shape[-1 if config.channels_last else 1]
    plan = _policy.grid_sample_plan(config.mode, input.ndim - 2, channels, config.channels_last)
    return _grid_sample(input, grid, config, plan)


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


@functools.partial(jax.jit, static_argnames=("config", "plan"))
def _grid_sample(
    input: jax.Array,  # noqa: A002
    grid: jax.Array,
    config: Config,
    plan: _policy.Plan,
) -> jax.Array:
    return in_compute_dtype(functools.partial(sample_batch, config=config, plan=plan), input, grid)


def sample_batch(x: jax.Array, grid: jax.Array, config: Config, plan: _policy.Plan) -> jax.Array:
    """`grid_sample` of a batch in the compute dtype: ``plan``'s value and derivatives."""
    value = functools.partial(_formulation, config=config, formulation=plan.value)
    derivatives = functools.partial(_formulation, config=config, formulation=plan.derivatives)
    if plan.value == plan.derivatives:
        derivatives = value
    return value_and_derivatives(value, derivatives)(x, grid)


def _formulation(x: jax.Array, grid: jax.Array, config: Config, formulation: str) -> jax.Array:
    """One formulation of the corner sums (`_policy.FORWARDS`), vmapped over the batch."""
    if formulation == "loop":
        # Gathering contiguous C-vectors: a channels-first input is moved.
        x = x if config.channels_last else jnp.moveaxis(x, 1, -1)
        out = _vmapped(config, "loop", channels_last=True)(x, grid)
        return out if config.channels_last else jnp.moveaxis(out, -1, 1)
    out = _vmapped(config, formulation, config.channels_last)(x, grid)
    # The barrier keeps a consumer (say, a reduction that XLA CPU hands to
    # YNNPACK) out of the fusion, which then stored every corner's gather.
    return jax.lax.optimization_barrier(out)


def _vmapped(config: Config, formulation: str, channels_last: bool):
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
