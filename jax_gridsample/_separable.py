"""`grid_sample_separable`: `grid_sample` on a grid given by one vector per axis.

When ``grid[n, h, w] = (x[n, w], y[n, h])`` the sampling operator factors into
one interpolation per axis (`_passes`), applied one axis at a time. The value
and the derivatives each take a formulation of `_policy.separable_plan`: tap
gathers (value), products with dense weight matrices (derivatives, no
scatter), or `grid_sample` itself on the expanded grid.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from jax_gridsample import _checks, _policy
from jax_gridsample._core import Config, check_options, in_compute_dtype, value_and_derivatives
from jax_gridsample._grid_sample import sample_batch
from jax_gridsample._passes import along, matmul_pass, matmul_value_pass, taps_pass
from jax_gridsample._taps import TAP_FNS

_AXIS_NAMES = ("x", "y", "z")


def grid_sample_separable(
    input: ArrayLike,  # noqa: A002 -- torch's argument name
    axes: tuple[ArrayLike, ...],
    mode: str = "bilinear",
    padding_mode: str = "zeros",
    align_corners: bool | None = None,
    *,
    channel_axis: int = 1,
) -> jax.Array:
    """`grid_sample` on a separable grid, given as one coordinate vector per axis.

    ``grid_sample_separable(input, (x, y), ...)`` equals
    ``grid_sample(input, grid, ...)`` with ``grid[n, h, w] = (x[n, w], y[n, h])``
    (5-D: ``grid[n, d, h, w] = (x[n, w], y[n, h], z[n, d])``), values and
    gradients, without building that grid: mask pasting (Mask R-CNN), resizes,
    zooms and crops of axis-aligned boxes. The gradient w.r.t. each axis
    vector is the grid's gradient summed over the other output axes. On
    inputs of at most 128 pixels per axis (and few channels) the gradients
    are matrix products and gathers, with no scatter-add: deterministic, and
    fast when many output points share few input pixels. Elsewhere
    `grid_sample` on the expanded grid computes them, and the value too
    where it reads at least 4x fewer elements (downsampling by 4 or more).

    Args:
      input: `(N, C, H, W)` or `(N, C, D, H, W)` array of float16, bfloat16,
        float32 or float64 (channels last if ``channel_axis=-1``).
      axes: ``(x, y)`` for 4-D input, ``(x, y, z)`` for 5-D input, in
        ``grid``'s order: ``x`` `(N, W_out)` normalised coordinates along the
        input's width, ``y`` `(N, H_out)` along its height, ``z`` `(N, D_out)`
        along its depth; the dtype of ``input``.
      mode: ``"bilinear"``, ``"nearest"`` or ``"bicubic"`` (4-D only), as in
        `grid_sample`.
      padding_mode: ``"zeros"``, ``"border"`` or ``"reflection"``.
      align_corners: as in `grid_sample`; None means False.
      channel_axis: 1 or -1, as in `grid_sample`.

    Returns:
      `(N, C, H_out, W_out)` or `(N, C, D_out, H_out, W_out)` (channels last
      if ``channel_axis=-1``), the dtype of ``input``.

    Raises:
      TypeError: non-array input or axis vectors, non-float or mismatched
        dtypes, ``axes`` not a tuple or list, a non-bool ``align_corners``.
      ValueError: unknown ``mode`` or ``padding_mode``; wrong ranks, number of
        axis vectors or batch sizes; an empty input spatial dimension.
      NotImplementedError: ``mode="bicubic"`` with 5-D input.

    Example:
      Paste a mask into the box x in [100, 200), y in [100, 300) of a
      500x300 image, reading it at the image's pixel centres:

      >>> import jax.numpy as jnp
      >>> from jax_gridsample import grid_sample_separable
      >>> mask = jnp.ones((1, 1, 100, 100))
      >>> x = (jnp.arange(500.0) + 0.5 - 100) / 100 * 2 - 1
      >>> y = (jnp.arange(300.0) + 0.5 - 100) / 200 * 2 - 1
      >>> grid_sample_separable(mask, (x[None], y[None])).shape
      (1, 1, 300, 500)

    Note:
      Non-finite values, one rule for every shape and platform: where the
      input, the coordinates and the cotangent are finite, values and
      gradients equal `grid_sample`'s on the expanded grid. Otherwise every
      value or gradient that is non-finite for `grid_sample` on the expanded
      grid is non-finite here too, and so may be any other of the same
      example (and channel, for values and input gradients); every finite
      one equals `grid_sample`'s. Forward-mode tangents follow the same
      rule, except at points whose coordinates are non-finite (their values
      are NaN), which may have a finite tangent. See docs/semantics.md.
    """
    input = _checks.as_array("input", input)  # noqa: A001
    config = check_options(mode, padding_mode, align_corners, channel_axis, input)
    vectors = _check_axes(axes, input)

    # Internal order: one vector per spatial axis of the input (..., H, W).
    vectors = vectors[::-1]
    out_spatial = tuple(v.shape[1] for v in vectors)
    spatial = input.shape[1:-1] if config.channels_last else input.shape[2:]
    channels = input.shape[-1 if config.channels_last else 1]
    if config.channels_last:
        out_shape = input.shape[:1] + out_spatial + input.shape[-1:]
    else:
        out_shape = input.shape[:2] + out_spatial
    if 0 in out_shape:
        return jnp.zeros(out_shape, input.dtype)
    plan = _policy.separable_plan(config.mode, spatial, out_spatial, channels, config.channels_last)
    return separable(input, vectors, config, plan)


def _check_axes(axes, input: jax.Array) -> tuple[jax.Array, ...]:  # noqa: A002
    ndim = input.ndim - 2
    names = ", ".join(_AXIS_NAMES[:ndim])
    if not isinstance(axes, (tuple, list)):
        raise TypeError(
            f"axes must be a tuple ({names}) of arrays for a {input.ndim}-D input, "
            f"got {type(axes).__name__}"
        )
    if len(axes) != ndim:
        raise ValueError(
            f"axes must hold {ndim} vectors ({names}) for a {input.ndim}-D input, got {len(axes)}"
        )
    vectors = []
    for i, (name, v) in enumerate(zip(_AXIS_NAMES, axes, strict=False)):
        label = f"axes[{i}] ({name})"
        v = _checks.as_array(label, v)
        if v.ndim != 2:
            raise ValueError(f"{label} must have shape (N, {name.upper()}_out), got {v.shape}")
        if v.shape[0] != input.shape[0]:
            raise ValueError(
                f"{label} must have the batch size of input ({input.shape[0]}), "
                f"got {v.shape[0]} ({name} shape {v.shape})"
            )
        if v.dtype != input.dtype:
            raise TypeError(f"{label} must have the dtype of input ({input.dtype}), got {v.dtype}")
        vectors.append(v)
    return tuple(vectors)


@functools.partial(jax.jit, static_argnames=("config", "plan"))
def separable(
    x: jax.Array, vectors: tuple[jax.Array, ...], config: Config, plan: _policy.Plan
) -> jax.Array:
    """The jitted sampler; ``vectors`` in input axis order (..., H, W), ``plan`` explicit."""
    value = functools.partial(_FORMULATIONS[plan.value], config=config)
    derivatives = functools.partial(_FORMULATIONS[plan.derivatives], config=config)
    if plan.value == plan.derivatives:
        derivatives = value
    return in_compute_dtype(value_and_derivatives(value, derivatives), x, vectors)


def _passes(x: jax.Array, vectors, config: Config, kinds: tuple[str, ...]) -> jax.Array:
    """Tap-gather passes (a matmul along the axes of kind ``"matmul"``), cheapest order first."""
    spatial = x.shape[1:-1] if config.channels_last else x.shape[2:]
    out_spatial = tuple(v.shape[1] for v in vectors)
    taps = TAP_FNS[config.mode][0]
    cost = tuple(s if k == "matmul" else taps for s, k in zip(spatial, kinds, strict=True))
    for i in _policy.contraction_order(spatial, out_spatial, cost):
        resample = matmul_value_pass if kinds[i] == "matmul" else taps_pass
        x = resample(x, vectors[i], config.spatial_dim(i), config)
    return x


def _finite(vectors, ndim: int, config: Config) -> jax.Array:
    """Whether each output point's coordinates are all finite, broadcast along its axes."""
    flags = [along(jnp.isfinite(v), ndim, config.spatial_dim(i)) for i, v in enumerate(vectors)]
    return functools.reduce(jnp.logical_and, flags)


def _taps(x: jax.Array, vectors, config: Config, rows: bool = False) -> jax.Array:
    """Value by tap gathers (``rows``: a matmul along the last axis of channels-first input)."""
    kinds = ["taps"] * len(vectors)
    if rows:
        kinds[-1] = "matmul"
    out = _passes(x, vectors, config, tuple(kinds))
    if not config.weights_can_be_nan():
        return out
    return jnp.where(_finite(vectors, out.ndim, config), out, jnp.nan)


def _matmuls(x: jax.Array, vectors, config: Config) -> jax.Array:
    """Every axis by a `matmul_pass`, the outermost last (its slices are whole rows).

    Its value differs from `grid_sample`'s at non-finite coordinates (0, not
    NaN), so it serves as the derivatives only (no plan takes it for the value).
    """
    spatial = x.shape[1:-1] if config.channels_last else x.shape[2:]
    out_spatial = tuple(v.shape[1] for v in vectors)
    nan_terms = [jnp.zeros_like(v) for v in vectors]
    if config.weights_can_be_nan():
        # grid_sample's coordinate gradients at a non-finite point are NaN,
        # and each axis gradient sums the points of the other axes: NaN at
        # an index whose coordinate is non-finite, or wherever another
        # axis of the example has one.
        own = [jnp.isfinite(v) for v in vectors]
        every = [jnp.all(f, axis=1, keepdims=True) for f in own]
        for i, v in enumerate(vectors):
            others = functools.reduce(jnp.logical_and, every[:i] + every[i + 1 :], own[i])
            nan_terms[i] = jnp.where(others, 0.0, jnp.nan).astype(v.dtype)
    # Only the derivatives are taken from here: the value's NaNs are `_taps`'s.
    for i in _policy.contraction_order(spatial, out_spatial, spatial, last=0):
        x = matmul_pass(x, vectors[i], nan_terms[i], config.spatial_dim(i), config)
    return x


def _expanded(x: jax.Array, vectors, config: Config) -> jax.Array:
    """`grid_sample` (its own plan and derivatives) on the grid that ``vectors`` span."""
    ndim = len(vectors)
    shape = (x.shape[0], *(v.shape[1] for v in vectors))
    coords = [jnp.broadcast_to(along(v, ndim + 1, 1 + i), shape) for i, v in enumerate(vectors)]
    grid = jnp.stack(coords[::-1], axis=-1)  # grid order: x (the last axis) first
    channels = x.shape[-1 if config.channels_last else 1]
    plan = _policy.grid_sample_plan(config.mode, ndim, channels, config.channels_last)
    return sample_batch(x, grid, config, plan)


_FORMULATIONS = {
    "taps": _taps,
    "taps_rows": functools.partial(_taps, rows=True),
    "matmul": _matmuls,
    "expanded": _expanded,
}
