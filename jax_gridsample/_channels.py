"""Per-point weights spread over the channels, and the channel sums that transpose them.

``v * spread(w)`` is ``v`` times ``w`` broadcast over the channel axis; its
transpose, the weight's cotangent, sums ``ct * v`` over the channels. JAX
transposes a plain broadcast into an add reduction, which XLA CPU hands to
YNNPACK: the gathered ``v`` is then stored first and summed by a library call
(the timings are in benchmarks/README.md). The same sum, written with a reducer
XLA does not take for an add, stays in XLA's own loop, fused with the gather
and the product (CPU only; other platforms lower a plain sum). Both are linear
primitives, each the other's transpose, so `jvp`, `vjp`, `vmap` and higher
derivatives all work.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax
from jax.extend.core import Primitive
from jax.interpreters import ad, batching, mlir
from jax.sharding import PartitionSpec


def spread(w: jax.Array, shape: tuple[int, ...], axis: int) -> jax.Array:
    """``w`` broadcast along a new axis ``axis`` (the channels) to ``shape``.

    Args:
      w: weights, ``shape`` without its axis ``axis``, e.g. `(P,)`.
      shape: the result's shape, e.g. `(C, P)` with ``axis=0`` or `(P, C)` with 1.
      axis: the new axis.
    """
    return _spread_p.bind(w, shape=tuple(shape), axis=axis)


def channel_sum(x: jax.Array, axis: int) -> jax.Array:
    """The sum of ``x`` over ``axis`` (e.g. `(C, P)` -> `(P,)`), in XLA's own loops."""
    return _sum_p.bind(x, axis=axis)


def _spread_value(w: jax.Array, *, shape: tuple[int, ...], axis: int) -> jax.Array:
    dims = tuple(d for d in range(len(shape)) if d != axis)
    return lax.broadcast_in_dim(w, shape, dims)


def _sum_value(x: jax.Array, *, axis: int) -> jax.Array:
    return jnp.sum(x, axis=axis)


def _sum_value_cpu(x: jax.Array, *, axis: int) -> jax.Array:
    # a - (-b) is a + b exactly (signed zeros, infinities and NaN included).
    return lax.reduce(x, jnp.zeros((), x.dtype), lambda a, b: a - (-b), (axis,))


def _spread_abstract(w, *, shape, axis):
    # The channels are not sharded; every other axis keeps its sharding.
    spec = [*w.sharding.spec, *[None] * (w.ndim - len(w.sharding.spec))]
    spec.insert(axis, None)
    return w.update(shape=shape, sharding=w.sharding.update(spec=PartitionSpec(*spec)))


def _sum_abstract(x, *, axis):
    spec = [*x.sharding.spec, *[None] * (x.ndim - len(x.sharding.spec))]
    del spec[axis]
    shape = x.shape[:axis] + x.shape[axis + 1 :]
    return x.update(shape=shape, sharding=x.sharding.update(spec=PartitionSpec(*spec)))


def _spread_transpose(ct, w, *, shape, axis):
    del shape
    assert ad.is_undefined_primal(w)
    return [channel_sum(ct, axis)]


def _sum_transpose(ct, x, *, axis):
    assert ad.is_undefined_primal(x)
    return [spread(ct, x.aval.shape, axis)]


def _spread_batch(args, dims, *, shape, axis):
    (w,), (d,) = args, dims
    w = jnp.moveaxis(w, d, 0)
    return spread(w, (w.shape[0], *shape), axis + 1), 0


def _sum_batch(args, dims, *, axis):
    (x,), (d,) = args, dims
    x = jnp.moveaxis(x, d, 0)
    return channel_sum(x, axis + 1), 0


_spread_p = Primitive("jax_gridsample_spread")
_sum_p = Primitive("jax_gridsample_channel_sum")
for _p, _value, _abstract, _transpose, _batch in (
    (_spread_p, _spread_value, _spread_abstract, _spread_transpose, _spread_batch),
    (_sum_p, _sum_value, _sum_abstract, _sum_transpose, _sum_batch),
):
    _p.def_impl(_value)
    _p.def_abstract_eval(_abstract)
    ad.deflinear2(_p, _transpose)
    batching.primitive_batchers[_p] = _batch
    mlir.register_lowering(_p, mlir.lower_fun(_value, multiple_results=False))
# Other platforms keep the reduction they recognise as a sum.
mlir.register_lowering(_sum_p, mlir.lower_fun(_sum_value_cpu, multiple_results=False), "cpu")
