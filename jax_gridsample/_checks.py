"""Argument checks shared by the public functions.

Every check looks only at static facts (types, shapes, dtypes, strings), so it
costs nothing under `jax.jit` and fails at trace time, before XLA sees the
arguments.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

FLOAT_DTYPES = tuple(np.dtype(d) for d in (jnp.float16, jnp.bfloat16, jnp.float32, jnp.float64))


def as_array(name: str, value: Any) -> jax.Array:
    """Returns ``value`` as a JAX array, or raises TypeError if it is not array-like.

    Python lists, tuples, scalars and None are rejected, as `jax.numpy`
    functions reject lists: a torch port always passes tensors here.
    """
    if not isinstance(value, (jax.Array, np.ndarray, np.generic)):
        raise TypeError(
            f"{name} must be a jax.Array or numpy.ndarray, got {type(value).__name__}"
            + (f" ({value!r})" if value is None or np.isscalar(value) else "")
        )
    return jnp.asarray(value)


def check_float_dtype(name: str, x: jax.Array) -> None:
    """Raises TypeError unless ``x`` has one of the floating dtypes torch samples."""
    if np.dtype(x.dtype) not in FLOAT_DTYPES:
        expected = ", ".join(d.name for d in FLOAT_DTYPES)
        raise TypeError(f"{name} must have a floating dtype ({expected}), got {x.dtype}")


def check_choice(name: str, value: Any, choices: Sequence[str]) -> str:
    """Returns ``value`` if it is one of ``choices`` (exact, case-sensitive), else ValueError."""
    if not isinstance(value, str) or value not in choices:
        expected = ", ".join(repr(c) for c in choices)
        raise ValueError(f"{name} must be one of {expected}, got {value!r}")
    return value


def check_align_corners(value: Any) -> bool:
    """Maps None to False (torch's default) and rejects anything but a bool."""
    if value is None:
        return False
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    raise TypeError(f"align_corners must be a bool or None, got {type(value).__name__} ({value!r})")


def check_int(name: str, value: Any) -> int:
    """Returns ``value`` as a Python int, or raises TypeError for non-integers."""
    if isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be an int, got bool ({value!r})")
    try:
        return operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be an int, got {type(value).__name__} ({value!r})") from None


# Gather offsets are int32 and index one channel's spatial elements; N and C
# are separate gather dimensions, so only prod(spatial) is limited.
_MAX_SPATIAL = 2**31 - 1


def check_channel_axis(channel_axis: Any, ndim: int) -> bool:
    """Returns whether the layout is channels-last; only 1 and -1 are accepted."""
    channel_axis = check_int("channel_axis", channel_axis)
    if channel_axis not in (1, -1, ndim - 1):
        raise ValueError(f"channel_axis must be 1 or -1, got {channel_axis}")
    return channel_axis != 1


def check_input(input: jax.Array, mode: str, channels_last: bool) -> None:  # noqa: A002
    """Checks the input's rank and spatial size, and that ``mode`` supports it."""
    if input.ndim not in (4, 5):
        layouts = "(N, H, W, C) or (N, D, H, W, C)"
        if not channels_last:
            layouts = "(N, C, H, W) or (N, C, D, H, W)"
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
