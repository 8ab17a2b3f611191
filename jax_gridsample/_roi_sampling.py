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

# Samples per axis taken at once with adaptive sampling: a bin of it reads 4 x 4 taps.
CHUNK = 2
# Chunks per axis of the short loops that adaptive sampling takes when they suffice.
FEW_CHUNKS = 6


class AxisSamples(NamedTuple):
    """Where the samples of every bin of every box lie along one spatial axis."""

    base: jax.Array  # (K, P) where each bin starts: start + p * bin
    bin: jax.Array  # (K, 1) bin size
    grid: jax.Array  # (K, 1) samples per bin (torchvision's roi_bin_grid), float
    first: jax.Array  # (K, P) the first sample that can land in [-1, size]
    reach: jax.Array  # (K, P) how many samples from `first` on can land there
    size: jax.Array  # (K, 1) pixels along the axis in the box's map, int32
    ok: jax.Array  # (K, 1) whether the box places samples at all


class Taps(NamedTuple):
    """The two taps of each sample of one chunk along one axis, (K, P, S) each."""

    low: jax.Array
    high: jax.Array
    w_low: jax.Array
    w_high: jax.Array
    valid: jax.Array


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
    if sampling_ratio > 0:
        grid = jnp.full_like(bin_, sampling_ratio)
        first = jnp.zeros_like(base)
        reach = jnp.broadcast_to(grid, base.shape)
    else:
        # ceil(bin) samples per bin; a non-positive bin (an aligned inverted box) has none.
        # Sample counts are constants to autodiff.
        grid = jnp.maximum(jnp.ceil(lax.stop_gradient(bin_)), 0)
        spacing = jnp.where(grid > 0, lax.stop_gradient(bin_) / jnp.maximum(grid, 1), 1)
        base = lax.stop_gradient(base)
        # Samples are spacing > 0.5 apart, so few land in [-1, size]; one spare on each side.
        lo = jnp.clip(jnp.floor((-1 - base) / spacing - 0.5) - 1, 0, grid)
        hi = jnp.clip(jnp.ceil((size - base) / spacing - 0.5) + 1, -1, grid - 1)
        first = jnp.where(jnp.isfinite(lo), lo, 0)
        reach = jnp.where(jnp.isfinite(hi - lo), jnp.maximum(hi - lo + 1, 0), 0)
        base = start[:, None] + jnp.arange(pooled, dtype=start.dtype)[None, :] * bin_
    return AxisSamples(base, bin_, grid, first, reach, size, ok)


def chunks_needed(axis: AxisSamples, width: int) -> jax.Array:
    """The number of chunks of ``width`` samples that cover every bin's samples (a scalar)."""
    count = jnp.where(axis.ok, axis.reach, 0)
    return jnp.max(jnp.ceil(count / width), initial=0).astype(jnp.int32)


def max_chunks(size: int, width: int) -> int:
    """A static bound on `chunks_needed` when adaptive: 2 * size + 3 samples, two spare."""
    return math.ceil((2 * size + 5) / width)


def sample_taps(axis: AxisSamples, chunk: jax.Array | int, width: int) -> Taps:
    """Taps of samples ``first + chunk * width + j``, j < width, computed as torchvision does."""
    offsets = chunk * width + jnp.arange(width, dtype=axis.base.dtype)
    i = axis.first[..., None] + offsets[None, None]
    # A box without samples divides by 1, so that no infinity reaches a gradient.
    grid = jnp.where(axis.grid > 0, axis.grid, 1)[..., None]
    pos = axis.base[..., None] + ((i + 0.5) * axis.bin[..., None]) / grid
    size = axis.size[..., None]
    valid = (i < axis.grid[..., None]) & (pos >= -1) & (pos <= size) & axis.ok[..., None]
    y = jnp.where(valid & (pos > 0), pos, 0)
    low = jnp.floor(y)
    end = low >= size - 1
    low = jnp.where(end, size - 1, low)
    y = jnp.where(end, low, y)
    w_high = y - low
    low = low.astype(jnp.int32)
    high = jnp.where(end, low, low + 1)
    return Taps(low, high, 1 - w_high, w_high, valid)


def _bin_sums(
    flat: jax.Array, offset: jax.Array, rows: Taps, cols: Taps, width: jax.Array, stacked: bool
) -> jax.Array:
    """Sum over one chunk's samples of each bin: (K, PH, PW, C).

    Box k reads the (H_k, W_k) map stored row-major from row ``offset[k]`` of
    ``flat`` (M, C), ``width`` (K, 1) holding W_k.

    Each sample adds ((w1 v1 + w2 v2) + w3 v3) + w4 v4, in torchvision's order;
    a dropped sample reads nothing. ``stacked`` reads every tap with one gather,
    holding 4 * S * S values per bin, so that the gradient is one scatter-add:
    XLA CPU's fused sums of one scatter-add per tap gave wrong input gradients
    under `jit`. Otherwise one gather per tap fuses with the sum (the value).
    """
    offset, width = offset[:, None, None], width[:, :, None]
    indices, weights = [], []
    for sy in range(rows.low.shape[-1]):
        for sx in range(cols.low.shape[-1]):
            for r, wr in ((rows.low, rows.w_low), (rows.high, rows.w_high)):
                for c, wc in ((cols.low, cols.w_low), (cols.high, cols.w_high)):
                    indices.append(offset + r[:, :, None, sy] * width + c[:, None, :, sx])
                    weights.append(wr[:, :, None, sy] * wc[:, None, :, sx])
    if stacked:
        values = jnp.take(flat, jnp.stack(indices), axis=0, mode="clip")
    else:
        values = [jnp.take(flat, i, axis=0, mode="clip") for i in indices]
    total = None
    for s in range(len(indices) // 4):
        term = None
        for t in range(4 * s, 4 * s + 4):
            part = weights[t][..., None] * values[t]
            term = part if term is None else term + part
        assert term is not None
        sy, sx = divmod(s, cols.low.shape[-1])
        keep = rows.valid[:, :, None, sy] & cols.valid[:, None, :, sx]
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
    return chunks_needed(rows, CHUNK), chunks_needed(cols, CHUNK)


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
    """Sum over every bin's samples, (K, PH, PW, C).

    A fixed ``sampling_ratio`` of at most 4 takes all samples at once. Otherwise
    the samples go in chunks of `CHUNK` per axis, over a static number of
    chunks with the ones no box needs skipped at run time (``needed``, the
    chunks per axis, computed over every box of the call): `FEW_CHUNKS` per
    axis when that is enough, else as many as the map may need.
    """

    def sums(row_taps: Taps, col_taps: Taps) -> jax.Array:
        return _SUMS(flat, layout.offset, row_taps, col_taps, layout.width)

    if 0 < sampling_ratio <= 4:
        return sums(sample_taps(rows, 0, sampling_ratio), sample_taps(cols, 0, sampling_ratio))
    if sampling_ratio > 0:
        n = math.ceil(sampling_ratio / CHUNK)
        return _chunk_loops(sums, rows, cols, flat, (n, n), (n, n))
    assert needed is not None
    full = tuple(max_chunks(size, CHUNK) for size in layout.bounds)
    few = tuple(min(n, FEW_CHUNKS) for n in full)
    if few == full:
        return _chunk_loops(sums, rows, cols, flat, full, needed)
    # Each chunk skipped in the gradient still adds a zero map to the map's cotangent:
    # boxes that need few chunks take loops that are short as well.
    return lax.cond(
        (needed[0] <= few[0]) & (needed[1] <= few[1]),
        lambda: _chunk_loops(sums, rows, cols, flat, few, needed),
        lambda: _chunk_loops(sums, rows, cols, flat, full, needed),
    )


def _chunk_loops(sums, rows: AxisSamples, cols: AxisSamples, flat: jax.Array, count, needed):
    """The sum over ``count`` (static) row and column chunks, skipping those past ``needed``."""
    n_rows, n_cols = count
    need_rows, need_cols = needed
    shape = (*rows.base.shape, cols.base.shape[1], flat.shape[-1])
    zeros = jnp.zeros(shape, flat.dtype)

    def add_row_chunk(m_row, total):
        row_taps = sample_taps(rows, m_row, CHUNK)

        def add_col_chunk(m_col, total):
            def add(total):
                return total + sums(row_taps, sample_taps(cols, m_col, CHUNK))

            return lax.cond(m_col < need_cols, jax.checkpoint(add), lambda t: t, total)

        return lax.fori_loop(0, n_cols, add_col_chunk, total)

    body = jax.checkpoint(
        lambda m, total: lax.cond(m < need_rows, lambda t: add_row_chunk(m, t), lambda t: t, total)
    )
    return lax.fori_loop(0, n_rows, body, zeros)
