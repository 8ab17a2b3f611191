"""Grid coordinates: unnormalisation and padding (SPEC §3).

Every function here works on one axis at a time: ``x`` is an array of
coordinates along an input axis of size ``size`` (a static Python int).
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

# Finite grid values beyond this magnitude are clamped to it before
# unnormalising, so that ``(g + 1) * size`` cannot overflow to inf for any
# axis shorter than 2**31 (SPEC decision 5, torch issue #51911). Such points
# are far outside the input either way.
_HUGE = 2.0**64


def unnormalize(g: jax.Array, size: int, align_corners: bool) -> jax.Array:
    """Maps normalised grid values in ``[-1, 1]`` to pixel coordinates (SPEC §3.1).

    Args:
      g: grid values along one axis, any shape, floating dtype.
      size: length ``S`` of the input along that axis.
      align_corners: if True, -1 and 1 are the centres of the corner pixels
        (``x = (g + 1) / 2 * (S - 1)``); if False, they are the outer edges of
        the corner pixels (``x = ((g + 1) * S - 1) / 2``).

    Returns:
      Pixel coordinates with the shape and dtype of ``g``. NaN and ±inf pass
      through; huge finite values stay finite.
    """
    g = jnp.where(jnp.isfinite(g), jnp.clip(g, -_HUGE, _HUGE), g)
    if align_corners:
        return (g + 1.0) * ((size - 1) / 2.0)
    return (g + 1.0) * (size / 2.0) - 0.5


def clip(x: jax.Array, size: int) -> jax.Array:
    """Clamps coordinates to ``[0, S - 1]`` the way torch's CPU kernel does (SPEC §3.3).

    NaN and -inf go to 0, +inf to ``S - 1``. The derivative is 1 strictly
    inside ``(0, S - 1)`` and 0 at both ends and beyond (torch issue #23925).
    """
    high = size - 1.0
    inside = (x > 0.0) & (x < high)
    # Not jnp.where(x >= high, high, 0.0): under vmap, with explicitly
    # sharded arguments and no mesh set, jax 0.12 gives that a malformed
    # sharding (tests/test_sharding.py).
    return jnp.where(inside, x, (x >= high).astype(x.dtype) * high)


def reflect(x: jax.Array, size: int, align_corners: bool) -> jax.Array:
    """Reflects coordinates back into the input (SPEC §3.2).

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
