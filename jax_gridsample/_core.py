"""The plumbing both public samplers share: options, dtypes, and value/derivative pairs."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from jax_gridsample import _checks
from jax_gridsample._coordinates import PADDING_FNS
from jax_gridsample._taps import TAP_FNS

MODES = tuple(TAP_FNS)
PADDING_MODES = tuple(PADDING_FNS)


class Config(NamedTuple):
    """The sampling options, checked; a static argument of the jitted functions."""

    mode: str
    padding_mode: str
    align_corners: bool
    channels_last: bool

    def spatial_dim(self, i: int) -> int:
        """The array axis of spatial axis ``i`` of a batched input or output."""
        return (1 if self.channels_last else 2) + i

    def weights_can_be_nan(self) -> bool:
        """Whether a non-finite coordinate makes its taps' weights, hence its value, NaN.

        Bilinear taps pad the coordinate first, and border and reflection
        padding send NaN and ±inf to a pixel; zeros padding keeps them, and
        bicubic weights come from the unpadded coordinate. Nearest has no
        weights.
        """
        return self.mode == "bicubic" or (self.mode == "bilinear" and self.padding_mode == "zeros")


def check_options(
    mode: Any,
    padding_mode: Any,
    align_corners: Any,
    channel_axis: Any,
    input: jax.Array,  # noqa: A002 -- torch's argument name
) -> Config:
    """Checks the options shared by both samplers and the input they apply to."""
    mode = _checks.check_choice("mode", mode, MODES)
    padding_mode = _checks.check_choice("padding_mode", padding_mode, PADDING_MODES)
    align_corners = _checks.check_align_corners(align_corners)
    channels_last = _checks.check_channel_axis(channel_axis, input.ndim)
    _checks.check_input(input, mode, channels_last)
    _checks.check_float_dtype("input", input)
    return Config(mode, padding_mode, align_corners, channels_last)


def compute_dtype(dtype: Any) -> jnp.dtype:
    """The dtype a computation on ``dtype`` runs in: float32 for half types, else ``dtype``."""
    return jnp.promote_types(dtype, jnp.float32)


def in_compute_dtype(fn: Callable[..., jax.Array], x: Any, *args: Any) -> jax.Array:
    """``fn(x, *args)`` computed in float32 at least, rounded once to ``x``'s dtype.

    ``x`` is an array or a sequence of arrays of one dtype. Half types are
    computed in float32 and rounded once, as torch does on CUDA.
    """
    dtype = jax.tree.leaves(x)[0].dtype
    compute = compute_dtype(dtype)
    cast = jax.tree.map(lambda a: a.astype(compute), (x, *args))
    return fn(*cast).astype(dtype)


def value_and_derivatives(
    value: Callable[..., jax.Array], derivatives: Callable[..., jax.Array]
) -> Callable[..., jax.Array]:
    """A function computed by ``value`` and differentiated as ``derivatives``.

    Both must compute the same function of the same arguments; the second is
    chosen for its derivatives (JAX's autodiff of it, so `jvp`, `vjp`, `grad`
    and `hessian` all work). With one formulation, it is returned as is.
    """
    if value is derivatives:
        return value

    @jax.custom_jvp
    def sampled(*args):
        return value(*args)

    @sampled.defjvp
    def _(primals, tangents):
        return sampled(*primals), jax.jvp(derivatives, primals, tangents)[1]

    return sampled


def in_channel_blocks(
    fn: Callable[..., jax.Array],
    blocks: int,
    axis: int,
    maps: tuple[jax.Array, ...],
    *args: Any,
) -> jax.Array:
    """``fn(maps, *args)``, (..., C), with its value computed ``blocks`` channels at a time.

    ``maps`` hold C channels along ``axis`` and ``fn`` treats every channel
    alike and independently, so each block's result equals those channels of
    the whole. The derivatives are ``fn``'s on every channel.
    """
    if blocks == 1:
        return fn(maps, *args)
    width = maps[0].shape[axis] // blocks

    def value(maps, *args):
        def block(i):
            part = tuple(lax.dynamic_slice_in_dim(m, i * width, width, axis) for m in maps)
            return fn(part, *args)

        out = lax.map(block, jnp.arange(blocks))  # (blocks, ..., width)
        return jnp.moveaxis(out, 0, -2).reshape(*out.shape[1:-1], blocks * width)

    return value_and_derivatives(value, fn)(maps, *args)
