"""Grid coordinates: unnormalisation and padding (docs/semantics.md).

Every function here works on one axis at a time: ``x`` is an array of
coordinates along an input axis of size ``size`` (a static Python int).
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

# Finite grid values beyond this magnitude are clamped to it before
# unnormalising, so that ``(g + 1) * size`` cannot overflow to inf for any
# axis shorter than 2**31 (where torch gives NaN, pytorch/pytorch#51911). Such points
# are far outside the input either way.
_HUGE = 2.0**64


def unnormalize(g: jax.Array, size: int, align_corners: bool, ndim: int = 2) -> jax.Array:
    """Maps normalised grid values in ``[-1, 1]`` to pixel coordinates.

    The result is rounded exactly as torch's CPU kernel for ``ndim`` spatial
    dimensions rounds it, under `jax.jit` as well as op by op (see
    `_scaled_sum`): at exact pixel positions one ulp decides which pixel
    nearest picks and which one-sided gradient bilinear takes.

    Args:
      g: grid values along one axis, any shape, floating dtype.
      size: length ``S`` of the input along that axis.
      align_corners: if True, -1 and 1 are the centres of the corner pixels
        (``x = (g + 1) / 2 * (S - 1)``); if False, they are the outer edges of
        the corner pixels (``x = ((g + 1) * S - 1) / 2``).
      ndim: 2 for 4-D input, 3 for 5-D input. With ``align_corners=False``
        torch's 2-D kernel rounds once, ``fma(g + 1, S / 2, -0.5)``, and its
        3-D kernel twice, ``((g + 1) * S - 1) / 2``.

    Returns:
      Pixel coordinates with the shape and dtype of ``g``. NaN and ±inf pass
      through; huge finite values stay finite.
    """
    g = jnp.where(jnp.isfinite(g), jnp.clip(g, -_HUGE, _HUGE), g)
    u = g + 1.0
    if align_corners:
        # One product: rounded once, whatever XLA does around it. (torch's
        # 3-D kernel halves g + 1 first; halving is exact.)
        return u * ((size - 1) / 2.0)
    if ndim == 2:
        return _scaled_sum(u, size / 2.0, -0.5)
    return (_scaled_sum(u, float(size)) - 1.0) * 0.5


# Significand bits of the high part in `_split`; the low part has the rest.
_HIGH_BITS = {np.dtype(np.float32): 12, np.dtype(np.float64): 27}
_INT_OF = {np.dtype(np.float32): jnp.int32, np.dtype(np.float64): jnp.int64}


def _split(u: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Splits ``u`` into ``hi + lo`` exactly, ``hi`` holding the top of its significand.

    ``hi`` is ``u`` with the low significand bits masked off (bit operations,
    no rounding); ``lo = u - hi`` is exact. ±inf gives ``(±inf, 0)``. ``hi``
    carries no derivative, so ``d(hi + lo) = du``.
    """
    dtype = np.dtype(u.dtype)
    itype = _INT_OF[dtype]
    mask = -(1 << (np.finfo(dtype).nmant + 1 - _HIGH_BITS[dtype]))
    bits = jax.lax.bitcast_convert_type(u, itype)
    hi = jax.lax.stop_gradient(jax.lax.bitcast_convert_type(bits & itype(mask), dtype))
    return hi, jnp.where(jnp.isinf(u), jnp.zeros_like(u), u - hi)


def _scaled_sum(u: jax.Array, scale: float, offset: float | None = None) -> jax.Array:
    """``u * scale (+ offset)``, rounded once, whatever XLA does to the expression.

    XLA rewrites floating-point arithmetic in ways that change roundings:
    its algebraic simplifier folds chains of constant additions
    (``(x - 0.5) + 0.5`` becomes ``x``, dropping the rounding of ``x``), and
    XLA CPU (and GPU) let LLVM contract a multiply feeding an add into an FMA,
    which op-by-op execution never does. Both change which side of a pixel
    position a coordinate falls on. So the product is formed from the two
    halves of `_split`: with ``scale`` of at most ``p - 1 - high`` significand
    bits (``p`` the dtype's), ``hi * scale`` and ``lo * scale`` are exact, so
    contracting either into the add rounds nothing; ``hi * scale + offset``
    is exact too (unless ``0 < |hi * scale| < 1/2`` carries bits below the
    result's ulp, i.e. ``|u| < 2**-11`` in float32); and the one rounding
    left, the final add, has nothing XLA may fold into it. A ``scale`` with
    more bits falls back to ``u * scale + offset``, whose last bit depends on
    contraction: in float32, sizes with more than 11 significant bits in 4-D
    (the smallest is 2049) or 12 in 5-D (4097); in float64, 25 and 26.
    """
    dtype = np.dtype(u.dtype)
    significand_bits = np.finfo(dtype).nmant + 1
    mantissa, _ = np.frexp(scale)
    scale_bits = next(b for b in range(1, 64) if (mantissa * 2.0**b).is_integer())
    if scale_bits + _HIGH_BITS[dtype] > significand_bits - (offset is not None):
        return u * scale if offset is None else u * scale + offset
    hi, lo = _split(u)
    if offset is None:
        return hi * scale + lo * scale
    return (hi * scale + offset) + lo * scale


def clip(x: jax.Array, size: int) -> jax.Array:
    """Clamps coordinates to ``[0, S - 1]`` the way torch's CPU kernel does.

    NaN and -inf go to 0, +inf to ``S - 1``. The derivative is 1 strictly
    inside ``(0, S - 1)`` and 0 at both ends and beyond (as torch, pytorch/pytorch#23925).
    """
    high = size - 1.0
    inside = (x > 0.0) & (x < high)
    # Not jnp.where(x >= high, high, 0.0): under vmap, with explicitly
    # sharded arguments and no mesh set, jax 0.12 gives that a malformed
    # sharding (tests/test_sharding.py).
    return jnp.where(inside, x, (x >= high).astype(x.dtype) * high)


def reflect(x: jax.Array, size: int, align_corners: bool) -> jax.Array:
    """Reflects coordinates back into the input.

    Mirrors about the centres of the corner pixels, ``[0, S - 1]``, when
    ``align_corners`` is True, and about their outer edges, ``[-0.5, S - 0.5]``,
    when it is False. The derivative is ±1 by the parity of the reflections.
    NaN and ±inf come out as NaN (``clip`` then sends them to 0).
    """
    if align_corners:
        low, span = 0.0, float(size - 1)
    else:
        low, span = -0.5, float(size)
    if span == 0.0:  # S == 1 with align_corners: a single point.
        return jnp.zeros_like(x)
    # Every step is exact for |x| < 2**22, so XLA folding ``- low`` into the
    # unnormalisation is harmless once that ends in a non-constant add
    # (`_scaled_sum`); torch's 2-D (trunc/FMA) and 3-D (fmod) algorithms
    # agree with this one there.
    a = jnp.fmod(jnp.abs(x - low), 2.0 * span)
    return jnp.where(a > span, 2.0 * span - a, a) + low


def _pad_zeros(x: jax.Array, size: int, align_corners: bool) -> jax.Array:
    del size, align_corners
    return x


def _pad_border(x: jax.Array, size: int, align_corners: bool) -> jax.Array:
    del align_corners
    return clip(x, size)


def _pad_reflection(x: jax.Array, size: int, align_corners: bool) -> jax.Array:
    return clip(reflect(x, size, align_corners), size)


PadFn = Callable[[jax.Array, int, bool], jax.Array]

# Padding mode -> function mapping a pixel coordinate into range. "zeros" is
# the identity: out-of-range taps are masked when the input is read.
PADDING_FNS: dict[str, PadFn] = {
    "zeros": _pad_zeros,
    "border": _pad_border,
    "reflection": _pad_reflection,
}
