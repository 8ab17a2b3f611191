"""RoIAlign's sampling: each box's samples per axis, and the sum over each bin.

A box's sample at (y, x) reads the bilinear taps of y along rows and of x along
columns, and is dropped when either lies outside [-1, size]: everything is a
product of per-axis terms, so each axis' samples are computed once, as
(K, P, S) arrays, and combined per bin by gathers of channel vectors.
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from jax_gridsample import _core

# A loop iteration reads 2 x 2 entries per bin (one sample's taps, or adaptive sampling's
# pixels): with a bin's 4 x 4 at once the gradient's scatter-add took 2.4x longer on XLA CPU.
ROWS = 2  # adaptive sampling's pixels per axis per iteration
# Iterations per axis of the short loops that adaptive sampling takes when they suffice.
FEW_CHUNKS = 4


class AxisSamples(NamedTuple):
    """Where the samples of every bin of every box lie along one spatial axis."""

    base: jax.Array  # (K, P) where each bin starts: start + p * bin
    bin: jax.Array  # (K, 1) bin size
    grid: jax.Array  # (K, 1) samples per bin (torchvision's roi_bin_grid), float
    size: jax.Array  # (K, 1) pixels along the axis in the box's map, int32
    ok: jax.Array  # (K, 1) whether the box places samples at all
    row0: jax.Array  # (K, P) adaptive: the first pixel a bin's samples read, int32
    rows: jax.Array  # (K, P) adaptive: how many pixels from `row0` on they read


class Taps(NamedTuple):
    """What one chunk of every bin reads along one axis: G taps of each of S entries.

    An entry is a sample (G = 2, its two bilinear taps) or, with adaptive
    sampling, one pixel (G = 1, the sum of the weights its samples give it).
    """

    pixel: jax.Array  # (K, P, S, G) int32 where along the axis
    weight: jax.Array  # (K, P, S, G)
    read: jax.Array  # (K, P, S) whether the entry is read at all


def axis_samples(
    start: jax.Array,
    length: jax.Array,
    pooled: int,
    size: jax.Array,
    sampling_ratio: int,
    ok: jax.Array,
) -> AxisSamples:
    """The samples along one axis of boxes starting at ``start`` (K,) with ``length`` (K,).

    ``size`` (K, 1) is the pixels along the axis of each box's map and ``ok``
    (K, 1) whether the box places samples at all.
    """
    bin_ = (length / pooled)[:, None]
    base = start[:, None] + jnp.arange(pooled, dtype=start.dtype)[None, :] * bin_
    none = jnp.zeros(base.shape, jnp.int32)
    if sampling_ratio > 0:
        return AxisSamples(base, bin_, jnp.full_like(bin_, sampling_ratio), size, ok, none, none)
    # ceil(bin) samples per bin; a non-positive bin (an aligned inverted box) has none.
    # Sample counts are constants to autodiff.
    grid = jnp.maximum(jnp.ceil(lax.stop_gradient(bin_)), 0)
    spacing = jnp.where(grid > 0, lax.stop_gradient(bin_) / jnp.maximum(grid, 1), 1)
    fixed = lax.stop_gradient(base)
    # Samples are spacing > 0.5 apart, so few land in [-1, size]; one spare on each side.
    lo = jnp.clip(jnp.floor((-1 - fixed) / spacing - 0.5) - 1, 0, grid)
    hi = jnp.clip(jnp.ceil((size - fixed) / spacing - 0.5) + 1, -1, grid - 1)
    first = jnp.where(jnp.isfinite(lo), lo, 0)
    reach = jnp.where(jnp.isfinite(hi - lo), jnp.maximum(hi - lo + 1, 0), 0)
    axis = AxisSamples(base, bin_, grid, size, ok, none, none)
    row0, rows = _pixel_span(axis, first, reach)
    return axis._replace(row0=row0, rows=rows)


def _pixel_span(
    axis: AxisSamples, first: jax.Array, reach: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """The pixels each bin's samples read, from its first valid sample's low tap to its last's
    high tap: valid samples are consecutive, and ``first`` and ``reach`` (K, P) hold them with
    a spare or two on each side."""
    spare = jnp.arange(4, dtype=axis.base.dtype)[None, None]
    low = _sample_positions(axis, first[..., None] + spare)
    high = _sample_positions(axis, (first + reach - 1)[..., None] - spare)
    row0 = jnp.min(jnp.where(low.read, low.pixel[..., 0], axis.size[..., None]), axis=-1)
    end = jnp.max(jnp.where(high.read, high.pixel[..., 1], -1), axis=-1)
    rows = jnp.where(end >= row0, end - row0 + 1, 0)
    return lax.stop_gradient(row0), lax.stop_gradient(rows)


def chunks_needed(axis: AxisSamples) -> jax.Array:
    """The number of chunks of `ROWS` pixels that cover every bin's pixels (a scalar)."""
    return jnp.max(-(-axis.rows // ROWS), initial=0).astype(jnp.int32)


def _sample_positions(axis: AxisSamples, i: jax.Array) -> Taps:
    """The taps of samples ``i`` (K, P, S) (float indices), computed as torchvision does."""
    # A box without samples divides by 1, so that no infinity reaches a gradient.
    grid = jnp.where(axis.grid > 0, axis.grid, 1)[..., None]
    pos = axis.base[..., None] + ((i + 0.5) * axis.bin[..., None]) / grid
    size = axis.size[..., None]
    valid = (i >= 0) & (i < axis.grid[..., None]) & (pos >= -1) & (pos <= size)
    valid = valid & axis.ok[..., None]
    y = jnp.where(valid & (pos > 0), pos, 0)
    low = jnp.floor(y)
    end = low >= size - 1
    low = jnp.where(end, size - 1, low)
    y = jnp.where(end, low, y)
    w_high = y - low
    low = low.astype(jnp.int32)
    high = jnp.where(end, low, low + 1)
    return Taps(jnp.stack([low, high], -1), jnp.stack([1 - w_high, w_high], -1), valid)


def sample_taps(axis: AxisSamples, chunk: jax.Array | int) -> Taps:
    """The taps of sample ``chunk`` of every bin (a fixed sampling_ratio), one entry each."""
    i = jnp.zeros((*axis.base.shape, 1), axis.base.dtype) + chunk
    return _sample_positions(axis, i)


def pixel_taps(axis: AxisSamples, chunk: jax.Array | int) -> Taps:
    """Pixels ``row0 + chunk * ROWS + j``, j < `ROWS`, each with the summed weights of the
    samples whose taps read it (adaptive sampling only).

    Adaptive samples are more than half a pixel apart, so at most 4 of a bin's
    samples read a pixel: those within one pixel of it. 7 candidates around
    them (3 spare) are evaluated exactly and the ones that read it kept.
    """
    pixel = axis.row0[..., None] + (chunk * ROWS + jnp.arange(ROWS, dtype=jnp.int32))[None, None]
    spacing = axis.bin / jnp.maximum(axis.grid, 1)
    below = (pixel - 1).astype(axis.base.dtype) - axis.base[..., None]
    first = jnp.floor(below / spacing[..., None] - 0.5) - 1
    # With 7 samples or fewer (a bin under 1 pixel included), candidates are all of them.
    first = jnp.clip(first, 0, jnp.maximum(axis.grid - 7, 0)[..., None])
    first = jnp.where(jnp.isfinite(first), first, 0)
    candidates = first[..., None] + jnp.arange(7, dtype=axis.base.dtype)[None, None, None]
    taps = _sample_positions(axis, candidates.reshape(*first.shape[:-1], ROWS * 7))
    index = taps.pixel.reshape(*candidates.shape, 2)
    reads = (index == pixel[..., None, None]) & taps.read.reshape(candidates.shape)[..., None]
    weight = jnp.sum(jnp.where(reads, taps.weight.reshape(index.shape), 0), axis=(-2, -1))
    index = jnp.minimum(pixel, axis.size[..., None] - 1)
    return Taps(index[..., None], weight[..., None], jnp.any(reads, axis=(-2, -1)))


def _bin_sums(
    flat: jax.Array, offset: jax.Array, rows: Taps, cols: Taps, width: jax.Array, stacked: bool
) -> jax.Array:
    """Sum over one chunk's entries of each bin: (K, PH, PW, C).

    Box k reads the (H_k, W_k) map stored row-major from row ``offset[k]`` of
    ``flat`` (M, C), ``width`` (K, 1) holding W_k.

    Each pair of entries adds its G x G taps in torchvision's order (a sample:
    ((w1 v1 + w2 v2) + w3 v3) + w4 v4); a pair not read adds nothing.
    ``stacked`` reads every tap with one gather, holding G * G * S * S values
    per bin, so that the gradient is one scatter-add: XLA CPU's fused sums of
    one scatter-add per tap gave wrong input gradients under `jit`. Otherwise
    one gather per tap fuses with the sum (the value).
    """
    offset, width = offset[:, None, None], width[:, :, None]
    (s_rows, g_rows), (s_cols, g_cols) = rows.pixel.shape[-2:], cols.pixel.shape[-2:]
    indices, weights = [], []
    for sy in range(s_rows):
        for sx in range(s_cols):
            for a in range(g_rows):
                for b in range(g_cols):
                    r, c = rows.pixel[:, :, None, sy, a], cols.pixel[:, None, :, sx, b]
                    indices.append(offset + r * width + c)
                    weights.append(rows.weight[:, :, None, sy, a] * cols.weight[:, None, :, sx, b])
    if stacked:
        values = jnp.take(flat, jnp.stack(indices), axis=0, mode="clip")
    else:
        values = [jnp.take(flat, i, axis=0, mode="clip") for i in indices]
    group = g_rows * g_cols
    total = None
    for s in range(s_rows * s_cols):
        term = None
        for t in range(group * s, group * (s + 1)):
            part = weights[t][..., None] * values[t]
            term = part if term is None else term + part
        assert term is not None
        sy, sx = divmod(s, s_cols)
        keep = rows.read[:, :, None, sy] & cols.read[:, None, :, sx]
        term = jnp.where(keep[..., None], term, 0)
        total = term if total is None else total + term
    assert total is not None
    return total


# Values from fused per-tap gathers, derivatives from the one stacked gather.
_SUMS = _core.value_and_derivatives(
    functools.partial(_bin_sums, stacked=False), functools.partial(_bin_sums, stacked=True)
)


class Layout(NamedTuple):
    """Where each box's map lies in the flat (M, C) buffer all maps are stored in."""

    offset: jax.Array  # (K,) the row of ``flat`` where the box's map starts
    height: jax.Array  # (K, 1) its H, int32
    width: jax.Array  # (K, 1) its W, int32
    scale: jax.Array | float  # (K, 1) or one spatial_scale for every box
    bounds: tuple[int, int]  # the largest H and W, static


def box_samples(coords: jax.Array, layout: Layout, options: tuple) -> tuple:
    """Per-axis samples of boxes (K, 4) and the divisor of each box's bins, (K, 1, 1, 1)."""
    (ph, pw), sampling_ratio, aligned = options
    ok = jnp.all(jnp.isfinite(coords), axis=1, keepdims=True)
    coords = jnp.where(ok, coords, 0)  # so that no NaN reaches a gradient through jnp.where
    start = coords[:, :2] * layout.scale - (0.5 if aligned else 0.0)
    length = coords[:, 2:] * layout.scale - (0.5 if aligned else 0.0) - start
    if not aligned:
        length = jnp.where(length < 1, 1, length)  # torchvision's std::max(length, 1)
    cols = axis_samples(start[:, 0], length[:, 0], pw, layout.width, sampling_ratio, ok)
    rows = axis_samples(start[:, 1], length[:, 1], ph, layout.height, sampling_ratio, ok)
    count = jnp.maximum(rows.grid * cols.grid, 1)[:, :, None, None]
    return rows, cols, count


def needed_chunks(rows: AxisSamples, cols: AxisSamples, sampling_ratio: int) -> tuple | None:
    """The chunks per axis that adaptive sampling takes for these boxes; None when fixed."""
    if sampling_ratio > 0:
        return None
    return chunks_needed(rows), chunks_needed(cols)


def pool_boxes(
    flat: jax.Array,
    coords: jax.Array,
    layout: Layout,
    options: tuple,
    needed: tuple[jax.Array, jax.Array] | None = None,
) -> jax.Array:
    """RoIAlign of boxes (K, 4) over the maps ``layout`` places in ``flat``: (K, PH, PW, C).

    ``options`` is ((PH, PW), sampling_ratio, aligned); ``needed`` the adaptive
    chunk counts when they are taken over more boxes than these.
    """
    rows, cols, count = box_samples(coords, layout, options)
    if needed is None:
        needed = needed_chunks(rows, cols, options[1])
    return pooled_sums(flat, layout, rows, cols, options[1], needed) / count


def pooled_sums(
    flat: jax.Array,
    layout: Layout,
    rows: AxisSamples,
    cols: AxisSamples,
    sampling_ratio: int,
    needed: tuple[jax.Array, jax.Array] | None,
) -> jax.Array:
    """Sum over every bin's samples, (K, PH, PW, C), in a loop over row and column chunks.

    A fixed ``sampling_ratio`` takes one sample per axis per iteration.
    Adaptive sampling takes the pixels the samples read, `ROWS` per axis per
    iteration: `FEW_CHUNKS` per axis when that covers every bin (``needed``,
    the chunks per axis, computed over every box of the call), else as many
    as the map may need, with the ones no bin needs skipped at run time.
    """

    def sums(row_taps: Taps, col_taps: Taps) -> jax.Array:
        return _SUMS(flat, layout.offset, row_taps, col_taps, layout.width)

    if sampling_ratio > 0:
        return _chunk_loops(sums, sample_taps, rows, cols, flat, (sampling_ratio,) * 2)
    assert needed is not None
    full = tuple(math.ceil(size / ROWS) for size in layout.bounds)
    few = tuple(min(n, FEW_CHUNKS) for n in full)

    def short() -> jax.Array:
        return _chunk_loops(sums, pixel_taps, rows, cols, flat, few)

    if few == full:
        return short()
    # The long loops skip at run time the chunks no bin needs, but in the gradient each
    # skipped one still adds a zero map to the features' cotangent: calls whose bins all
    # fit take the short loops, which run every iteration (skipping there measured slower).
    return lax.cond(
        (needed[0] <= few[0]) & (needed[1] <= few[1]),
        short,
        lambda: _chunk_loops(sums, pixel_taps, rows, cols, flat, full, needed),
    )


def _chunk_loops(
    sums, taps, rows: AxisSamples, cols: AxisSamples, flat: jax.Array, count, needed=None
):
    """The sum over ``count`` (static) row and column chunks, one pair per iteration,
    skipping those past ``needed`` (none when None); ``taps(axis, chunk)`` gives a
    chunk's `Taps`. One loop, not one per axis: the gradient then adds each iteration's
    scatter to the features' cotangent once."""

    def add(m, total):
        return total + sums(taps(rows, m // count[1]), taps(cols, m % count[1]))

    def body(m, total):
        if needed is None:
            return add(m, total)
        take = (m // count[1] < needed[0]) & (m % count[1] < needed[1])
        return lax.cond(take, functools.partial(add, m), lambda t: t, total)

    # The first pair, which reads nothing where no bin needs it, starts the sum, so that the
    # loop's carry is typed (batch sharding included) as its sums are.
    first = sums(taps(rows, 0), taps(cols, 0))
    return lax.fori_loop(1, count[0] * count[1], jax.checkpoint(body), first)
