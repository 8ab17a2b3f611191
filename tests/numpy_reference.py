"""A slow, obviously-correct NumPy reference of grid_sample (docs/semantics.md).

Loops over output points in float64. It shares no code with jax_gridsample. It follows
Coordinates, padding and modes for finite grids, and the rules defined here for NaN,
±inf and huge values.
Returns the output and the linear map's taps, so grad_input can be formed too.
"""

from __future__ import annotations

import math

import numpy as np

A = -0.75


def unnormalize(g: float, size: int, align: bool) -> float:
    if align:
        return (g + 1) / 2 * (size - 1)  # NaN/inf propagate (inf * 0 = NaN)
    return ((g + 1) * size - 1) / 2


def clip(x: float, size: int) -> float:
    if math.isnan(x) or x <= 0:  # NaN -> 0 (torch's CPU 2-D forward)
        return 0.0
    return min(x, size - 1.0)


def reflect(x: float, size: int, align: bool) -> float:
    low, span = (0.0, size - 1.0) if align else (-0.5, float(size))
    if span == 0:
        return 0.0
    if not math.isfinite(x):
        return math.nan
    a = math.fmod(abs(x - low), 2 * span)
    return (a if a <= span else 2 * span - a) + low


def pad(x: float, size: int, padding: str, align: bool) -> float:
    if padding == "border":
        return clip(x, size)
    if padding == "reflection":
        return clip(reflect(x, size, align), size)
    return x


def cubic(t: float) -> list[float]:
    def near(s):
        return ((A + 2) * s - (A + 3)) * s * s + 1

    def far(s):
        return ((A * s - 5 * A) * s + 8 * A) * s - 4 * A

    return [far(t + 1), near(t), near(1 - t), far(2 - t)]


def axis_taps(x: float, size: int, mode: str, padding: str, align: bool):
    """[(index or None, weight)] along one axis; None = reads 0."""

    def at(i: float):
        return int(i) if math.isfinite(i) and 0 <= i <= size - 1 else None

    if mode == "nearest":
        return [(at(float(np.round(pad(x, size, padding, align)))), 1.0)]
    if mode == "bilinear":
        xp = pad(x, size, padding, align)
        if not math.isfinite(xp):
            return [(None, math.nan)]
        x0 = math.floor(xp)
        return [(at(x0), 1 - (xp - x0)), (at(x0 + 1), xp - x0)]
    if not math.isfinite(x):  # bicubic, non-finite centre: NaN (docs/semantics.md)
        return [(None, math.nan)]
    x0 = math.floor(x)
    weights = cubic(x - x0)
    return [(at(pad(x0 + k - 1, size, padding, align)), w) for k, w in enumerate(weights)]


def grid_sample_ref(x, grid, mode, padding, align):
    """Returns (out, taps): taps[n][point] is a list of (spatial index, weight)."""
    x = np.asarray(x, np.float64)
    grid = np.asarray(grid, np.float64)
    n_batch, channels = x.shape[:2]
    spatial = x.shape[2:]
    d = len(spatial)
    out_sp = grid.shape[1:-1]
    out = np.zeros((n_batch, channels) + out_sp)
    taps = []
    for n in range(n_batch):
        taps_n = {}
        for o in np.ndindex(*out_sp):
            per_axis = []
            for axis in range(d):  # grid component d-1-axis indexes spatial axis `axis`
                coord = unnormalize(float(grid[(n,) + o + (d - 1 - axis,)]), spatial[axis], align)
                per_axis.append(axis_taps(coord, spatial[axis], mode, padding, align))
            acc = np.zeros(channels)
            point = []
            for combo in np.ndindex(*(len(t) for t in per_axis)):
                picks = [per_axis[a][k] for a, k in enumerate(combo)]
                w = math.prod(p[1] for p in picks)
                if any(p[0] is None for p in picks):
                    acc = acc + 0.0 * w  # reads 0; NaN weights still poison
                    continue
                idx = tuple(p[0] for p in picks)
                acc = acc + x[(n, slice(None)) + idx] * w
                point.append((idx, w))
            out[(n, slice(None)) + o] = acc
            taps_n[o] = point
        taps.append(taps_n)
    return out, taps


def grad_input_ref(x_shape, taps, cotangent):
    """Transpose of the linear map input -> output, applied to ``cotangent``."""
    grad = np.zeros(x_shape)
    for n, taps_n in enumerate(taps):
        for o, point in taps_n.items():
            ct = np.asarray(cotangent[(n, slice(None)) + o], np.float64)
            for idx, w in point:
                grad[(n, slice(None)) + idx] += ct * w
    return grad
