"""Argument checks shared by the public functions (SPEC §1, §11, decision 7).

Every check looks only at static facts (types, shapes, dtypes, strings), so it
costs nothing under `jax.jit` and fails at trace time, before XLA sees the
arguments.
"""

from __future__ import annotations

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
