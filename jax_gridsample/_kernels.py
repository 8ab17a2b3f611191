"""Interpolation kernels as per-axis taps, and the gather that combines them.

A *tap* is one input position read along one axis, with its weight and a
validity mask. Linear interpolation has two taps per axis, cubic four and
nearest one. The taps of all axes are combined by an outer product into the
``K`` corners of the interpolation stencil, read one corner at a time.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

from jax_gridsample._coordinates import PADDING_FNS, unnormalize

# Cubic convolution constant used by torch (and by Keys' bicubic with a=-0.75).
_A = -0.75


class Taps(NamedTuple):
    """The taps of one axis for ``P`` sample points.

    Attributes:
      index: `(T, P)` float positions of the taps along the axis (integers,
        or NaN/inf for non-finite grid values).
      weight: `(T, P)` interpolation weights, or None for nearest.
      valid: `(T, P)` bool, False where the tap lies outside the input.
    """

    index: jax.Array
    weight: jax.Array | None
    valid: jax.Array


def _in_range(index: jax.Array, size: int) -> jax.Array:
    # Comparisons are False for NaN, so non-finite taps are invalid.
    return (index >= 0.0) & (index <= size - 1.0)


def _linear_taps(x: jax.Array, size: int, padding_mode: str, align_corners: bool) -> Taps:
    x = PADDING_FNS[padding_mode](x, size, align_corners)
    x0 = jnp.floor(x)
    frac = x - x0
    index = jnp.stack([x0, x0 + 1.0])
    weight = jnp.stack([1.0 - frac, frac])
    return Taps(index, weight, _in_range(index, size))


def _nearest_taps(x: jax.Array, size: int, padding_mode: str, align_corners: bool) -> Taps:
    # Round half to even *after* padding, then mask (SPEC §4.2, torch #149013).
    index = jnp.round(PADDING_FNS[padding_mode](x, size, align_corners))[None]
    return Taps(index, None, _in_range(index, size))


def _cubic_weights(t: jax.Array) -> jax.Array:
    """Cubic-convolution weights of the taps at offsets -1, 0, 1, 2 (SPEC §4.3)."""

    def near(s):  # |s| <= 1
        return ((_A + 2.0) * s - (_A + 3.0)) * s * s + 1.0

    def far(s):  # 1 < |s| < 2
        return ((_A * s - 5.0 * _A) * s + 8.0 * _A) * s - 4.0 * _A

    return jnp.stack([far(t + 1.0), near(t), near(1.0 - t), far(2.0 - t)])


def _cubic_taps(x: jax.Array, size: int, padding_mode: str, align_corners: bool) -> Taps:
    # The centre is not padded; each of the four taps is, independently, so
    # border and reflection can overshoot near the edge (SPEC §4.3).
    x0 = jnp.floor(x)
    weight = _cubic_weights(x - x0)
    offsets = jnp.arange(-1.0, 3.0, dtype=x.dtype)[:, None]
    index = PADDING_FNS[padding_mode](x0[None] + offsets, size, align_corners)
    # A non-finite centre makes the weights NaN: the output is NaN, but no
    # tap is read, so the gradient w.r.t. the input stays finite.
    valid = _in_range(index, size) & jnp.isfinite(x)[None]
    return Taps(index, weight, valid)


TapFn = Callable[[jax.Array, int, str, bool], Taps]

# Interpolation mode -> per-axis tap function.
TAP_FNS: dict[str, TapFn] = {
    "bilinear": _linear_taps,
    "nearest": _nearest_taps,
    "bicubic": _cubic_taps,
}


def _corners(
    taps: list[Taps], spatial: tuple[int, ...]
) -> tuple[list[jax.Array], list[jax.Array] | None]:
    """Combines per-axis taps into the ``K`` corners of the stencil.

    Returns:
      ``K`` `(P,)` int32 flat offsets into the input padded with one zero
      pixel at the end, which invalid corners point at; and ``K`` `(P,)`
      weights, or None for nearest.
    """
    # Flat offsets of each axis's taps (invalid taps read offset 0 for now).
    offsets = []
    stride = 1
    for axis in reversed(range(len(spatial))):
        t = taps[axis]
        offsets.insert(0, jnp.where(t.valid, t.index, 0.0).astype(jnp.int32) * stride)
        stride *= spatial[axis]

    # Outer product of the per-axis taps, one corner at a time. (A broadcast
    # formulation crashed XLA CPU under jax.hessian in jax 0.10.2.)
    index, weight = [], []
    for combo in itertools.product(*(range(t.index.shape[0]) for t in taps)):
        picks = list(zip(taps, offsets, combo, strict=True))
        valid = functools.reduce(jnp.logical_and, [t.valid[k] for t, _, k in picks])
        index.append(jnp.where(valid, sum(off[k] for _, off, k in picks), stride))
        if taps[0].weight is not None:
            weight.append(functools.reduce(jnp.multiply, [t.weight[k] for t, _, k in picks]))
    return index, (weight or None)


def _take(flat: jax.Array, idx: jax.Array, channels_last: bool, **mode) -> jax.Array:
    """Gathers rows `(P, C)` of ``flat`` if ``channels_last``, else columns `(C, P)`."""
    return (flat.at[idx] if channels_last else flat.at[:, idx]).get(**mode)


def _accumulate_corners(
    flat: jax.Array, index: list[jax.Array], weight: list[jax.Array], channels_last: bool
) -> jax.Array:
    """Sums ``weight[k] * flat[index[k]]`` over the ``K`` corners.

    Args:
      flat: `(L, C)` input rows if ``channels_last``, else `(C, L)` columns.
      index: ``K`` `(P,)` int32 offsets in ``[0, L]``; ``L`` marks invalid corners.
      weight: ``K`` `(P,)` weights.
      channels_last: layout of ``flat`` and of the `(P, C)` / `(C, P)` result.
    """
    # One extra, all-zero pixel that invalid corners read: no mask on the
    # gathered values, and their gradient lands in the dropped pixel.
    flat = jnp.pad(flat, ((0, 1), (0, 0)) if channels_last else ((0, 0), (0, 1)))

    def add_corner(out, corner):
        idx, w = corner
        v = _take(flat, idx, channels_last, mode="promise_in_bounds")
        return out + v * (w[:, None] if channels_last else w[None]), None

    # A loop over the corners that re-gathers in the backward pass instead of
    # storing every corner: temporaries stay O(P * C + K * P) for any K, and
    # on XLA CPU fwd+bwd runs up to 2x faster than one unrolled gather per
    # corner (benchmarks/README.md). The first corner starts the sum, so the
    # carry takes the inputs' sharding.
    first, _ = add_corner(0.0, (index[0], weight[0]))
    corners = (jnp.stack(index[1:]), jnp.stack(weight[1:]))
    out, _ = jax.lax.scan(jax.checkpoint(add_corner), first, corners)
    return out


def sample_one(
    inp: jax.Array,
    grid: jax.Array,
    *,
    mode: str,
    padding_mode: str,
    align_corners: bool,
    channels_last: bool = False,
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

    Returns:
      `(C, *out)` samples, or `(*out, C)` if ``channels_last``; dtype of ``inp``.
    """
    spatial = inp.shape[:-1] if channels_last else inp.shape[1:]
    ndim = len(spatial)
    out_shape = grid.shape[:-1]
    points = grid.reshape(-1, ndim)

    # Taps per spatial axis, in the input's axis order (z, y, x).
    taps = []
    for axis, size in enumerate(spatial):
        coord = unnormalize(points[:, ndim - 1 - axis], size, align_corners)
        taps.append(TAP_FNS[mode](coord, size, padding_mode, align_corners))
    index, weight = _corners(taps, spatial)

    channels = inp.shape[-1] if channels_last else inp.shape[0]
    flat = inp.reshape(-1, channels) if channels_last else inp.reshape(channels, -1)
    if len(index) == 1:  # nearest: one gather, invalid points read 0
        out = _take(flat, index[0], channels_last, mode="fill", fill_value=0)
    else:
        out = _accumulate_corners(flat, index, weight, channels_last)
    if channels_last:
        return out.reshape(*out_shape, channels)
    return out.reshape(channels, *out_shape)
