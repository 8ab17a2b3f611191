"""Interpolation kernels as per-axis taps.

A *tap* is one input position read along one axis, with its weight and a
validity mask. Linear interpolation has two taps per axis, cubic four and
nearest one. `grid_sample` combines the taps of all axes into the ``K``
corners of the interpolation stencil (`_kernels`); `grid_sample_separable`
resamples one axis at a time with them (`_passes`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

from jax_gridsample._coordinates import PADDING_FNS

# Cubic convolution constant used by torch (and by Keys' bicubic with a=-0.75).
_A = -0.75


class Tap(NamedTuple):
    """One tap of one axis for ``P`` sample points.

    Attributes:
      position: `(P,)` float positions of the tap along the axis (integers, or
        NaN/inf for non-finite grid values).
      weight: `(P,)` interpolation weights, or None for nearest.
      valid: `(P,)` bool, False where the tap lies outside the input.
    """

    position: jax.Array
    weight: jax.Array | None
    valid: jax.Array


def _in_range(index: jax.Array, size: int) -> jax.Array:
    # Comparisons are False for NaN, so non-finite taps are invalid.
    return (index >= 0.0) & (index <= size - 1.0)


def _linear_tap(
    x: jax.Array, size: int, padding_mode: str, align_corners: bool, k: int | jax.Array
) -> Tap:
    x = PADDING_FNS[padding_mode](x, size, align_corners)
    x0 = jnp.floor(x)
    # With align_corners=True, x is a lone product that XLA may contract
    # with this subtraction into an FMA: frac then carries the product's
    # rounding error (an ulp; it may even be a hair below 0). x0, the pixel
    # and the side of the derivative, still come from the rounded x.
    frac = x - x0
    if isinstance(k, int):
        index, weight = x0 + k, 1.0 - frac if k == 0 else frac
    else:
        index, weight = x0 + k.astype(x.dtype), jnp.where(k == 0, 1.0 - frac, frac)
    return Tap(index, weight, _in_range(index, size))


def _nearest_tap(
    x: jax.Array, size: int, padding_mode: str, align_corners: bool, k: int | jax.Array
) -> Tap:
    del k  # one tap
    # Round half to even *after* padding, then mask (as torch, pytorch/pytorch#149013).
    index = jnp.round(PADDING_FNS[padding_mode](x, size, align_corners))
    return Tap(index, None, _in_range(index, size))


def _cubic_weight(s: jax.Array, near: bool | jax.Array) -> jax.Array:
    """Cubic-convolution weight at distance ``s``: ``|s| <= 1`` if ``near``."""
    if isinstance(near, bool):
        return _near_weight(s) if near else _far_weight(s)
    return jnp.where(near, _near_weight(s), _far_weight(s))


def _near_weight(s: jax.Array) -> jax.Array:
    return ((_A + 2.0) * s - (_A + 3.0)) * s * s + 1.0


def _far_weight(s: jax.Array) -> jax.Array:
    return ((_A * s - 5.0 * _A) * s + 8.0 * _A) * s - 4.0 * _A


def _cubic_tap(
    x: jax.Array, size: int, padding_mode: str, align_corners: bool, k: int | jax.Array
) -> Tap:
    # Taps at offsets -1, 0, 1, 2 from floor(x). The centre is not padded;
    # each tap is, independently, so border and reflection can overshoot near
    # the edge (as torch).
    x0 = jnp.floor(x)
    t = x - x0
    # Distance from x to the tap: t + 1, t, 1 - t, 2 - t.
    if isinstance(k, int):
        weight = _cubic_weight(t + (1.0 - k) if k < 2 else (k - 1.0) - t, k in (1, 2))
        kf = float(k)
    else:
        kf = k.astype(x.dtype)
        distance = jnp.where(k < 2, t + (1.0 - kf), (kf - 1.0) - t)
        weight = _cubic_weight(distance, (k == 1) | (k == 2))
    index = PADDING_FNS[padding_mode](x0 + (kf - 1.0), size, align_corners)
    # A non-finite centre makes the weights NaN: the output is NaN, but no
    # tap is read, so the gradient w.r.t. the input stays finite.
    return Tap(index, weight, _in_range(index, size) & jnp.isfinite(x))


# Tap ``k`` of an axis; a Python int ``k`` (a static tap) traces only that tap's terms.
TapFn = Callable[[jax.Array, int, str, bool, "int | jax.Array"], Tap]

# Interpolation mode -> (taps per axis, function giving tap ``k`` of an axis).
TAP_FNS: dict[str, tuple[int, TapFn]] = {
    "bilinear": (2, _linear_tap),
    "nearest": (1, _nearest_tap),
    "bicubic": (4, _cubic_tap),
}


def num_corners(mode: str, ndim: int) -> int:
    """``K``, the number of stencil corners of ``mode`` in ``ndim`` dimensions."""
    return TAP_FNS[mode][0] ** ndim


class AxisTerm(NamedTuple):
    """Tap ``k`` of one axis as a stencil corner uses it.

    Attributes:
      offset: `(P,)` int32, the tap's position times the axis' stride in the
        flattened input (0 where the tap is invalid).
      valid: `(P,)` bool, `Tap.valid`.
      weight: `(P,)` weights, or None for nearest.
    """

    offset: jax.Array
    valid: jax.Array
    weight: jax.Array | None


def axis_term(tap: Tap, stride: int) -> AxisTerm:
    """`AxisTerm` of ``tap`` on an axis of stride ``stride``."""
    offset = jnp.where(tap.valid, tap.position, 0.0).astype(jnp.int32) * stride
    return AxisTerm(offset, tap.valid, tap.weight)


def strides(spatial: tuple[int, ...]) -> list[int]:
    """The stride of each spatial axis in the input flattened over ``spatial``."""
    return [math.prod(spatial[axis + 1 :]) for axis in range(len(spatial))]
