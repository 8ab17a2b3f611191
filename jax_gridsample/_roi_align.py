"""torchvision's roi_align: a fixed grid of bilinear averages over each box."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jax_gridsample import _checks, _core
from jax_gridsample._roi_sampling import (
    CHUNK,
    axis_samples,
    chunks_needed,
    pooled_sums,
)


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
    input = _checks.as_array("input", input)  # noqa: A001
    _checks.check_float_dtype("input", input)
    channels_last = _checks.check_channel_axis(channel_axis, 4)
    if input.ndim != 4:
        layout = "(N, H, W, C)" if channels_last else "(N, C, H, W)"
        raise ValueError(
            f"input must be 4-D, {layout}, got {input.ndim}-D with shape {input.shape}"
        )
    x = input if channels_last else jnp.moveaxis(input, 1, -1)
    if 0 in x.shape[1:3]:
        raise ValueError(f"input must have non-empty spatial dimensions, got shape {input.shape}")
    size = check_output_size(output_size)
    spatial_scale = _check_scale(spatial_scale)
    sampling_ratio = _checks.check_int("sampling_ratio", sampling_ratio)
    if not isinstance(aligned, (bool, np.bool_)):
        raise TypeError(f"aligned must be a bool, got {type(aligned).__name__} ({aligned!r})")
    rois, batched = rois_of(boxes, input)
    options = (size, spatial_scale, sampling_ratio, bool(aligned))
    if batched:
        out = _core.in_compute_dtype(functools.partial(_batched, options=options), x, rois)
    else:
        out = _core.in_compute_dtype(functools.partial(_rois, options=options), x, rois)
    return out if channels_last else jnp.moveaxis(out, -1, -3)


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


def box_samples(x: jax.Array, coords: jax.Array, options: tuple) -> tuple:
    """Per-axis samples of boxes (K, 4) in a (H, W) map, and the divisor per box."""
    (ph, pw), spatial_scale, sampling_ratio, aligned = options
    ok = jnp.all(jnp.isfinite(coords), axis=1, keepdims=True)
    coords = jnp.where(ok, coords, 0)  # so that no NaN reaches a gradient through jnp.where
    start = coords[:, :2] * spatial_scale - (0.5 if aligned else 0.0)
    length = coords[:, 2:] * spatial_scale - (0.5 if aligned else 0.0) - start
    if not aligned:
        length = jnp.where(length < 1, 1, length)  # torchvision's std::max(length, 1)
    cols = axis_samples(start[:, 0], length[:, 0], pw, x.shape[-2], sampling_ratio, ok)
    rows = axis_samples(start[:, 1], length[:, 1], ph, x.shape[-3], sampling_ratio, ok)
    count = jnp.maximum(rows.grid * cols.grid, 1)[:, :, None, None]
    return rows, cols, count


def _needed(rows, cols, sampling_ratio: int):
    if sampling_ratio > 0:
        return None
    return chunks_needed(rows, CHUNK), chunks_needed(cols, CHUNK)


@functools.partial(jax.jit, static_argnames="options")
def _rois(x: jax.Array, rois: jax.Array, options: tuple) -> jax.Array:
    n = x.shape[0]
    index = jnp.trunc(rois[:, 0])
    inside = (index >= 0) & (index < n)
    image = jnp.where(inside, index, 0).astype(jnp.int32)
    coords = jnp.where(inside[:, None], rois[:, 1:], jnp.nan)
    rows, cols, count = box_samples(x, coords, options)
    sums = pooled_sums(x, image, rows, cols, options[2], _needed(rows, cols, options[2]))
    return sums / count


@functools.partial(jax.jit, static_argnames="options")
def _batched(x: jax.Array, boxes: jax.Array, options: tuple) -> jax.Array:
    rows, cols, _ = jax.vmap(lambda b: box_samples(x, b, options))(boxes)
    # The chunk counts are taken over every image so that the skipping stays a conditional.
    needed = _needed(rows, cols, options[2])

    def one_image(xi, b):
        rows, cols, count = box_samples(xi[None], b, options)
        image = jnp.zeros(b.shape[0], jnp.int32)
        return pooled_sums(xi[None], image, rows, cols, options[2], needed) / count

    return jax.vmap(one_image)(x, boxes)
