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
  Where a coordinate can be non-finite, `_matmuls_with_nans` routes
  grid_sample's NaNs through those same products and gathers. With zeros
  padding on wide outputs, `_windowed` computes them on the columns that
  the x taps reach, where those fit in half of them.
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
      Non-finite cotangents at outputs with finite coordinates spread the
      same way where the derivatives are matmuls: the gradient w.r.t.
      ``input`` is then non-finite at every pixel of that output's example
      and channel (`grid_sample`'s only at the pixels the output reads); the
      axis gradients are non-finite where `grid_sample`'s are. Except with
      zeros padding on outputs at least 256 wide (``W_out``), when the
      columns that each example's x taps reach fit in ``W_out // 2``
      consecutive ones and the input and coordinates are finite: the
      derivatives then read only those columns, and a non-finite cotangent
      at an output that no x tap reaches is not read (the input gradient is
      `grid_sample`'s; the axis gradients are 0 there, `grid_sample`'s and
      torch's NaN). In forward mode, where the derivatives are matmuls, a
      non-finite pixel of ``input``'s tangent makes the output's tangent
      non-finite on its whole example and channel (on the window's columns,
      where it is used).
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
    NaN output): a matmul would spread it through zero weights. For matmul
    passes along every axis, `_matmuls_with_nans` gives the same value and
    derivatives with a cheaper gradient.
    """
    nans = [a.nan for a in axes if a.nan is not None]
    if not nans:  # no weight can be NaN: nothing to put
        return out
    # A coordinate's `nan` is NaN exactly where the coordinate is non-finite.
    # Testing that directly keeps the taps' arithmetic out of the passes over
    # the output, where XLA CPU repeated it for every element.
    finite = functools.reduce(jnp.logical_and, _finite([a.vector for a in axes], out.ndim, config))
    # NaN where non-finite, else 0: as `where(finite, out, product)`, the
    # select fed the transposed einsums and made them slow (XLA CPU fuses it
    # into the dots: mask pasting fwd+bwd 9 -> 20 ms).
    return jnp.where(finite, out, 0.0) + _outer_product(tuple(nans), finite, config)


@functools.partial(jax.custom_jvp, nondiff_argnums=(2,))
def _matmuls_with_nans(x: jax.Array, vectors: tuple[jax.Array, ...], config: Config) -> jax.Array:
    """`_with_nans` of matmul passes along every axis; the same value and tangent.

    Its tangent (`_matmuls_with_nans_jvp`) is arranged so that the gradient
    reads the output's cotangent three times (a select, the last pass'
    product, the last axis' gathers) instead of five.
    """
    ndim = len(vectors)
    dims = [_spatial_dim(config, i) for i in range(ndim)]
    axes = [_axis(v, x.shape[d], config, ndim) for v, d in zip(vectors, dims, strict=True)]
    out = _resample(x, axes, config, ("matmul",) * ndim)
    finite = functools.reduce(jnp.logical_and, _finite(vectors, out.ndim, config))
    return jnp.where(finite, out, jnp.nan)


@functools.partial(_matmuls_with_nans.defjvp, symbolic_zeros=True)
def _matmuls_with_nans_jvp(config, primals, tangents):
    """Puts each NaN term where its transpose joins a pass that the gradient makes anyway.

    `_with_nans`'s tangent is the passes' tangent at finite points, NaN
    elsewhere, plus per axis the outer product of the other axes' NaN terms
    with the tangent of its own (0 or NaN): that carries grid_sample's NaNs
    into the axis gradients, but transposed it is one more contraction of
    the whole cotangent per axis. Here, with the last pass along axis ``L``:

    * the other axes' products enter the last pass' product as one more
      input slice, with the NaN term of ``L`` as its column of the weight
      matrix: the transpose of that product, which the input gradient
      needs, carries them;
    * ``L``'s own is folded into the slices that its coordinate tangent
      reads (as in `_matmul_jvp`): one gather-multiply pass over the
      cotangent for both (`_nan_slope`);
    * selects make the tangent NaN at non-finite points after the earlier
      passes and after the last pass' product, so that the transpose zeroes
      the cotangent there before a product could spread a NaN of it (a loss
      of a NaN output) to the input gradient.

    Mask pasting fwd+bwd (16x1x28x28 -> 300x500, bench.py's constant
    cotangent; throwaway A/B, 40 interleaved rounds, fastest (median)):
    6.5 (8.4) ms with `_with_nans`, whose two transposed einsums took 0.7 ms
    each in a profile; 6.0 (7.6) with this; 4.9 (7.3) with `_s_first`'s
    layout too.
    """
    x, vectors = primals
    dx, dvs = tangents
    ndim = len(vectors)
    dims = [_spatial_dim(config, i) for i in range(ndim)]
    sizes = [x.shape[d] for d in dims]
    axes = [_axis(v, s, config, ndim) for v, s in zip(vectors, sizes, strict=True)]
    *early, last = _order(x, axes, config, ("matmul",) * ndim)
    dim, a = dims[last], axes[last]
    live = [not isinstance(t, SymbolicZero) for t in dvs]

    def passes(x, *vs):
        for i, v in zip(early, vs, strict=True):
            x = _matmul(x, v, dims[i], config)
        return x

    early_vs = tuple(vectors[i] for i in early)
    if isinstance(dx, SymbolicZero) and not any(live[i] for i in early):
        mid, dmid = passes(x, *early_vs), None
    else:
        ts = tuple(_instantiate(t) for t in (dx, *(dvs[i] for i in early)))
        mid, dmid = jax.jvp(passes, (x, *early_vs), ts)

    finite = _finite(vectors, x.ndim, config)
    rest = functools.reduce(jnp.logical_and, [finite[i] for i in early])
    everywhere = rest & finite[last]
    out = jnp.where(everywhere, _product(mid, _matrix(a, sizes[last], False), dim, False), jnp.nan)
    # The NaN terms' values (NaN exactly at non-finite coordinates, tested)
    # by `isfinite`: XLA CPU fused each axis' tap arithmetic, repeated, into
    # the passes over the output that read them.
    nans = [jnp.where(jnp.isfinite(v), 0.0, jnp.nan).astype(x.dtype) for v in vectors]
    nan_terms = [_nan_term(s, config, ndim) for s in sizes]

    def others(i):  # the product of the earlier axes' NaN terms, but i's
        factors = [_along(nans[j], x.ndim, dims[j]) for j in early if j != i]
        return functools.reduce(jnp.multiply, factors, jnp.ones((), x.dtype))

    tangent = jnp.where(everywhere, 0.0, jnp.nan).astype(x.dtype)
    if dmid is not None:
        dmid = jnp.where(rest, dmid, jnp.nan)
        terms = [
            others(i) * _along(_nan_tangent(vectors[i], dvs[i], nan_terms[i]), x.ndim, dims[i])
            for i in early
            if live[i]
        ]
        if terms:
            shape = (*mid.shape[:dim], 1, *mid.shape[dim + 1 :])
            extra = jnp.broadcast_to(functools.reduce(jnp.add, terms), shape)
            dmid = jnp.concatenate([dmid, extra], axis=dim)
        s_first = _s_first(dim, mid.shape, True)
        matrix = _matrix(a, sizes[last], s_first, nans[last] if terms else None)
        tangent = jnp.where(finite[last], _product(dmid, matrix, dim, s_first), jnp.nan)
    if live[last]:
        read = _read(mid, a, vectors[last], dim, config)
        slope, keep = (_along(t, x.ndim, dim) for t in _nan_slope(vectors[last], nan_terms[last]))
        term = jnp.where(everywhere, read, 0.0) + jnp.where(keep, slope * others(last), 0.0)
        spread = _spread(dvs[last], out.shape, dim)
        tangent = tangent + jnp.where(everywhere | keep, term * spread, 0.0)
    return out, tangent


def _instantiate(t):
    """A tangent, with a symbolic zero made an array."""
    if isinstance(t, SymbolicZero):
        aval: jax.core.ShapedArray = t.aval  # type: ignore[assignment]
        return jnp.zeros(aval.shape, aval.dtype)
    return t


def _nan_term(size: int, config: Config, ndim: int):
    """`_axis`'s `nan` term as a function of the coordinates (``ndim`` spatial axes)."""
    return lambda v: _axis(v, size, config, ndim).nan


def _nan_tangent(v: jax.Array, dv: jax.Array, nan_term) -> jax.Array:
    """The tangent of an axis' `nan` term along ``dv``: 0, or NaN at some non-finite coordinates."""
    return jax.jvp(nan_term, (v,), (dv,))[1]


def _nan_slope(v: jax.Array, nan_term) -> tuple[jax.Array, jax.Array]:
    """How the transpose of `_nan_tangent` maps a cotangent ``c``: ``where(keep, slope * c, 0)``.

    ``slope`` is 0 or NaN. Where ``keep`` is False a select in the chain
    (`_coordinates._split` at ±inf) stops even a NaN cotangent; forward
    mode does not show that (a NaN factor after the select multiplies its
    zero tangent), so both come from the transpose itself. They depend only
    on whether the coordinate is NaN, +inf, -inf or finite (0 and True;
    `test_nan_slope_depends_only_on_the_coordinates_class`): the transpose
    is taken of those three values, and the coordinates pick theirs by
    comparisons. Computed per coordinate, XLA CPU repeated the arithmetic
    for every element of the output (bicubic zoom fwd+bwd 1.4x slower).
    """
    specials = jnp.array([[jnp.nan, jnp.inf, -jnp.inf]], v.dtype)
    _, transpose = jax.vjp(nan_term, specials)
    (slopes,) = transpose(jnp.ones_like(specials))
    (passed,) = transpose(jnp.full_like(specials, jnp.nan))
    classes = [jnp.isnan(v), v == jnp.inf, v == -jnp.inf]
    slope = jnp.select(classes, list(slopes[0]), jnp.zeros((), v.dtype))
    keep = jnp.select(classes, list(jnp.isnan(passed[0])), jnp.bool_(True))
    return slope, keep


def _read(x: jax.Array, a: _Axis, v: jax.Array, dim: int, config: Config) -> jax.Array:
    """The derivative of a pass along ``dim`` w.r.t. its coordinates ``v``, per output element.

    The sum over taps of ``x``'s slice at the tap times the derivative of
    the tap's (masked) weight w.r.t. the coordinate.
    """
    size, ndim = x.shape[dim], x.ndim - 2
    slopes = jax.jvp(lambda v: _axis(v, size, config, ndim).weight, (v,), (jnp.ones_like(v),))[1]
    terms = (
        _take(x, i, dim) * _along(s, x.ndim, dim) for i, s in zip(a.positions, slopes, strict=True)
    )
    return functools.reduce(jnp.add, terms)


def _finite(vectors, ndim: int, config: Config) -> list[jax.Array]:
    """Per axis, ``isfinite`` of its coordinates, shaped to broadcast along its own axis."""
    return [_along(jnp.isfinite(v), ndim, _spatial_dim(config, i)) for i, v in enumerate(vectors)]


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
    """Resamples axis ``dim`` of ``x`` by a batched product with the axis' weight matrix."""
    a = _axis(v, x.shape[dim], config, x.ndim - 2)
    return _product(x, _matrix(a, x.shape[dim], False), dim, False)


def _s_first(dim: int, shape: tuple[int, ...], transposed: bool) -> bool:
    """Whether the weight matrix of a product along ``dim`` is best laid out `(N, S, O)`.

    Only for the transpose (``transposed``: a tangent, in a gradient) of a
    product along an axis other than the last, where the matrix is the left
    operand, and without axes before ``dim`` to broadcast it over (C = 1,
    channels first). XLA CPU's batched dots ran fastest with the left
    operand contracted along its last axis: mask pasting's 16x300x500
    cotangent's product with the y weights took 2.0 ms as `(N, O, S)`, 1.2
    as `(N, S, O)`. Elsewhere `(N, O, S)`: along the last axis `(N, S, O)`
    sped up the masks' value product (0.57 -> 0.39 ms) but slowed down the
    8x3x128x128 bicubic zoom's (forward 2.2 -> 2.4 ms; fwd+bwd 7.5 -> 8.3
    with the second build of the matrix that a gradient needs); and where
    the matrix is broadcast over channels, XLA fused its tap arithmetic into
    the broadcast (zoom fwd+bwd 7.7 -> 10.5 ms).
    """
    return transposed and dim != len(shape) - 1 and math.prod(shape[1:dim]) == 1


def _matrix(a: _Axis, size: int, s_first: bool, column: jax.Array | None = None) -> jax.Array:
    """The axis' `(N, O, size)` weight matrix (`(N, size, O)` if ``s_first``).

    Row o holds output o's valid taps at their positions. Built by
    comparisons with an iota, so that its derivative (and transpose) has no
    scatter. A `(N, O)` ``column`` is appended at position ``size``.
    """
    o, s = (-1, -2) if s_first else (-2, -1)  # the O and S axes of the layout
    rows = size if column is None else size + 1
    iota = jnp.expand_dims(jnp.arange(rows, dtype=jnp.int32), (0, o))
    terms = (
        jnp.where(jnp.expand_dims(i, s) == iota, jnp.expand_dims(w, s), 0.0)
        for i, w in zip(a.positions, a.weight, strict=True)
    )
    matrix = functools.reduce(jnp.add, terms)
    if column is not None:  # invalid taps (at position ``size``) have weight 0
        matrix = jnp.where(iota == size, jnp.expand_dims(column, s), matrix)
    return matrix


def _product(x: jax.Array, matrix: jax.Array, dim: int, s_first: bool) -> jax.Array:
    """A `_matrix` (laid out S-first or not) applied along axis ``dim`` (of size S) of ``x``.

    Each product keeps ``x``'s axes in order, so that neither it nor its
    transpose moves the (large) output or cotangent: along the last axis
    ``x`` comes first, along others the matrix, batched over the axes before
    ``dim``. (With O moved into place after the product, XLA CPU transposed
    the whole cotangent for the gradient, 2.8 ms in a profile of mask
    pasting, whose fwd+bwd went from 7.0 to 6.6 ms without it.)
    """
    hi = jax.lax.Precision.HIGHEST
    s_axis, o_axis = (1, 2) if s_first else (2, 1)
    if dim == x.ndim - 1:
        return jax.lax.dot_general(x, matrix, (((dim,), (s_axis,)), ((0,), (0,))), precision=hi)
    n, size = x.shape[0], x.shape[dim]
    pre, post = math.prod(x.shape[1:dim]), x.shape[dim + 1 :]
    rows = x.reshape(n, pre, size, math.prod(post))
    if pre == 1:  # a plain batched product, without broadcasting the matrix
        y = jax.lax.dot_general(matrix, rows[:, 0], (((s_axis,), (1,)), ((0,), (0,))), precision=hi)
    else:
        m = jnp.broadcast_to(matrix[:, None], (n, pre, *matrix.shape[1:]))
        y = jax.lax.dot_general(m, rows, (((s_axis + 1,), (2,)), ((0, 1), (0, 1))), precision=hi)
    return y.reshape(*x.shape[:dim], matrix.shape[o_axis], *post)


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

    a = _axis(v, size, config, x.ndim - 2)
    matrix = _matrix(a, size, False)
    out = _product(x, matrix, dim, False)
    terms = []
    if not isinstance(dx, SymbolicZero):
        s_first = _s_first(dim, x.shape, True)
        laid_out = _matrix(a, size, True) if s_first else matrix
        terms.append(_product(dx, laid_out, dim, s_first))
    # Nearest's weights have zero slopes (SPEC decision 2): no term. It made
    # the tangent NaN at a NaN x coordinate for some inputs (forward mode;
    # `test_windowed_derivatives_equal_every_column`, nearest).
    if not isinstance(dv, SymbolicZero) and config.mode != "nearest":
        terms.append(_read(x, a, v, dim, config) * _spread(dv, out.shape, dim))
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
    for i in _order(x, axes, config, kinds):
        dim = _spatial_dim(config, i)
        if kinds[i] == "matmul":
            x = _matmul(x, axes[i].vector, dim, config)
        else:
            x = _taps_pass(x, axes[i], dim)
    return x


def _order(
    x: jax.Array, axes: list[_Axis], config: Config, kinds: tuple[str, ...]
) -> tuple[int, ...]:
    """The order of `_resample`'s passes (`_policy.contraction_order`)."""
    spatial = x.shape[1:-1] if config.channels_last else x.shape[2:]
    taps = len(axes[0].positions)
    cost = tuple(s if k == "matmul" else taps for s, k in zip(spatial, kinds, strict=True))
    out_spatial = tuple(a.positions[0].shape[1] for a in axes)
    # All matmuls: the outermost axis last, so that the gathers of its
    # coordinate tangent read whole rows (`_matmul_jvp`).
    last = 0 if set(kinds) == {"matmul"} else None
    return _policy.contraction_order(spatial, out_spatial, cost, last)


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
    kinds = _kinds(formulation, ndim, config.channels_last)
    if set(kinds) == {"matmul"} and _weights_can_be_nan(config):
        return _matmuls_with_nans(x, tuple(vectors), config)
    out = _resample(x, axes, config, kinds)
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

        width = _window_width(config, plan, out.shape)
        return functools.partial(_windowed, tangent, width, config) if width else tangent

    return out, per_platform(derivative, config.plans, *primals, *tangents)


def _window_width(config: Config, plan: _policy.Plan, out_shape: tuple[int, ...]) -> int:
    """The width of `_windowed`'s window for these derivatives; 0 for none.

    Half the output's last spatial axis, with zeros padding and matmul
    derivatives (whose passes read the whole cotangent) on outputs at least
    `_WINDOW_MIN_WIDTH` wide: a choice, not a measurement (it was timed on
    500 columns, mask pasting and the seed's paste), that keeps the
    conditional away from small outputs.
    """
    columns = out_shape[_spatial_dim(config, len(out_shape) - 3)]
    if config.padding_mode != "zeros" or plan.derivatives != "matmul":
        return 0
    return columns // 2 if columns >= _WINDOW_MIN_WIDTH else 0


_WINDOW_MIN_WIDTH = 256


def _windowed(tangent, width: int, config: Config, x, vectors, dx, dvectors) -> jax.Array:
    """``tangent`` over a window of ``width`` output columns per example, where that is exact.

    With zeros padding, an output column (index along the last spatial
    axis) whose taps all fall outside the input adds nothing to the
    derivatives: grid_sample skips invalid corners whatever the cotangent.
    When every example's columns that some tap reaches fit in ``width``
    consecutive ones, and the coordinates and input are finite (whose
    non-finite values `_formulation` spreads through the matmuls), the
    tangent is computed on that window and placed into zeros: its transpose
    reads the window of the cotangent (a gather), so that the gradient's
    passes over the cotangent read ``width`` of its columns. Else ``tangent``
    on every column. Mask pasting (boxes 21-237 of 500 columns wide) fwd+bwd
    in benchmarks/README.md, session 17. Both branches are rematerialised
    (`jax.checkpoint`), so that a gradient keeps the conditional's operands
    from the forward pass, not each branch's intermediates (the untaken
    one's filled with zeros); the mask-pasting gradient took the same time
    either way (3.35 and 3.40 ms medians, 60 interleaved calls).
    """
    dim = _spatial_dim(config, len(vectors) - 1)
    v, size, n_out = vectors[-1], x.shape[dim], vectors[-1].shape[1]
    reached = functools.reduce(
        jnp.logical_or, (p < size for p in _axis(v, size, config, len(vectors)).positions)
    )
    first = jnp.argmax(reached, axis=1)
    span = n_out - jnp.argmax(reached[:, ::-1], axis=1) - first
    span = jnp.where(jnp.any(reached, axis=1), span, 0)
    start = jnp.minimum(first, n_out - width)
    fits = functools.reduce(
        jnp.logical_and, (jnp.all(jnp.isfinite(a)) for a in (x, *vectors)), jnp.all(span <= width)
    )

    def crop(u):  # (N, O) -> (N, width): as a gather (vmap), its transpose scatters
        # One slice per example, unrolled: jax 0.8.0 could not transpose the
        # `lax.map` of these slices inside the conditional.
        slices = [jax.lax.dynamic_slice_in_dim(u[n], start[n], width) for n in range(len(u))]
        return jnp.stack(slices)

    def place(tn, s):  # vmapped, a scatter here and a gather in the gradient
        zeros = jnp.zeros((*tn.shape[: dim - 1], n_out, *tn.shape[dim:]), tn.dtype)
        return jax.lax.dynamic_update_slice_in_dim(zeros, tn, s, dim - 1)

    def windowed(x, vectors, dx, dvectors):
        cropped = (*vectors[:-1], crop(vectors[-1]))
        t = tangent(x, cropped, dx, (*dvectors[:-1], crop(dvectors[-1])))
        return jax.vmap(place)(t, start)

    return jax.lax.cond(
        fits, jax.checkpoint(windowed), jax.checkpoint(tangent), x, vectors, dx, dvectors
    )
