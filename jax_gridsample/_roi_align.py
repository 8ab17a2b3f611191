"""torchvision's roi_align: a fixed grid of bilinear averages over each box."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jax_gridsample import _checks, _core, _policy
from jax_gridsample._roi_sampling import Layout, box_samples, needed_chunks, pool_boxes


def roi_align(
    input: jax.Array,  # noqa: A002 -- torchvision's argument name
    boxes: jax.Array | Sequence[jax.Array],
    output_size: int | tuple[int, int],
    spatial_scale: float = 1.0,
    sampling_ratio: int = -1,
    aligned: bool = False,
    *,
    channel_axis: int = 1,
) -> jax.Array:
    """torchvision.ops.roi_align: average bilinear samples over a grid of bins in each box.

    Values equal torchvision's CPU kernel's, and so do the input gradients.
    See docs/semantics.md for every rule.

    Args:
        input: (N, C, H, W) features, or (N, H, W, C) with ``channel_axis=-1``;
            float16, bfloat16, float32 or float64 (half types are computed in
            float32 and rounded once).
        boxes: (x1, y1, x2, y2) boxes in input-image coordinates, in one of
            three formats: a (K, 5) array of rows (batch index, x1, y1, x2, y2);
            a sequence of N' <= N arrays (L_i, 4), the boxes of image i; or a
            (N, K, 4) array, K boxes per image. The dtype must be the input's.
        output_size: (PH, PW), or one int for both.
        spatial_scale: multiplies the box coordinates into input pixels.
        sampling_ratio: samples per bin per axis; at most 0 for adaptive,
            ceil(box size / output size) per axis and box, exact under `jit`.
        aligned: shift the box by -0.5 pixel (pixel centres at integers).
        channel_axis: 1 (channels-first) or -1 (channels-last), for the input
            and the output alike.

    Returns:
        (K, C, PH, PW) in box order for the first two formats, (N, K, C, PH, PW)
        for the third; channels last with ``channel_axis=-1``.

    A box with a non-finite coordinate, or (traced) a batch index outside
    [0, N), places no sample: its output is 0 and it adds nothing to any
    gradient. Gradients with respect to the boxes are JAX's autodiff of the
    same formula with the sample counts held constant; they are undefined
    where a sample crosses a pixel, the border or the clamp at 0 and H - 1.
    """
    channels_last = _checks.check_channel_axis(channel_axis, 4)
    input = _checks.as_array("input", input)  # noqa: A001
    shape = check_map("input", input, channels_last)
    check_flat_size("input", shape.shape[0] * shape.shape[1] * shape.shape[2])
    size = check_output_size(output_size)
    spatial_scale = _check_scale(spatial_scale)
    sampling_ratio = _checks.check_int("sampling_ratio", sampling_ratio)
    if not isinstance(aligned, (bool, np.bool_)):
        raise TypeError(f"aligned must be a bool, got {type(aligned).__name__} ({aligned!r})")
    rois, batched = rois_of(boxes, input)
    options = (size, spatial_scale, sampling_ratio, bool(aligned))
    options += (channels_last, channel_blocks([shape], sampling_ratio))
    pool = _batched if batched else _rois
    out = _core.in_compute_dtype(functools.partial(pool, options=options), input, rois)
    return out if channels_last else jnp.moveaxis(out, -1, -3)


def check_map(name: str, input: jax.Array, channels_last: bool) -> jax.ShapeDtypeStruct:  # noqa: A002
    """The shape as (N, H, W, C), and the dtype, of a checked 4-D floating feature map."""
    _checks.check_float_dtype(name, input)
    if input.ndim != 4:
        layout = "(N, H, W, C)" if channels_last else "(N, C, H, W)"
        raise ValueError(
            f"{name} must be 4-D, {layout}, got {input.ndim}-D with shape {input.shape}"
        )
    n, c, h, w = (input.shape[i] for i in ((0, 3, 1, 2) if channels_last else (0, 1, 2, 3)))
    if h == 0 or w == 0:
        raise ValueError(f"{name} must have non-empty spatial dimensions, got shape {input.shape}")
    return jax.ShapeDtypeStruct((n, h, w, c), input.dtype)


def to_channels_last(x: jax.Array, channels_last: bool) -> jax.Array:
    """A map (N, C, H, W), or (N, H, W, C) when ``channels_last``, as (N, H, W, C)."""
    return x if channels_last else jnp.moveaxis(x, 1, -1)


def channel_dim(channels_last: bool) -> int:
    """The channel axis of a map (N, C, H, W), or (N, H, W, C) when ``channels_last``."""
    return 3 if channels_last else 1


def spatial_size(x: jax.Array, channels_last: bool) -> tuple[int, int]:
    """(H, W) of a map (N, C, H, W), or (N, H, W, C) when ``channels_last``."""
    return (x.shape[1], x.shape[2]) if channels_last else (x.shape[2], x.shape[3])


def channel_blocks(maps: Sequence[jax.ShapeDtypeStruct], sampling_ratio: int) -> int:
    """The blocks of channels the value pools maps of shapes (N, H, W, C) in."""
    pixels = sum(x.shape[0] * x.shape[1] * x.shape[2] for x in maps)
    itemsize = _core.compute_dtype(maps[0].dtype).itemsize
    return _policy.roi_channel_blocks(pixels, maps[0].shape[3], itemsize, sampling_ratio)


def check_flat_size(name: str, pixels: int) -> None:
    """Taps are int32 rows of one buffer holding every pixel of every image (and level)."""
    if pixels > 2**31 - 1:
        raise ValueError(f"{name} must hold at most 2**31 - 1 pixels (N * H * W), got {pixels}")


def check_output_size(output_size: Any) -> tuple[int, int]:
    """Returns (PH, PW) from an int or a pair of positive ints."""
    pair = output_size if isinstance(output_size, (tuple, list)) else (output_size, output_size)
    if len(pair) != 2:
        raise ValueError(f"output_size must be an int or a pair (PH, PW), got {output_size!r}")
    ph, pw = (_checks.check_int("output_size", v) for v in pair)
    if ph <= 0 or pw <= 0:
        raise ValueError(f"output_size must be positive, got {output_size!r}")
    return ph, pw


def _check_scale(spatial_scale: Any) -> float:
    if isinstance(spatial_scale, (bool, np.bool_)) or not isinstance(
        spatial_scale, (int, float, np.integer, np.floating)
    ):
        raise TypeError(
            f"spatial_scale must be a Python or NumPy number, got "
            f"{type(spatial_scale).__name__} ({spatial_scale!r})"
        )
    if not np.isfinite(spatial_scale):
        raise ValueError(f"spatial_scale must be finite, got {spatial_scale!r}")
    return float(spatial_scale)


def _concrete(a: jax.Array) -> np.ndarray | None:
    try:
        return np.asarray(a)
    except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError):
        return None


def rois_of(boxes: Any, input: jax.Array) -> tuple[jax.Array, bool]:  # noqa: A002
    """The boxes as a (K, 5) array, or the (N, K, 4) array and True; checked."""
    n = input.shape[0]
    if isinstance(boxes, (list, tuple)):
        parts = [_checks.as_array(f"boxes[{i}]", b) for i, b in enumerate(boxes)]
        if len(parts) > n:
            raise ValueError(f"boxes must have at most N = {n} per-image arrays, got {len(parts)}")
        for i, b in enumerate(parts):
            if b.ndim != 2 or b.shape[1] != 4:
                raise ValueError(f"boxes[{i}] must be (L, 4), got shape {b.shape}")
            _check_dtype(f"boxes[{i}]", b, input)
        if not parts:
            return jnp.zeros((0, 5), input.dtype), False
        ids = [jnp.full((b.shape[0], 1), i, input.dtype) for i, b in enumerate(parts)]
        return jnp.concatenate([jnp.concatenate(ids), jnp.concatenate(parts)], axis=1), False
    boxes = _checks.as_array("boxes", boxes)
    _check_dtype("boxes", boxes, input)
    if boxes.ndim == 3 and boxes.shape[2] == 4:
        if boxes.shape[0] != n:
            raise ValueError(
                f"boxes of shape (N, K, 4) must have the input's N = {n}, got shape {boxes.shape}"
            )
        return boxes, True
    if boxes.ndim != 2 or boxes.shape[1] != 5:
        raise ValueError(
            "boxes must be a (K, 5) array of (batch index, x1, y1, x2, y2), a sequence of "
            f"(L, 4) arrays or a (N, K, 4) array, got shape {boxes.shape}"
        )
    index = _concrete(boxes[:, 0])
    if index is not None:
        bad = ~np.isfinite(index) | (index != np.trunc(index))
        if bad.any():
            raise ValueError(f"boxes[:, 0] must hold integer batch indices, got {index[bad][0]}")
        out = (index < 0) | (index >= n)
        if out.any():
            raise ValueError(f"boxes[:, 0] must lie in [0, N = {n}), got {index[out][0]:g}")
    return boxes, False


def _check_dtype(name: str, boxes: jax.Array, input: jax.Array) -> None:  # noqa: A002
    if boxes.dtype != input.dtype:
        raise TypeError(f"{name} must have the input's dtype {input.dtype}, got {boxes.dtype}")


def single_map(x: jax.Array, image: jax.Array, spatial_scale: float) -> tuple:
    """The flat buffer of one map (N, H, W, C) and the layout of boxes on images ``image``."""
    n, h, w, c = x.shape
    return x.reshape(n * h * w, c), map_layout((h, w), image, spatial_scale)


def map_layout(size: tuple[int, int], image: jax.Array, spatial_scale: float) -> Layout:
    """Where boxes on images ``image`` (K,) of one map of ``size`` (H, W) read it."""
    h, w = size
    full = functools.partial(jnp.full, (image.shape[0], 1), dtype=jnp.int32)
    return Layout(image * (h * w), full(h), full(w), spatial_scale, (h, w))


@functools.partial(jax.jit, static_argnames="options")
def _rois(x: jax.Array, rois: jax.Array, options: tuple) -> jax.Array:
    size, spatial_scale, sampling_ratio, aligned, channels_last, blocks = options
    n = x.shape[0]
    index = jnp.trunc(rois[:, 0])
    inside = (index >= 0) & (index < n)
    image = jnp.where(inside, index, 0).astype(jnp.int32)
    coords = jnp.where(inside[:, None], rois[:, 1:], jnp.nan)

    def pool(maps, image, coords):
        flat, layout = single_map(to_channels_last(maps[0], channels_last), image, spatial_scale)
        return pool_boxes(flat, coords, layout, (size, sampling_ratio, aligned))

    return _core.in_channel_blocks(pool, blocks, channel_dim(channels_last), (x,), image, coords)


@functools.partial(jax.jit, static_argnames="options")
def _batched(x: jax.Array, boxes: jax.Array, options: tuple) -> jax.Array:
    size, spatial_scale, sampling_ratio, aligned, channels_last, blocks = options
    sampling = (size, sampling_ratio, aligned)
    image = jnp.zeros(boxes.shape[1], jnp.int32)
    layout = map_layout(spatial_size(x, channels_last), image, spatial_scale)
    rows, cols, _ = jax.vmap(lambda b: box_samples(b, layout, sampling))(boxes)
    # The chunk counts are taken over every image so that the skipping stays a conditional.
    needed = needed_chunks(rows, cols, sampling_ratio)

    def one_image(xi, b):
        flat, layout = single_map(to_channels_last(xi[None], channels_last), image, spatial_scale)
        return pool_boxes(flat, b, layout, sampling, needed)

    def pool(maps, boxes):
        return jax.vmap(one_image)(maps[0], boxes)

    return _core.in_channel_blocks(pool, blocks, channel_dim(channels_last), (x,), boxes)
