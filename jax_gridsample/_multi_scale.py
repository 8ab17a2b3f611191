"""torchvision's MultiScaleRoIAlign as a function: each box pooled from the level its size picks.

Every level's map is stored in one flat buffer, so one RoIAlign pass serves
every box whatever its level: a box only carries where its map starts, its
size and its scale.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jax_gridsample import _checks, _core
from jax_gridsample._roi_align import (
    channel_blocks,
    channel_dim,
    check_flat_size,
    check_map,
    check_output_size,
    rois_of,
    spatial_size,
    to_channels_last,
)
from jax_gridsample._roi_sampling import Layout, box_samples, needed_chunks, pool_boxes


def multi_scale_roi_align(
    features: Sequence[jax.Array],
    boxes: jax.Array | Sequence[jax.Array],
    output_size: int | tuple[int, int],
    sampling_ratio: int,
    image_size: tuple[int, int],
    *,
    canonical_scale: float = 224,
    canonical_level: int = 4,
    channel_axis: int = 1,
) -> jax.Array:
    """torchvision.ops.MultiScaleRoIAlign as a function: roi_align from each box's level.

    Level ``l`` has the scale ``2 ** round(log2(H_l / image_size[0]))`` (its
    height decides, as in torchvision), and a box of area A goes to level
    ``floor(canonical_level + log2(sqrt(A) / canonical_scale) + 1e-6)``
    clamped to the levels there are, computed in the boxes' dtype (float32 for
    half types, as torchvision upcasts them). Each box is
    then `roi_align` of its level with that scale, ``aligned=False``. Values
    and input gradients equal torchvision's. See docs/semantics.md.

    Args:
        features: L >= 1 maps (N, C, H_l, W_l), finest first, whose scales are
            consecutive powers of two (each half the one before), one dtype;
            (N, H_l, W_l, C) with ``channel_axis=-1``.
        boxes: (x1, y1, x2, y2) in image coordinates, in the formats `roi_align`
            takes: (K, 5) rows with the batch index first, a sequence of
            N' <= N arrays (L_i, 4), or a (N, K, 4) array. The features' dtype.
        output_size: (PH, PW), or one int for both.
        sampling_ratio: samples per bin per axis; at most 0 for adaptive.
        image_size: (H, W) of the images the boxes refer to (torchvision takes
            the largest of the batch's image shapes).
        canonical_scale: the box side that maps to ``canonical_level``.
        canonical_level: the level of a box of side ``canonical_scale``.
        channel_axis: 1 (channels-first) or -1 (channels-last), for the
            features and the output alike.

    Returns:
        (K, C, PH, PW) in box order, or (N, K, C, PH, PW) for (N, K, 4) boxes;
        channels last with ``channel_axis=-1``.

    A box with a non-finite coordinate places no sample: its output is 0 and it
    adds nothing to any gradient. With two levels or more, so does a box of
    negative area, whose level is NaN (torchvision pools it from no level).
    """
    channels_last = _checks.check_channel_axis(channel_axis, 4)
    if not isinstance(features, (list, tuple)) or not features:
        raise TypeError(
            f"features must be a non-empty list or tuple of maps, got {type(features).__name__}"
            + (" of length 0" if isinstance(features, (list, tuple)) else "")
        )
    maps = [_checks.as_array(f"features[{i}]", f) for i, f in enumerate(features)]
    shapes = tuple(check_map(f"features[{i}]", f, channels_last) for i, f in enumerate(maps))
    for i, x in enumerate(shapes[1:], 1):
        if _dtype_n_c(x) != _dtype_n_c(shapes[0]):
            raise ValueError(
                f"features[{i}] must have the dtype, N and C of features[0] "
                f"({shapes[0].dtype}, {maps[0].shape}), got {x.dtype}, {maps[i].shape}"
            )
    check_flat_size("features", sum(math.prod(x.shape[:3]) for x in shapes))
    size = check_output_size(output_size)
    sampling_ratio = _checks.check_int("sampling_ratio", sampling_ratio)
    image_h = _image_height(image_size)
    if isinstance(canonical_scale, (bool, np.bool_)) or not (
        isinstance(canonical_scale, (int, float, np.integer, np.floating)) and canonical_scale > 0
    ):
        raise ValueError(f"canonical_scale must be a positive number, got {canonical_scale!r}")
    canonical_level = _checks.check_int("canonical_level", canonical_level)
    scales = level_scales([x.shape[1] for x in shapes], image_h)
    rois, batched = rois_of(boxes, maps[0])
    coords = rois if batched else rois[:, 1:]
    first = -round(math.log2(scales[0]))
    if len(shapes) == 1:
        levels = jnp.zeros(coords.shape[:-1], jnp.int32)  # torchvision maps no level then
    else:
        # torchvision computes box areas of half types in float32.
        wide = coords.astype(_core.compute_dtype(coords.dtype))
        levels = _levels(wide, first, first + len(shapes) - 1, canonical_scale, canonical_level)
    blocks = channel_blocks(shapes, sampling_ratio)
    options = (size, sampling_ratio, tuple(scales), channels_last, blocks)
    pool = _batched if batched else _rois
    fn = functools.partial(pool, levels=levels, options=options)
    out = _core.in_compute_dtype(fn, tuple(maps), rois)
    return out if channels_last else jnp.moveaxis(out, -1, -3)


def _dtype_n_c(shape: jax.ShapeDtypeStruct) -> tuple:
    """What every level must share: the dtype, N and C of its (N, H, W, C) shape."""
    return shape.dtype, shape.shape[0], shape.shape[3]


def _image_height(image_size: Any) -> int:
    if not isinstance(image_size, (tuple, list)) or len(image_size) != 2:
        raise ValueError(f"image_size must be a pair (H, W), got {image_size!r}")
    h, w = (_checks.check_int("image_size", v) for v in image_size)
    if h <= 0 or w <= 0:
        raise ValueError(f"image_size must be positive, got {image_size!r}")
    return h


def level_scales(heights: Sequence[int], image_height: int) -> list[float]:
    """Each level's scale as torchvision infers it, checked to halve from level to level."""
    # torchvision rounds the base-2 logarithm in float32.
    scales = [2.0 ** float(np.round(np.log2(np.float32(h / image_height)))) for h in heights]
    for i, scale in enumerate(scales[1:], 1):
        if scale != scales[0] / 2**i:
            raise ValueError(
                "features must be finest first with scales halving from level to level, got "
                f"scales {scales} from heights {list(heights)} and image height {image_height}"
            )
    return scales


@functools.partial(jax.jit, static_argnums=(1, 2, 3, 4))
def _levels(coords: jax.Array, k_min: int, k_max: int, canonical_scale, canonical_level):
    """Each box's level index, or -1 where its level is NaN."""
    area = (coords[..., 2] - coords[..., 0]) * (coords[..., 3] - coords[..., 1])
    level = jnp.floor(canonical_level + jnp.log2(jnp.sqrt(area) / canonical_scale) + 1e-6)
    level = jnp.clip(level, k_min, k_max)
    return jnp.where(jnp.isnan(level), -1, level - k_min).astype(jnp.int32)


def _layout(
    shapes: Sequence[tuple], scales: tuple, image: jax.Array, level: jax.Array, dtype: Any
) -> Layout:
    """Where each box's level map lies in the flat buffer of every level's maps."""
    sizes = [math.prod(s[1:3]) for s in shapes]
    starts = np.cumsum([0] + [math.prod(s[:3]) for s in shapes])[:-1]
    level = jnp.maximum(level, 0)

    def pick(values, dtype):
        # A select per level, not a gather, so that a batch-sharded level array stays local.
        out = jnp.zeros(level.shape, dtype)
        for i, value in enumerate(values):
            out = jnp.where(level == i, jnp.asarray(value, dtype), out)
        return out

    offset = pick(starts, jnp.int32) + image * pick(sizes, jnp.int32)
    height = pick([s[1] for s in shapes], jnp.int32)[:, None]
    width = pick([s[2] for s in shapes], jnp.int32)[:, None]
    bounds = (max(s[1] for s in shapes), max(s[2] for s in shapes))
    return Layout(offset, height, width, pick(scales, dtype)[:, None], bounds)


def _flat(xs: Sequence[jax.Array]) -> jax.Array:
    return jnp.concatenate([x.reshape(-1, x.shape[-1]) for x in xs])


@functools.partial(jax.jit, static_argnames="options")
def _rois(xs: tuple, rois: jax.Array, levels: jax.Array, options: tuple) -> jax.Array:
    size, sampling_ratio, scales, channels_last, blocks = options
    index = jnp.trunc(rois[:, 0])
    inside = (index >= 0) & (index < xs[0].shape[0]) & (levels >= 0)
    image = jnp.where(inside, index, 0).astype(jnp.int32)
    coords = jnp.where(inside[:, None], rois[:, 1:], jnp.nan)

    def pool(maps, image, coords, levels):
        maps = [to_channels_last(x, channels_last) for x in maps]
        layout = _layout([x.shape for x in maps], scales, image, levels, coords.dtype)
        return pool_boxes(_flat(maps), coords, layout, (size, sampling_ratio, False))

    axis = channel_dim(channels_last)
    return _core.in_channel_blocks(pool, blocks, axis, xs, image, coords, levels)


@functools.partial(jax.jit, static_argnames="options")
def _batched(xs: tuple, boxes: jax.Array, levels: jax.Array, options: tuple) -> jax.Array:
    size, sampling_ratio, scales, channels_last, blocks = options
    sampling = (size, sampling_ratio, False)
    shapes = [(1, *spatial_size(x, channels_last)) for x in xs]
    image = jnp.zeros(boxes.shape[1], jnp.int32)
    boxes = jnp.where((levels >= 0)[..., None], boxes, jnp.nan)

    def samples(b, level):
        return box_samples(b, _layout(shapes, scales, image, level, boxes.dtype), sampling)

    rows, cols, _ = jax.vmap(samples)(boxes, levels)
    # The chunk counts are taken over every image so that the skipping stays a conditional.
    needed = needed_chunks(rows, cols, sampling_ratio)

    def one_image(xi, b, level):
        flat = _flat([to_channels_last(x[None], channels_last) for x in xi])
        return pool_boxes(
            flat, b, _layout(shapes, scales, image, level, boxes.dtype), sampling, needed
        )

    def pool(maps, boxes, levels):
        return jax.vmap(one_image)(maps, boxes, levels)

    return _core.in_channel_blocks(pool, blocks, channel_dim(channels_last), xs, boxes, levels)
