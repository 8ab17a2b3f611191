"""Which formulation computes each function's value, and which its derivatives.

A plan is a static argument of the private jitted functions, so it is part of
their cache key; the public functions choose it from static facts (mode,
shapes, layout, and on CPU whether it has AVX-512) only. Every platform takes
the plan measured on XLA CPU with AVX-512 until an accelerator is measured
(`benchmarks/device_check.py`); the timings behind each threshold are in
`benchmarks/README.md`.

`grid_sample` sums the stencil corners of every point (`_kernels.sample_one`)
in one of three formulations, the same terms in the same order:

* ``"fused"``: one expression over the corners, which XLA fuses into a
  single pass over the points;
* ``"fused_stored"``: the same after a loop that stores every corner's
  offsets and weights (nearest's offsets), computed once per point instead
  of once per channel;
* ``"loop"``: a `lax.scan` over the corners of a channels-last input (moved
  there if needed), gathering whole C-vectors; its derivatives are always
  the ones `grid_sample` takes (bounded temporaries whatever the stencil).

`grid_sample_separable` resamples one axis at a time (`_passes`):

* value ``"taps"``: every axis by tap gathers; ``"taps_rows"``: the same but
  a matmul along the last axis of a channels-first input, where a gather
  reads single elements;
* derivatives ``"matmul"``: every axis by a product with its dense weight
  matrix, with no scatter in the gradient;
* ``"expanded"`` (either): `grid_sample` on the grid the vectors span.

`roi_align` and `multi_scale_roi_align` pool from one channels-last copy of
every map; with a fixed sampling ratio the value makes that copy a block of
channels at a time when it is large (`roi_channel_blocks`), the derivatives
from the whole copy.
"""

from __future__ import annotations

import functools
import itertools
import math
from typing import NamedTuple

import jax

from jax_gridsample._taps import num_corners

FORWARDS = ("fused", "fused_stored", "loop")
SEPARABLE_VALUES = ("taps", "taps_rows", "expanded")
SEPARABLE_DERIVATIVES = ("matmul", "expanded")

# A channels-first input with a stencil of more than 4 corners (trilinear,
# bicubic) is sampled through the channels-last loop from this many channels.
RELAYOUT_MIN_CHANNELS = 64

# Matmuls read every pixel of an axis per output: worth it up to this size.
SEPARABLE_MATMUL_MAX_SIZE = 128

# The value samples the expanded grid's points once the passes would read this
# many times more elements (their row gathers read faster than point gathers).
SEPARABLE_EXPANDED_MIN_READS = 4
# Where the expanded grid's gathers store their offsets (`stores_few_channels`),
# they win once the passes read as many elements.
SEPARABLE_EXPANDED_MIN_READS_STORED = 1

# Matmul derivatives win up to this many multiply-adds per output point (all
# channels together) and stencil corner; beyond, `grid_sample`'s own.
SEPARABLE_MATMUL_MAX_MACS_PER_CORNER = 1280

# The value's channels-last copy of RoIAlign's maps is made in blocks of at
# most this many bytes: a fresh copy of a large buffer costs more in page
# faults than the gathers that read it.
ROI_BLOCK_MAX_BYTES = 24 * 2**20
# Blocks of fewer channels gather too little per index to pay off.
ROI_BLOCK_MIN_CHANNELS = 8


class Plan(NamedTuple):
    """The formulation of the value and the formulation of the derivatives."""

    value: str
    derivatives: str


def grid_sample_plan(mode: str, ndim: int, channels: int, channels_last: bool) -> Plan:
    """`grid_sample`'s plan: one of `FORWARDS` for the value, ``"loop"`` for the derivatives.

    Stencils of more than 4 corners take the loop for the value too when the
    input is channels-last, or channels-first with at least
    `RELAYOUT_MIN_CHANNELS` channels (contiguous C-vectors beat strided
    channels by more than the two transposes cost). Otherwise fused, with
    the offsets (and weights) stored first from ``2 * K`` channels on (from
    2 channels on for nearest, a single gather either way), or from 2 channels
    on where `stores_few_channels` says so.
    """
    corners = num_corners(mode, ndim)
    stored_from = 2 if stores_few_channels() else 2 * corners
    if corners > 4 and (channels_last or channels >= RELAYOUT_MIN_CHANNELS):
        value = "loop"
    elif channels >= stored_from:
        value = "fused_stored"
    else:
        value = "fused"
    return Plan(value, "loop")


@functools.cache
def stores_few_channels() -> bool:
    """Whether `grid_sample` stores offsets and weights from 2 channels on: x86-64 without AVX-512.

    Such CPUs run the fused gathers' recomputed offsets and weights slower than
    a loop that stores them; with AVX-512, the fused gathers win below ``2 * K``
    channels. Other platforms keep the AVX-512 rule until they are measured.
    """
    return jax.default_backend() == "cpu" and cpu_has_avx512() is False


def cpu_has_avx512(cpuinfo: str = "/proc/cpuinfo") -> bool | None:
    """Whether the x86-64 host has AVX-512 (``avx512f``); None where ``cpuinfo`` has no flags."""
    try:
        with open(cpuinfo) as f:
            flags = next((line for line in f if line.startswith("flags")), None)
    except OSError:
        return None
    if flags is None:
        return None
    return "avx512f" in flags.split(":", 1)[-1].split()


def separable_plan(
    mode: str,
    spatial: tuple[int, ...],
    out_spatial: tuple[int, ...],
    channels: int,
    channels_last: bool,
) -> Plan:
    """`grid_sample_separable`'s plan, by shape.

    * Value: the expanded grid where the passes read at least
      `SEPARABLE_EXPANDED_MIN_READS` times as many elements as its gathers
      (`taps_reads` against ``prod(out_spatial) * K``, as when downsampling
      by 4 or more; `SEPARABLE_EXPANDED_MIN_READS_STORED` times where
      `stores_few_channels` and the expanded grid's value is
      ``"fused_stored"``); else ``"taps_rows"`` while the last input axis has at
      most `SEPARABLE_MATMUL_MAX_SIZE` pixels, else ``"taps"``.
    * Derivatives: ``"matmul"`` on input axes of at most
      `SEPARABLE_MATMUL_MAX_SIZE` pixels while the products cost at most
      `SEPARABLE_MATMUL_MAX_MACS_PER_CORNER` multiply-adds per output point
      and stencil corner; else ``"expanded"``.
    """
    corners = num_corners(mode, len(spatial))
    taps = round(corners ** (1 / len(spatial)))
    expanded_reads = math.prod(out_spatial) * corners
    min_reads = SEPARABLE_EXPANDED_MIN_READS
    expanded = grid_sample_plan(mode, len(spatial), channels, channels_last)
    if stores_few_channels() and expanded.value == "fused_stored":
        min_reads = SEPARABLE_EXPANDED_MIN_READS_STORED
    if taps_reads(spatial, out_spatial, taps) >= min_reads * expanded_reads:
        value = "expanded"
    elif spatial[-1] <= SEPARABLE_MATMUL_MAX_SIZE and not channels_last:
        value = "taps_rows"
    else:
        value = "taps"
    macs = matmul_macs(spatial, out_spatial) * channels / corners
    short = max(spatial) <= SEPARABLE_MATMUL_MAX_SIZE
    cheap = macs <= SEPARABLE_MATMUL_MAX_MACS_PER_CORNER
    return Plan(value, "matmul" if short and cheap else "expanded")


def taps_reads(spatial: tuple[int, ...], out_spatial: tuple[int, ...], taps: int) -> int:
    """Elements per channel that tap gathers read, one axis at a time in the cheapest order."""
    per_axis = (taps,) * len(spatial)
    order = contraction_order(spatial, out_spatial, per_axis)
    return _cost(spatial, out_spatial, per_axis, order)


def matmul_macs(spatial: tuple[int, ...], out_spatial: tuple[int, ...]) -> float:
    """Multiply-adds per output element of the per-axis matmuls, the first axis last."""
    order = contraction_order(spatial, out_spatial, spatial, last=0)
    return _cost(spatial, out_spatial, spatial, order) / math.prod(out_spatial)


def contraction_order(
    spatial: tuple[int, ...],
    out_spatial: tuple[int, ...],
    per_axis: tuple[int, ...],
    last: int | None = None,
) -> tuple[int, ...]:
    """The order of per-axis passes that does the least work in all.

    Resampling axis ``i`` of an array of spatial shape ``shape`` costs
    ``prod(shape) / shape[i] * out_spatial[i] * per_axis[i]``: multiply-adds
    for a matmul (``per_axis`` = the input sizes), reads for tap gathers
    (``per_axis`` = taps per axis). Ties keep the lower axis first. Given
    ``last``, only the orders that resample that axis last are considered.
    """
    orders = itertools.permutations(range(len(spatial)))
    candidates = (o for o in orders if last is None or o[-1] == last)
    return min(candidates, key=lambda o: _cost(spatial, out_spatial, per_axis, o))


def _cost(
    spatial: tuple[int, ...],
    out_spatial: tuple[int, ...],
    per_axis: tuple[int, ...],
    order: tuple[int, ...],
) -> int:
    shape, total = list(spatial), 0
    for i in order:
        total += math.prod(shape) // shape[i] * out_spatial[i] * per_axis[i]
        shape[i] = out_spatial[i]
    return total


def roi_channel_blocks(pixels: int, channels: int, itemsize: int, sampling_ratio: int) -> int:
    """The blocks of channels RoIAlign's value pools ``pixels`` positions of in turn.

    With a fixed ``sampling_ratio``, the fewest equal blocks whose
    channels-last copy fits `ROI_BLOCK_MAX_BYTES`, each of at least
    `ROI_BLOCK_MIN_CHANNELS` channels; 1 (all at once) when the whole copy
    fits or no such division of ``channels`` exists. Adaptive sampling takes
    1: each block would find again which pixels every bin reads, which costs
    more than the copy.
    """
    if sampling_ratio <= 0:
        return 1
    for blocks in range(1, channels // ROI_BLOCK_MIN_CHANNELS + 1):
        block_bytes = pixels * (channels // blocks) * itemsize
        if channels % blocks == 0 and block_bytes <= ROI_BLOCK_MAX_BYTES:
            return blocks
    return 1
