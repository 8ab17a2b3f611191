"""`grid_sample_separable`: `grid_sample` on a grid given by one vector per axis.

When ``grid[n, h, w] = (x[n, w], y[n, h])`` the sampling operator factors
into one interpolation per axis: each axis vector gives, per output index, the
taps of `_kernels.TAP_FNS` (positions, weights, validity), and the output is
their outer product applied to the input. Its formulations:

* ``"matmul"``: each axis becomes a dense `(N, O, S)` weight matrix, built by
  comparing tap positions with an iota (no scatter), and the input is
  contracted with one matrix per axis (`Precision.HIGHEST`), the outermost
  axis last. Its gradient w.r.t. the input is matmuls too; w.r.t. each axis
  vector, the taps' slices of that pass's input (gathers) times the
  cotangent, summed by a product with ones (`_matmul_jvp`): no scatter.
* ``"taps"``: one axis at a time, gather each tap's slices of the input along
  that axis and sum them weighted. Its gradient w.r.t. the input scatters.
* ``"taps_rows"``: gathers, except a matmul for the last axis of a
  channels-first input (where a gather reads single elements).
* ``"expanded"``: `grid_sample` itself on the grid the vectors span, for the
  shapes where none of the above beats it.

`_policy.separable_plan` picks the formulation of the value and of the
derivatives from the shapes (`_sample`, a `custom_jvp` as `grid_sample`'s).
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.custom_derivatives import SymbolicZero
from jax.typing import ArrayLike

from jax_gridsample import _checks, _policy
from jax_gridsample._coordinates import unnormalize
from jax_gridsample._grid_sample import (
    MODES,
    PADDING_MODES,
    Config,
    check_channel_axis,
    check_input,
    per_platform,
    sample_batch,
)
from jax_gridsample._kernels import TAP_FNS

_AXIS_NAMES = ("x", "y", "z")


def grid_sample_separable(
    input: ArrayLike,  # noqa: A002 -- torch's argument name
    axes: tuple[ArrayLike, ...],
    mode: str = "bilinear",
    padding_mode: str = "zeros",
    align_corners: bool | None = None,
    *,
    channel_axis: int = 1,
) -> jax.Array:
    """`grid_sample` on a separable grid, given as one coordinate vector per axis.

    ``grid_sample_separable(input, (x, y), ...)`` equals
    ``grid_sample(input, grid, ...)`` with ``grid[n, h, w] = (x[n, w], y[n, h])``
    (5-D: ``grid[n, d, h, w] = (x[n, w], y[n, h], z[n, d])``), values and
    gradients, without building that grid: mask pasting (Mask R-CNN), resizes,
    zooms and crops of axis-aligned boxes. The gradient w.r.t. each axis
    vector is the grid's gradient summed over the other output axes. On
    inputs of at most 128 pixels per axis the gradients are matrix products
    and gathers, with no scatter-add: deterministic on any backend, and fast
    when many output points share few input pixels. Longer axes, and many
    channels where the matmuls would cost more, take `grid_sample`'s own
    gradient on the expanded grid, which was faster there
    (`_policy.separable_plan`).

    Args:
      input: `(N, C, H, W)` or `(N, C, D, H, W)` array of float16, bfloat16,
        float32 or float64 (channels last if ``channel_axis=-1``).
      axes: ``(x, y)`` for 4-D input, ``(x, y, z)`` for 5-D input, in
        ``grid``'s order: ``x`` `(N, W_out)` normalised coordinates along the
        input's width, ``y`` `(N, H_out)` along its height, ``z`` `(N, D_out)`
        along its depth; the dtype of ``input``.
      mode: ``"bilinear"``, ``"nearest"`` or ``"bicubic"`` (4-D only), as in
        `grid_sample`.
      padding_mode: ``"zeros"``, ``"border"`` or ``"reflection"``.
      align_corners: as in `grid_sample`; None means False.
      channel_axis: 1 or -1, as in `grid_sample`.

    Returns:
      `(N, C, H_out, W_out)` or `(N, C, D_out, H_out, W_out)` (channels last
      if ``channel_axis=-1``), the dtype of ``input``.

    Raises:
      TypeError: non-array input or axis vectors, non-float or mismatched
        dtypes, ``axes`` not a tuple or list, a non-bool ``align_corners``.
      ValueError: unknown ``mode`` or ``padding_mode``; wrong ranks, number of
        axis vectors or batch sizes; an empty input spatial dimension.
      NotImplementedError: ``mode="bicubic"`` with 5-D input.

    Example:
      Paste a mask into the box x in [100, 200), y in [100, 300) of a
      500x300 image, reading it at the image's pixel centres:

      >>> import jax.numpy as jnp
      >>> from jax_gridsample import grid_sample_separable
      >>> mask = jnp.ones((1, 1, 100, 100))
      >>> x = (jnp.arange(500.0) + 0.5 - 100) / 100 * 2 - 1
      >>> y = (jnp.arange(300.0) + 0.5 - 100) / 200 * 2 - 1
      >>> grid_sample_separable(mask, (x[None], y[None])).shape
      (1, 1, 300, 500)

    Note:
      Non-finite grid values follow `grid_sample`'s rules (SPEC decisions
      4-6), values and gradients. Non-finite *input* values (NaN or ±inf
      pixels) differ where the policy (`_policy.separable_plan`) uses
      matmuls, which multiply every pixel by a weight, most of them 0
      (0 x inf = NaN): that is, on axes of at most
      `_policy.SEPARABLE_MATMUL_MAX_SIZE` input pixels. The value's matmul is
      the last (x) axis of a channels-first input: there a non-finite pixel
      makes non-finite every output of the rows (of the (d, h) lines, in
      5-D) whose y (and z) taps read its input row, where `grid_sample`
      makes non-finite only the outputs whose x taps read its column too.
      Where the policy computes the derivatives with matmuls (every axis
      that short, and not the fallback to `grid_sample`'s derivatives), the
      gradient w.r.t. each axis vector is non-finite at every output index
      whose taps read an input slice holding such a pixel (a column for x,
      a row for y, a plane for z), even where no output reads the pixel
      itself. The gradient w.r.t. ``input`` never depends on input values
      and is `grid_sample`'s. Channels-last input, longer axes and the
      fallback read only the stencils' pixels, like `grid_sample`.
    """
    mode = _checks.check_choice("mode", mode, MODES)
    padding_mode = _checks.check_choice("padding_mode", padding_mode, PADDING_MODES)
    align_corners = _checks.check_align_corners(align_corners)
    input = _checks.as_array("input", input)  # noqa: A001
    channels_last = check_channel_axis(channel_axis, input.ndim)
    check_input(input, mode, channels_last)
    _checks.check_float_dtype("input", input)
    vectors = _check_axes(axes, input)

    # Internal order: one vector per spatial axis of the input (..., H, W).
    vectors = vectors[::-1]
    out_spatial = tuple(v.shape[1] for v in vectors)
    spatial = input.shape[1:-1] if channels_last else input.shape[2:]
    channels = input.shape[-1 if channels_last else 1]
    if channels_last:
        out_shape = input.shape[:1] + out_spatial + input.shape[-1:]
    else:
        out_shape = input.shape[:2] + out_spatial
    if 0 in out_shape:
        return jnp.zeros(out_shape, input.dtype)
    plans = _policy.separable_plans(mode, spatial, out_spatial, channels)
    config = Config(mode, padding_mode, align_corners, channels_last, plans)
    return _separable(input, vectors, config)


def _check_axes(axes, input: jax.Array) -> tuple[jax.Array, ...]:  # noqa: A002
    ndim = input.ndim - 2
    names = ", ".join(_AXIS_NAMES[:ndim])
    if not isinstance(axes, (tuple, list)):
        raise TypeError(
            f"axes must be a tuple ({names}) of arrays for a {input.ndim}-D input, "
            f"got {type(axes).__name__}"
        )
    if len(axes) != ndim:
        raise ValueError(
            f"axes must hold {ndim} vectors ({names}) for a {input.ndim}-D input, got {len(axes)}"
        )
    vectors = []
    for i, (name, v) in enumerate(zip(_AXIS_NAMES, axes, strict=False)):
        label = f"axes[{i}] ({name})"
        v = _checks.as_array(label, v)
        if v.ndim != 2:
            raise ValueError(f"{label} must have shape (N, {name.upper()}_out), got {v.shape}")
        if v.shape[0] != input.shape[0]:
            raise ValueError(
                f"{label} must have the batch size of input ({input.shape[0]}), "
                f"got {v.shape[0]} ({name} shape {v.shape})"
            )
        if v.dtype != input.dtype:
            raise TypeError(f"{label} must have the dtype of input ({input.dtype}), got {v.dtype}")
        vectors.append(v)
    return tuple(vectors)


@functools.partial(jax.jit, static_argnames=("config",))
def _separable(x: jax.Array, vectors: tuple[jax.Array, ...], config: Config) -> jax.Array:
    # Half types are computed in float32 and rounded once (SPEC decision 6).
    compute = jnp.promote_types(x.dtype, jnp.float32)
    vectors = tuple(v.astype(compute) for v in vectors)
    return _sample(x.astype(compute), vectors, config).astype(x.dtype)


class _Axis(NamedTuple):
    """One axis' taps for `(N, O)` output indices.

    Attributes:
      positions: per tap, `(N, O)` int32 input positions; ``S`` (one past the
        end) where the tap is invalid.
      weight: per tap, `(N, O)` weights, 0 where the tap is invalid (1 for
        nearest's one tap).
      nan: `(N, O)`, NaN where the coordinate is non-finite (its weights are
        NaN), else 0; None where no weight can be NaN (`_weights_can_be_nan`).
      vector: the `(N, O)` coordinates they come from.
    """

    positions: list[jax.Array]
    weight: list[jax.Array]
    nan: jax.Array | None
    vector: jax.Array


def _axis(v: jax.Array, size: int, config: Config, ndim: int) -> _Axis:
    num, tap_fn = TAP_FNS[config.mode]
    coords = unnormalize(v, size, config.align_corners, ndim)
    taps = [
        tap_fn(coords, size, config.padding_mode, config.align_corners, jnp.int32(k))
        for k in range(num)
    ]
    index = [jnp.where(t.valid, t.position, size).astype(jnp.int32) for t in taps]
    weights = [t.weight for t in taps if t.weight is not None]
    if not weights:
        return _Axis(index, [jnp.ones_like(v)], None, v)
    # grid_sample multiplies each invalid corner's weight by a zero read; a
    # NaN weight (non-finite coordinate) makes that NaN, in the value and in
    # the derivatives. The sum of the weights is NaN exactly then, and 0 * it
    # carries the same NaNs (and derivative NaNs) as those products.
    masked = [jnp.where(t.valid, w, 0.0) for t, w in zip(taps, weights, strict=True)]
    if not _weights_can_be_nan(config):
        return _Axis(index, masked, None, v)
    nan = functools.reduce(jnp.add, weights) * 0.0
    return _Axis(index, masked, nan, v)


def _with_nans(out: jax.Array, axes: list[_Axis], config: Config) -> jax.Array:
    """Puts grid_sample's NaNs (and their derivatives) where a coordinate is non-finite.

    There ``out`` is replaced by the outer product of the axes' NaN terms: 0
    or NaN, with the derivatives of grid_sample's invalid corners. Dropping
    ``out`` there also drops its cotangent, which may be NaN (a loss of a
    NaN output): a matmul would spread it through zero weights.
    """
    nans = [a.nan for a in axes if a.nan is not None]
    if not nans:  # no weight can be NaN: nothing to put
        return out
    # A coordinate's `nan` is NaN exactly where the coordinate is non-finite.
    # Testing that directly keeps the taps' arithmetic out of the passes over
    # the output, where XLA CPU repeated it for every element.
    finite = functools.reduce(
        jnp.logical_and,
        (
            _along(jnp.isfinite(a.vector), out.ndim, _spatial_dim(config, i))
            for i, a in enumerate(axes)
        ),
    )
    # NaN where non-finite, else 0: as `where(finite, out, product)`, the
    # select fed the transposed einsums and made them slow (XLA CPU fuses it
    # into the dots: mask pasting fwd+bwd 9 -> 20 ms).
    return jnp.where(finite, out, 0.0) + _outer_product(tuple(nans), finite, config)


def _weights_can_be_nan(config: Config) -> bool:
    """Whether a non-finite coordinate makes its taps' weights NaN.

    Bilinear (and trilinear) taps pad the coordinate first, and border and
    reflection padding send NaN and ±inf to a pixel (`_kernels._linear_tap`,
    `_coordinates.clip`); zeros padding keeps them, and bicubic weights come
    from the unpadded coordinate. Nearest has no weights.
    """
    return config.mode == "bicubic" or (config.mode != "nearest" and config.padding_mode == "zeros")


def _outer_product(nans: tuple[jax.Array, ...], finite: jax.Array, config: Config):
    """``prod_i nans[i]``, each `(N, O_i)` broadcast along its output axis to ``finite``'s shape.

    The value is 0 where ``finite``, else NaN (fused into the caller's
    pass); the tangent is an einsum, so that its transposes (the gradients)
    are matrix products. As broadcast multiplies they were reductions over
    the output, which XLA CPU hands to YNNPACK (session 8: mask pasting
    fwd+bwd 60 ms, against 9 with the einsums).
    """
    shape = finite.shape
    letters = "dhw"[-len(nans) :]
    spec = ",".join(f"n{c}" for c in letters) + f"->n{letters}"
    channel = len(shape) - 1 if config.channels_last else 1

    @jax.custom_jvp
    def product(finite, *nans):
        return jnp.where(finite, 0.0, jnp.nan).astype(nans[0].dtype)

    @product.defjvp
    def _(primals, tangents):
        finite, *nans = primals

        def outer(i, t):
            factors = (*nans[:i], t, *nans[i + 1 :])
            spatial = jnp.einsum(spec, *factors, precision=jax.lax.Precision.HIGHEST)
            return jnp.broadcast_to(jnp.expand_dims(spatial, channel), shape)

        terms = (outer(i, t) for i, t in enumerate(tangents[1:]))
        return product(*primals), functools.reduce(jnp.add, terms)

    return product(finite, *nans)


def _along(v: jax.Array, ndim: int, dim: int) -> jax.Array:
    """Reshapes an `(N, O)` array to broadcast along an ``ndim``-D array's axes 0 and ``dim``."""
    shape = [v.shape[0]] + [1] * (ndim - 1)
    shape[dim] = v.shape[1]
    return v.reshape(shape)


def _spatial_dim(config: Config, i: int) -> int:
    return (1 if config.channels_last else 2) + i


@functools.partial(jax.custom_jvp, nondiff_argnums=(2, 3))
def _matmul(x: jax.Array, v: jax.Array, dim: int, config: Config) -> jax.Array:
    """Resamples axis ``dim`` of ``x`` by a batched product with the `(N, O, S)` weight matrix."""
    a = _axis(v, x.shape[dim], config, x.ndim - 2)
    return _product(x, _matrix(a.positions, a.weight, x.shape[dim]), dim)


def _matrix(positions: list[jax.Array], weights: list[jax.Array], size: int) -> jax.Array:
    """The `(N, O, size)` matrix whose row o holds output o's valid taps at their positions.

    Built by comparisons with an iota, so that its derivative (and
    transpose) has no scatter.
    """
    iota = jnp.arange(size, dtype=jnp.int32)[None, None]
    terms = (
        jnp.where(i[..., None] == iota, w[..., None], 0.0)
        for i, w in zip(positions, weights, strict=True)
    )
    return functools.reduce(jnp.add, terms)


def _product(x: jax.Array, matrix: jax.Array, dim: int) -> jax.Array:
    """``matrix`` `(N, O, S)` applied along axis ``dim`` (of size S) of ``x``.

    Each product keeps ``x``'s axes in order, so that neither it nor its
    transpose moves the (large) output or cotangent: along the last axis
    ``x`` comes first, along others the matrix, batched over the axes before
    ``dim``. (With O moved into place after the product, XLA CPU transposed
    the whole cotangent for the gradient, 2.8 ms in a profile of mask
    pasting, whose fwd+bwd went from 7.0 to 6.6 ms without it.)
    """
    hi = jax.lax.Precision.HIGHEST
    if dim == x.ndim - 1:
        return jax.lax.dot_general(x, matrix, (((dim,), (2,)), ((0,), (0,))), precision=hi)
    n, size = x.shape[0], x.shape[dim]
    pre, post = math.prod(x.shape[1:dim]), x.shape[dim + 1 :]
    rows = x.reshape(n, pre, size, math.prod(post))
    if pre == 1:  # a plain batched product, without broadcasting the matrix
        y = jax.lax.dot_general(matrix, rows[:, 0], (((2,), (1,)), ((0,), (0,))), precision=hi)
    else:
        m = jnp.broadcast_to(matrix[:, None], (n, pre, *matrix.shape[1:]))
        y = jax.lax.dot_general(m, rows, (((3,), (2,)), ((0, 1), (0, 1))), precision=hi)
    return y.reshape(*x.shape[:dim], matrix.shape[1], *post)


@functools.partial(_matmul.defjvp, symbolic_zeros=True)
def _matmul_jvp(dim, config, primals, tangents):
    """The tangent w.r.t. the coordinates reads each tap's slices of ``x`` (gathers).

    ``d out = matrix . dx + (sum over taps of x's slice at the tap times the
    weight's slope) * dv``. The slopes are the weights' derivatives w.r.t.
    the coordinate, so that the axis gradient is one product of the
    cotangent with ones per axis. As autodiff of the matmul it was a product
    with the matrix's tangent, whose transpose was a second dense
    contraction of the output's cotangent. Mask pasting fwd+bwd, throwaway
    runs with bench.py's constant cotangent: 9.6-10 ms before; 9.8 with a
    tangent per tap's weight (a product with ones per tap); 7.0 with the
    slopes; 6.6 with `_product`'s layouts.
    """
    x, v = primals
    dx, dv = tangents
    size = x.shape[dim]

    def weights(v):
        return _axis(v, size, config, x.ndim - 2).weight

    a = _axis(v, size, config, x.ndim - 2)
    matrix = _matrix(a.positions, a.weight, size)
    out = _product(x, matrix, dim)
    terms = []
    if not isinstance(dx, SymbolicZero):
        terms.append(_product(dx, matrix, dim))
    if not isinstance(dv, SymbolicZero):
        _, slopes = jax.jvp(weights, (v,), (jnp.ones_like(v),))
        read = functools.reduce(
            jnp.add,
            (
                _take(x, i, dim) * _along(s, x.ndim, dim)
                for i, s in zip(a.positions, slopes, strict=True)
            ),
        )
        terms.append(read * _spread(dv, out.shape, dim))
    if not terms:
        return out, jnp.zeros_like(out)
    return out, functools.reduce(jnp.add, terms)


def _spread(v: jax.Array, shape: tuple[int, ...], dim: int) -> jax.Array:
    """``v`` `(N, O)` broadcast along the other axes of ``shape`` by an einsum with ones.

    Its transpose is then a matrix product with ones, not a reduction, which
    XLA CPU hands to YNNPACK (mask pasting fwd+bwd 1.1 ms slower).
    """
    letters = "abcdefgh"[: len(shape)]
    rest = "".join(c for k, c in enumerate(letters) if k not in (0, dim))
    ones = jnp.ones(tuple(s for k, s in enumerate(shape) if k not in (0, dim)), v.dtype)
    spec = f"{letters[0]}{letters[dim]},{rest}->{letters}"
    return jnp.einsum(spec, v, ones, precision=jax.lax.Precision.HIGHEST)


def _take(x: jax.Array, index: jax.Array, dim: int) -> jax.Array:
    """Per batch element, the slices of ``x`` at ``index`` `(N, O)` along ``dim``; 0 past S."""

    def take(xn, i):
        # Invalid taps read 0 from a fill-mode gather: never an input value
        # times a zero weight, so non-finite inputs stay where grid_sample
        # puts them.
        return jnp.take(xn, i, axis=dim - 1, mode="fill", fill_value=0)

    return jax.vmap(take)(x, index)


def _taps_pass(x: jax.Array, a: _Axis, dim: int) -> jax.Array:
    """Resamples axis ``dim`` of ``x`` by gathering each tap's slices and summing them weighted."""
    terms = (
        _take(x, i, dim) * _along(w, x.ndim, dim)
        for i, w in zip(a.positions, a.weight, strict=True)
    )
    return functools.reduce(jnp.add, terms)


def _kinds(formulation: str, ndim: int, channels_last: bool) -> tuple[str, ...]:
    """Per spatial axis, the pass that ``formulation`` (one of `_policy.SEPARABLE`) uses."""
    if formulation == "taps_rows":
        # Gathers along the last axis of a channels-first input read single
        # elements; a matmul does that axis instead.
        last = "taps" if channels_last else "matmul"
        return ("taps",) * (ndim - 1) + (last,)
    return (formulation,) * ndim


def _resample(x: jax.Array, axes: list[_Axis], config: Config, kinds: tuple[str, ...]) -> jax.Array:
    """All axes' passes over ``x``, in the cheapest order."""
    spatial = x.shape[1:-1] if config.channels_last else x.shape[2:]
    taps = len(axes[0].positions)
    cost = tuple(s if k == "matmul" else taps for s, k in zip(spatial, kinds, strict=True))
    out_spatial = tuple(a.positions[0].shape[1] for a in axes)
    # All matmuls: the outermost axis last, so that the gathers of its
    # coordinate tangent read whole rows (`_matmul_jvp`).
    last = 0 if set(kinds) == {"matmul"} else None
    for i in _policy.contraction_order(spatial, out_spatial, cost, last):
        dim = _spatial_dim(config, i)
        if kinds[i] == "matmul":
            x = _matmul(x, axes[i].vector, dim, config)
        else:
            x = _taps_pass(x, axes[i], dim)
    return x


def _expanded(x: jax.Array, vectors, config: Config) -> jax.Array:
    """`grid_sample` (its own plan and derivatives) on the grid that ``vectors`` span."""
    ndim = len(vectors)
    shape = (x.shape[0], *(v.shape[1] for v in vectors))
    coords = [jnp.broadcast_to(_along(v, ndim + 1, 1 + i), shape) for i, v in enumerate(vectors)]
    grid = jnp.stack(coords[::-1], axis=-1)  # grid order: x (the last axis) first
    channels = x.shape[-1 if config.channels_last else 1]
    plans = _policy.plans(config.mode, ndim, channels, config.channels_last)
    return sample_batch(x, grid, config._replace(plans=plans))


def _formulation(x: jax.Array, vectors, config: Config, formulation: str) -> jax.Array:
    """``formulation`` (`_policy.SEPARABLE`), with grid_sample's NaNs for non-finite coordinates.

    No `lax.cond` skips `_with_nans` for finite grids: XLA CPU ran the
    computations inside one at half speed (2x upsampling forward 13.7 ->
    27 ms; mask pasting fwd+bwd 11 ms, against 9 ms for `_with_nans`).
    """
    if formulation == "expanded":
        return _expanded(x, vectors, config)
    ndim = len(vectors)
    spatial = x.shape[1:-1] if config.channels_last else x.shape[2:]
    axes = [_axis(v, s, config, ndim) for v, s in zip(vectors, spatial, strict=True)]
    out = _resample(x, axes, config, _kinds(formulation, ndim, config.channels_last))
    return _with_nans(out, axes, config)


@functools.partial(jax.custom_jvp, nondiff_argnums=(2,))
def _sample(x: jax.Array, vectors: tuple[jax.Array, ...], config: Config) -> jax.Array:
    def value(plan):
        return functools.partial(_formulation, config=config, formulation=plan.forward)

    return per_platform(value, config.plans, x, vectors)


@_sample.defjvp
def _sample_jvp(config, primals, tangents):
    out = _sample(*primals, config)

    def derivative(plan):
        f = functools.partial(_formulation, config=config, formulation=plan.derivatives)

        def tangent(x, vectors, dx, dvectors):
            return jax.jvp(f, (x, vectors), (dx, dvectors))[1]

        return tangent

    return out, per_platform(derivative, config.plans, *primals, *tangents)
