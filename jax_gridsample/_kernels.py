"""`grid_sample`'s kernel: the stencil corners of every point, gathered and summed.

The taps of all axes (`_taps`) are combined by an outer product into the
``K`` corners of the interpolation stencil, read one corner at a time.
"""

from __future__ import annotations

import functools
import math
import operator
from collections.abc import Callable

import jax
import jax.numpy as jnp
from jax import lax

from jax_gridsample._channels import spread
from jax_gridsample._coordinates import unnormalize
from jax_gridsample._taps import TAP_FNS, AxisTerm, axis_term, num_corners, strides


def _corner(
    term: Callable[[int, int | jax.Array], AxisTerm],
    spatial: tuple[int, ...],
    num_taps: int,
    corner: int | jax.Array,
) -> tuple[jax.Array, jax.Array | None]:
    """Flat offset and weight of stencil corner number ``corner`` for every point.

    Args:
      term: ``term(axis, k)`` is tap ``k`` of spatial axis ``axis`` (`AxisTerm`).
      spatial: the input's spatial shape.
      num_taps: ``T``, the taps per axis.
      corner: int, or int32 scalar, in ``[0, T ** d)``; its base-``T`` digits
        pick the tap of each axis (last axis fastest).

    Returns:
      `(P,)` int32 offsets into the input flattened over ``spatial``;
      invalid corners get ``prod(spatial)``, one past the end (a zero
      pixel or a fill-mode read, see `_accumulate_corners`); and `(P,)`
      weights, or None for nearest.
    """
    terms = []
    for axis in reversed(range(len(spatial))):
        terms.append(term(axis, corner % num_taps))
        corner = corner // num_taps
    offset = functools.reduce(operator.add, (t.offset for t in terms))
    valid = functools.reduce(operator.and_, (t.valid for t in terms))
    weight = None
    for t in terms:
        if t.weight is not None:
            weight = t.weight if weight is None else t.weight * weight
    return jnp.where(valid, offset, math.prod(spatial)), weight


def _take(
    flat: jax.Array,
    idx: jax.Array,
    channels_last: bool,
    mode: str,
    fill_value: float | None = None,
) -> jax.Array:
    """Gathers rows `(P, C)` of ``flat`` if ``channels_last``, else columns `(C, P)`.

    ``flat[idx]`` / ``flat[:, idx]`` as one `lax.gather` in ``mode`` (a
    `lax.GatherScatterMode` name): ``idx`` is never negative, so it is not
    wrapped numpy-style, and tracing skips NumPy indexing's analysis.
    """
    axis = 0 if channels_last else 1
    dims = lax.GatherDimensionNumbers(
        offset_dims=(1 - axis,), collapsed_slice_dims=(axis,), start_index_map=(axis,)
    )
    sizes = (1, flat.shape[1]) if channels_last else (flat.shape[0], 1)
    starts = lax.expand_dims(idx, (1,))
    return lax.gather(flat, starts, dims, sizes, mode=mode, fill_value=fill_value)


def sample_one(
    inp: jax.Array,
    grid: jax.Array,
    *,
    mode: str,
    padding_mode: str,
    align_corners: bool,
    channels_last: bool = False,
    formulation: str = "loop",
) -> jax.Array:
    """Samples one example: the kernel that `grid_sample` vmaps over the batch.

    Args:
      inp: `(C, *spatial)` input, with `len(spatial) == d` (2 or 3), or
        `(*spatial, C)` if ``channels_last``.
      grid: `(*out, d)` normalised coordinates; ``grid[..., 0]`` indexes the
        last spatial axis (x, width), ``grid[..., 1]`` the one before it.
      mode: key of `TAP_FNS`.
      padding_mode: key of `PADDING_FNS`.
      align_corners: see `unnormalize`.
      channels_last: layout of ``inp`` and of the result.
      formulation: how the stencil corners are summed: ``"loop"``,
        ``"fused"`` or ``"fused_stored"`` (see `_accumulate_corners`, and
        `_stored_nearest_offsets` for nearest's one gather; which one
        `grid_sample` uses is `_policy`'s choice). Same terms in the same
        order.

    Returns:
      `(C, *out)` samples, or `(*out, C)` if ``channels_last``; dtype of ``inp``.
    """
    spatial = inp.shape[:-1] if channels_last else inp.shape[1:]
    ndim = len(spatial)
    out_shape = grid.shape[:-1]
    points = grid.reshape(-1, ndim)

    coords = _coordinates(points, spatial, align_corners)
    num_taps, tap_fn = TAP_FNS[mode]
    stride = strides(spatial)
    static: dict[tuple[int, int], AxisTerm] = {}

    def term(axis: int, k: int | jax.Array) -> AxisTerm:
        def traced() -> AxisTerm:
            t = tap_fn(coords[axis], spatial[axis], padding_mode, align_corners, k)
            return axis_term(t, stride[axis])

        if not isinstance(k, int):
            return traced()
        # The fused corners share their axes' static taps: each traced once.
        if (axis, k) not in static:
            static[axis, k] = traced()
        return static[axis, k]

    corner = functools.partial(_corner, term, spatial, num_taps)

    channels = inp.shape[-1] if channels_last else inp.shape[0]
    flat = inp.reshape(-1, channels) if channels_last else inp.reshape(channels, -1)
    k = num_corners(mode, ndim)
    if k == 1:  # nearest: one gather, invalid points read 0
        if formulation == "fused_stored":
            index = _stored_nearest_offsets(points, spatial, padding_mode, align_corners)
        else:
            index, _ = corner(0)
        out = _take(flat, index, channels_last, mode="fill", fill_value=0)
    else:

        def weighted_corner(number: int | jax.Array) -> tuple[jax.Array, jax.Array]:
            offset, weight = corner(number)
            assert weight is not None  # only nearest has no weights
            return offset, weight

        out = _accumulate_corners(flat, weighted_corner, k, channels_last, formulation)
    if channels_last:
        return out.reshape(*out_shape, channels)
    return out.reshape(channels, *out_shape)


def _coordinates(
    points: jax.Array, spatial: tuple[int, ...], align_corners: bool
) -> list[jax.Array]:
    """Per spatial axis, the `(P,)` pixel coordinates of ``points`` `(P, d)` (x: the last axis)."""
    ndim = len(spatial)
    return [
        unnormalize(points[:, ndim - 1 - axis], size, align_corners, ndim)
        for axis, size in enumerate(spatial)
    ]


def _stored_nearest_offsets(
    points: jax.Array, spatial: tuple[int, ...], padding_mode: str, align_corners: bool
) -> jax.Array:
    """Nearest's `(P,)` offsets (`_corner`) of ``points`` `(P, d)`, computed in a loop.

    XLA does not fuse across a loop, so each point's offset is computed once
    and stored; fused into the gather it is computed again for every channel.
    The loop runs over two halves of the points: XLA inlines a one-trip loop.
    """
    count, ndim = points.shape
    stride = strides(spatial)
    _, nearest_tap = TAP_FNS["nearest"]
    halves = jnp.pad(points, ((0, count % 2), (0, 0))).reshape(2, -1, ndim)

    def offsets(half: jax.Array) -> jax.Array:
        coords = _coordinates(half, spatial, align_corners)

        def term(axis: int, k: int | jax.Array) -> AxisTerm:
            t = nearest_tap(coords[axis], spatial[axis], padding_mode, align_corners, k)
            return axis_term(t, stride[axis])

        return _corner(term, spatial, 1, 0)[0]

    return lax.map(offsets, halves).reshape(-1)[:count]


def _accumulate_corners(
    flat: jax.Array,
    corner: Callable[[int | jax.Array], tuple[jax.Array, jax.Array]],
    count: int,
    channels_last: bool,
    formulation: str,
) -> jax.Array:
    """Sums ``weight * flat[index]`` over the stencil corners.

    Args:
      flat: `(L, C)` input rows if ``channels_last``, else `(C, L)` columns.
      corner: maps a corner number to its `(P,)` int32 offsets in ``[0, L]``
        (``L`` marks invalid corners) and `(P,)` weights.
      count: ``K``, the number of corners.
      channels_last: layout of ``flat`` and of the `(P, C)` / `(C, P)` result.
      formulation: ``"loop"``, a `lax.scan` over the corners; ``"fused"``,
        one expression that XLA fuses into a single pass over the points;
        ``"fused_stored"``, the same after a `lax.map` that stores the
        corners' offsets and weights.
    """

    def weighted(flat, idx, w, **gather_mode):
        v = _take(flat, idx, channels_last, **gather_mode)
        return v * spread(w, v.shape, 1 if channels_last else 0)

    if formulation != "loop":
        if formulation == "fused_stored":
            # Inside the fused gathers, each point's offsets and weights would
            # be computed again for every channel. Computed in a loop (XLA
            # does not fuse across its boundary), they are computed once and
            # stored.
            offsets, weights = lax.map(corner, jnp.arange(count, dtype=jnp.int32))
        else:
            offsets, weights = zip(*(corner(k) for k in range(count)), strict=True)
        # Invalid corners (offset L) read 0 from a fill-mode gather: no copy
        # of the input.
        terms = (
            weighted(flat, offsets[k], weights[k], mode="fill", fill_value=0) for k in range(count)
        )
        return functools.reduce(operator.add, terms)

    # In the loop, invalid corners read one extra, all-zero pixel instead, and
    # their gradient lands there and is dropped (the transpose of a fill-mode
    # gather is slower on XLA CPU).
    padded = jnp.pad(flat, ((0, 1), (0, 0)) if channels_last else ((0, 0), (0, 1)))

    def add_corner(out, k):
        idx, w = corner(k)
        return out + weighted(padded, idx, w, mode="promise_in_bounds"), None

    # Each corner's offsets and weights are recomputed from the coordinates
    # inside the loop body, and the body re-gathers in the backward pass: no
    # (K, P) or (K, P, C) array is stored, whatever K (up to 16), and each
    # iteration is one small fused gather. The first corner starts the sum,
    # so the carry takes the inputs' sharding.
    first, _ = add_corner(0.0, 0)
    rest = jnp.arange(1, count, dtype=jnp.int32)
    out, _ = lax.scan(jax.checkpoint(add_corner), first, rest)
    return out
