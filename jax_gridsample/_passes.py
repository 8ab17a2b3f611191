"""Resampling one axis at a time: the passes of `grid_sample_separable`.

An axis vector ``v`` `(N, O)` gives, per output index, the taps of
`_taps.TAP_FNS` along one input axis (`Axis`). A pass resamples that axis
of a batched array ``x`` (axis ``dim``, of size S) to O indices, either by
gathering each tap's slices and summing them weighted (`taps_pass`) or by a
product with the axis' dense `(N, O, S)` weight matrix (`matmul_pass`, whose
derivatives are products and gathers: no scatter).
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.custom_derivatives import SymbolicZero

from jax_gridsample._coordinates import unnormalize
from jax_gridsample._core import Config
from jax_gridsample._taps import TAP_FNS

_HIGHEST = jax.lax.Precision.HIGHEST


class Axis(NamedTuple):
    """One axis' taps for `(N, O)` output indices.

    Attributes:
      positions: per tap, `(N, O)` int32 input positions; ``S`` (one past the
        end) where the tap is invalid.
      weights: per tap, `(N, O)` weights, 0 where the tap is invalid (1 for
        nearest's one tap).
    """

    positions: list[jax.Array]
    weights: list[jax.Array]


def axis_taps(v: jax.Array, size: int, config: Config, ndim: int) -> Axis:
    """The taps of coordinates ``v`` along an input axis of ``size`` pixels (``ndim`` axes)."""
    num, tap_fn = TAP_FNS[config.mode]
    coords = unnormalize(v, size, config.align_corners, ndim)
    taps = [tap_fn(coords, size, config.padding_mode, config.align_corners, k) for k in range(num)]
    positions = [jnp.where(t.valid, t.position, size).astype(jnp.int32) for t in taps]
    weights = [t.weight for t in taps if t.weight is not None]
    if not weights:  # nearest
        return Axis(positions, [jnp.ones_like(v)])
    # Invalid taps (NaN weights at non-finite coordinates among them) weigh 0.
    return Axis(positions, [jnp.where(t.valid, w, 0.0) for t, w in zip(taps, weights, strict=True)])


def along(v: jax.Array, ndim: int, dim: int) -> jax.Array:
    """Reshapes an `(N, O)` array to broadcast along an ``ndim``-D array's axes 0 and ``dim``."""
    shape = [v.shape[0]] + [1] * (ndim - 1)
    shape[dim] = v.shape[1]
    return v.reshape(shape)


def _take(x: jax.Array, index: jax.Array, dim: int) -> jax.Array:
    """Per batch element, the slices of ``x`` at ``index`` `(N, O)` along ``dim``; 0 past S."""

    def take(xn, i):
        # A fill-mode read of an invalid tap is 0, never an input value
        # times a zero weight: non-finite pixels stay where grid_sample
        # puts them.
        return jnp.take(xn, i, axis=dim - 1, mode="fill", fill_value=0)

    return jax.vmap(take)(x, index)


def _weighted_taps(x: jax.Array, positions, weights, dim: int) -> jax.Array:
    terms = (
        _take(x, i, dim) * along(w, x.ndim, dim) for i, w in zip(positions, weights, strict=True)
    )
    return functools.reduce(jnp.add, terms)


def taps_pass(x: jax.Array, v: jax.Array, dim: int, config: Config) -> jax.Array:
    """Resamples axis ``dim`` of ``x`` by gathering each tap's slices and summing them weighted."""
    a = axis_taps(v, x.shape[dim], config, x.ndim - 2)
    return _weighted_taps(x, a.positions, a.weights, dim)


def _s_first(dim: int, shape: tuple[int, ...], transposed: bool) -> bool:
    """Whether a product's weight matrix is best laid out `(N, S, O)` rather than `(N, O, S)`.

    Only for the transpose of a product along an axis other than the last
    without axes before it to broadcast over (C = 1, channels first): XLA
    CPU's batched dots ran fastest with the left operand contracted along
    its last axis there, and slower with that layout elsewhere.
    """
    return transposed and dim != len(shape) - 1 and math.prod(shape[1:dim]) == 1


def _matrix(a: Axis, size: int, s_first: bool) -> jax.Array:
    """The axis' `(N, O, size)` weight matrix (`(N, size, O)` if ``s_first``).

    Row o holds output o's valid taps at their positions. Built by
    comparisons with an iota, so that its derivative has no scatter.
    """
    o, s = (-1, -2) if s_first else (-2, -1)
    iota = jnp.expand_dims(jnp.arange(size, dtype=jnp.int32), (0, o))
    terms = (
        jnp.where(jnp.expand_dims(i, s) == iota, jnp.expand_dims(w, s), 0.0)
        for i, w in zip(a.positions, a.weights, strict=True)
    )
    return functools.reduce(jnp.add, terms)


def _product(x: jax.Array, matrix: jax.Array, dim: int, s_first: bool) -> jax.Array:
    """A `_matrix` applied along axis ``dim`` of ``x``, keeping ``x``'s axes in order.

    Neither the product nor its transpose then moves the (large) output or
    cotangent: along the last axis ``x`` is the left operand, along others
    the matrix, batched over the axes before ``dim``.
    """
    s_axis, o_axis = (1, 2) if s_first else (2, 1)
    if dim == x.ndim - 1:
        dims = (((dim,), (s_axis,)), ((0,), (0,)))
        return jax.lax.dot_general(x, matrix, dims, precision=_HIGHEST)
    n, size = x.shape[0], x.shape[dim]
    pre, post = math.prod(x.shape[1:dim]), x.shape[dim + 1 :]
    rows = x.reshape(n, pre, size, math.prod(post))
    if pre == 1:  # a plain batched product, without broadcasting the matrix
        dims = (((s_axis,), (1,)), ((0,), (0,)))
        y = jax.lax.dot_general(matrix, rows[:, 0], dims, precision=_HIGHEST)
    else:
        m = jnp.broadcast_to(matrix[:, None], (n, pre, *matrix.shape[1:]))
        dims = (((s_axis + 1,), (2,)), ((0, 1), (0, 1)))
        y = jax.lax.dot_general(m, rows, dims, precision=_HIGHEST)
    return y.reshape(*x.shape[:dim], matrix.shape[o_axis], *post)


def matmul_value_pass(x: jax.Array, v: jax.Array, dim: int, config: Config) -> jax.Array:
    """Resamples axis ``dim`` of ``x`` by a product with the axis' weight matrix (no derivative)."""
    size = x.shape[dim]
    return _product(x, _matrix(axis_taps(v, size, config, x.ndim - 2), size, False), dim, False)


@functools.partial(jax.custom_jvp, nondiff_argnums=(3, 4))
def matmul_pass(
    x: jax.Array, v: jax.Array, nan_term: jax.Array, dim: int, config: Config
) -> jax.Array:
    """`matmul_value_pass`, whose derivatives are products and gathers, with ``nan_term``.

    ``nan_term`` `(N, O)` is 0 or NaN, added to the derivative w.r.t. ``v``
    (`_matmul_pass_jvp`): NaN where `grid_sample`'s gradients w.r.t. the
    coordinates of those outputs may be NaN, from non-finite coordinates.
    """
    del nan_term
    return matmul_value_pass(x, v, dim, config)


@functools.partial(matmul_pass.defjvp, symbolic_zeros=True)
def _matmul_pass_jvp(dim, config, primals, tangents):
    """``d out = matrix . dx + (read + nan_term) * dv``.

    ``read`` is, per output element, the sum over taps of ``x``'s slice at
    the tap times the slope of the tap's weight w.r.t. the coordinate, so
    that the gradient w.r.t. ``v`` is one gather-multiply pass over the
    cotangent and a product with ones; as autodiff of the product it was a
    second dense contraction of the cotangent.
    """
    x, v, nan_term = primals
    dx, dv, _ = tangents
    size, ndim = x.shape[dim], x.ndim - 2
    # The taps and their weights' slopes w.r.t. the coordinate, in one trace.
    a, slopes = jax.jvp(lambda v: axis_taps(v, size, config, ndim), (v,), (jnp.ones_like(v),))
    matrix = _matrix(a, size, False)
    out = _product(x, matrix, dim, False)
    terms = []
    if not isinstance(dx, SymbolicZero):
        s_first = _s_first(dim, x.shape, True)
        laid_out = _matrix(a, size, True) if s_first else matrix
        terms.append(_product(dx, laid_out, dim, s_first))
    # Nearest's weights have zero slopes: no term.
    if not isinstance(dv, SymbolicZero) and config.mode != "nearest":
        read = _weighted_taps(x, a.positions, slopes.weights, dim) + along(nan_term, x.ndim, dim)
        terms.append(read * _spread(dv, out.shape, dim))
    if not terms:
        return out, jnp.zeros_like(out)
    return out, functools.reduce(jnp.add, terms)


def _spread(v: jax.Array, shape: tuple[int, ...], dim: int) -> jax.Array:
    """``v`` `(N, O)` broadcast along the other axes of ``shape`` by an einsum with ones.

    Its transpose is then a matrix product with ones rather than a
    reduction, which XLA CPU ran several times slower.
    """
    letters = "abcdefgh"[: len(shape)]
    rest = "".join(c for k, c in enumerate(letters) if k not in (0, dim))
    ones = jnp.ones(tuple(s for k, s in enumerate(shape) if k not in (0, dim)), v.dtype)
    spec = f"{letters[0]}{letters[dim]},{rest}->{letters}"
    return jnp.einsum(spec, v, ones, precision=_HIGHEST)
