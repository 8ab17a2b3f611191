"""Parity with torch on saved fixtures (tests/fixtures/generate.py): no torch needed.

The cases of one (rank, mode, dtype) run in one compiled program, in both layouts
(channels first, and channels last with ``channel_axis=-1``): compiling, not running,
is what takes the time. The matrix's float64 s1 groups, and outside the matrix the
groups the quick tier keeps, run in two parts (`in_parts`): each call in one layout,
alternating from call to call, and then in the other, so that the quick tier compiles
each sampler once.
"""

from __future__ import annotations

import collections

import jax
import numpy as np
import pytest
from conftest import LAYOUTS, alternating_layout, as_jax, assert_close, load_cases, x64_if

from jax_gridsample import affine_grid, grid_sample, grid_sample_separable

# The layouts of a group's calls: both, or one each, alternating from call to call
# (part 0), or the other one (part 1).
BOTH = None
PARTS = (0, 1)


def groups(cases, *extra):
    """Case indices by (rank, mode, dtype, *extra id fields), with an id for each group.

    ``extra`` are positions in the case id's dash-separated fields (e.g. the shape).
    """
    out = collections.defaultdict(list)
    for i, case in enumerate(cases):
        fields = case["id"].split("-")
        key = (*fields[:2], case["dtype"], *(fields[k] for k in extra))
        out["-".join(key)].append(i)
    return list(out.items())


def to_layout(a, layout):
    """A channels-first `(N, C, ...)` array in ``layout``."""
    return np.moveaxis(a, 1, -1) if layout == -1 else a


def batched_calls(data, options, names):
    """Cases with the same options and array shapes, as one call each.

    Returns ``{(options, shapes): positions in data}``. A call concatenates
    its cases along the batch; each example is sampled on its own, so the
    program holds one sampler per options (and layout), not one per case.
    """
    calls = collections.defaultdict(list)
    for k, (d, opts) in enumerate(zip(data, options, strict=True)):
        calls[opts, tuple(d[n].shape[1:] for n in names)].append(k)
    return calls


def concatenated(data, calls, names, dtype):
    """Per call, the arrays ``names`` of its cases concatenated along the batch."""
    return [
        tuple(as_jax(np.concatenate([data[k][n] for k in ks]), dtype) for n in names)
        for ks in calls.values()
    ]


def call_layouts(calls, part):
    """Per call, the layouts it runs in (``part`` is `BOTH` or one of `PARTS`)."""
    if part is BOTH:
        return [LAYOUTS] * len(calls)
    return [(alternating_layout(j, part),) for j in range(len(calls))]


def per_case(data, calls, layouts, results):
    """``results`` (per call and layout, a tuple of batched arrays) split into the cases'.

    Returns, per case in ``data``'s order, ``{layout: its tuple of arrays}``.
    """
    parts, results = [{} for _ in data], iter(results)
    for ks, call_layout in zip(calls.values(), layouts, strict=True):
        sizes = np.cumsum([len(data[k]["input"]) for k in ks])[:-1]
        for layout in call_layout:
            split = (np.split(np.asarray(a), sizes) for a in next(results))
            for k, arrays in zip(ks, zip(*split, strict=True), strict=True):
                parts[k][layout] = arrays
    assert next(results, None) is None
    return parts


def check_grid_sample_group(cases, arrays, indices, part=BOTH):
    """Values and both gradients of ``cases[indices]`` against torch, in the layouts
    `call_layouts` gives for ``part``."""
    dtype = cases[indices[0]]["dtype"]
    data = [arrays(i) for i in indices]
    names = ("input", "grid", "cotangent")
    options = [
        (cases[i]["mode"], cases[i]["padding_mode"], cases[i]["align_corners"]) for i in indices
    ]
    calls = batched_calls(data, options, names)
    layouts = call_layouts(calls, part)

    @jax.jit
    def run(batch):
        got = []
        for (opts, _), (x, g, ct), call_layout in zip(calls, batch, layouts, strict=True):
            for layout in call_layout:

                def f(a, b, opts=opts, layout=layout):
                    return grid_sample(a, b, *opts, channel_axis=layout)

                out, vjp = jax.vjp(f, to_layout(x, layout), g)
                got.append((out, *vjp(to_layout(ct, layout))))
        return got

    with x64_if(dtype):
        results = per_case(data, calls, layouts, run(concatenated(data, calls, names, dtype)))
    for i, d, got in zip(indices, data, results, strict=True):
        exact = cases[i]["mode"] == "nearest"
        assert got, f"{cases[i]['id']} ran in no layout"
        for layout, (out, gx, gg) in got.items():
            label = f"{cases[i]['id']} channel_axis={layout}"
            for a in (out, gx, gg):
                assert str(a.dtype) == dtype, label
            assert_close(
                out, to_layout(d["out"], layout), dtype, what=f"{label} output", exact=exact
            )
            assert_close(gx, to_layout(d["grad_input"], layout), dtype, what=f"{label} grad_input")
            gg, ref = np.asarray(gg, np.float64), d["grad_grid"]
            if "nan_out" in d:  # points whose output is NaN may have NaN grid gradients
                finite_points = ~d["nan_out"][:, 0]
                gg, ref = gg[finite_points], ref[finite_points]
            assert_close(gg, ref, dtype, what=f"{label} grad_grid", exact=exact)


def in_parts(groups_, split):
    """Parameters (indices, part) of each group: the two `PARTS` where ``split(group id)``
    (the quick tier keeps part 0), else `BOTH` layouts in one program."""
    params = []
    for key, g in groups_:
        parts = PARTS if split(key) else (BOTH,)
        params += [
            pytest.param(g, p, id=f"{key}-{'both' if p is BOTH else f'part{p}'}") for p in parts
        ]
    return pytest.mark.parametrize("indices,part", params)


_, HALF, HALF_ARRAYS = load_cases("half.npz")
_, AFFINE, AFFINE_ARRAYS = load_cases("affine_grid.npz")
_, PIXEL, PIXEL_ARRAYS = load_cases("pixel.npz")
_, SEPARABLE, SEPARABLE_ARRAYS = load_cases("separable.npz")


def joined(*files):
    """The cases of several fixture files as one list, with one ``arrays(i)`` for all."""
    loaded = [load_cases(f)[1:] for f in files]
    starts = np.cumsum([0] + [len(cases) for cases, _ in loaded])

    def arrays(i):
        k = int(np.searchsorted(starts, i, side="right")) - 1
        return loaded[k][1](i - starts[k])

    return [case for cases, _ in loaded for case in cases], arrays


# The non-finite and huge grids have the shape s1 of the matrix, so they are
# sampled in the calls of its cases with the same options: no extra sampler.
MATRIX, MATRIX_ARRAYS = joined("grid_sample.npz", "hostile.npz")
MATRIX_GROUPS = groups(MATRIX, 5)  # (rank, mode, dtype, shape): the grid kinds and options


@in_parts(MATRIX_GROUPS, lambda k: k.endswith("-float64-s1"))
def test_matrix(indices, part):
    """Every mode x padding x align_corners x rank x dtype x shape x grid kind x layout;
    on shape s1 also grids with NaN, infinite and huge values (docs/semantics.md)."""
    check_grid_sample_group(MATRIX, MATRIX_ARRAYS, indices, part)


HALF_GROUPS = groups(HALF)
# Half types take one float32 path: the quick tier's groups are float16's but for 4-D
# bilinear, whose group is bfloat16's.
QUICK_HALF = {k for k, _ in HALF_GROUPS if "-float16" in k} ^ {
    "4d-bilinear-float16",
    "4d-bilinear-bfloat16",
}


@in_parts(HALF_GROUPS, lambda k: k in QUICK_HALF)
def test_half_dtypes(indices, part):
    check_grid_sample_group(HALF, HALF_ARRAYS, indices, part)


PIXEL_GROUPS = groups(PIXEL, -1)  # (rank, mode, dtype, grid set)
# Bicubic's value and derivatives are continuous at pixel positions (an ulp of the coordinate
# moves them by about an ulp), so its groups run in the slow tier; the matrix's pixel grids
# keep it in the quick one.
QUICK_PIXEL = {k for k, _ in PIXEL_GROUPS if k.endswith("-float32-pixel0") and "bicubic" not in k}


@in_parts(PIXEL_GROUPS, lambda k: k in QUICK_PIXEL)
def test_exact_pixel_positions(indices, part):
    """Grids on integer and half-integer pixel positions as users build them.

    One ulp of the unnormalised coordinate decides the pixel nearest picks
    and the side of bilinear's one-sided derivatives, so these match torch
    only if every rounding is torch's, under jit.
    """
    check_grid_sample_group(PIXEL, PIXEL_ARRAYS, indices, part)


SEPARABLE_GROUPS = groups(SEPARABLE)


@in_parts(SEPARABLE_GROUPS, lambda k: "-float32" in k or k == "4d-bilinear-float64")
def test_separable(indices, part):
    """grid_sample_separable against torch's grid_sample on the expanded grid."""
    dtype = SEPARABLE[indices[0]]["dtype"]
    data = [SEPARABLE_ARRAYS(i) for i in indices]
    axes = [k for k in "xyz" if k in data[0]]
    names = ("input", "cotangent", *axes)
    options = [
        tuple(SEPARABLE[i][k] for k in ("mode", "padding_mode", "align_corners")) for i in indices
    ]
    calls = batched_calls(data, options, names)
    layouts = call_layouts(calls, part)

    @jax.jit
    def run(batch):
        got = []
        for (opts, _), (x, ct, *vectors), call_layout in zip(calls, batch, layouts, strict=True):
            for layout in call_layout:

                def f(x, *vectors, opts=opts, layout=layout):
                    return grid_sample_separable(x, vectors, *opts, channel_axis=layout)

                out, vjp = jax.vjp(f, to_layout(x, layout), *vectors)
                got.append((out, *vjp(to_layout(ct, layout))))
        return got

    with x64_if(dtype):
        results = per_case(data, calls, layouts, run(concatenated(data, calls, names, dtype)))
    for i, d, got in zip(indices, data, results, strict=True):
        exact = SEPARABLE[i]["mode"] == "nearest"
        assert got, f"{SEPARABLE[i]['id']} ran in no layout"
        for layout, (out, *grads) in got.items():
            label = f"{SEPARABLE[i]['id']} channel_axis={layout}"
            assert_close(
                out, to_layout(d["out"], layout), dtype, what=f"{label} output", exact=exact
            )
            assert_close(
                grads[0], to_layout(d["grad_input"], layout), dtype, what=f"{label} grad_input"
            )
            for name, g in zip(axes, grads[1:], strict=True):
                assert_close(g, d[f"grad_{name}"], dtype, what=f"{label} grad_{name}", exact=exact)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_affine_grid(dtype):
    indices = [i for i, c in enumerate(AFFINE) if c["dtype"] == dtype]
    data = [AFFINE_ARRAYS(i) for i in indices]
    options = [(AFFINE[i]["size"], AFFINE[i]["align_corners"]) for i in indices]

    @jax.jit
    def run(batch):
        got = []
        for (theta, ct), (size, align) in zip(batch, options, strict=True):
            out, vjp = jax.vjp(lambda t, s=size, a=align: affine_grid(t, s, align_corners=a), theta)
            got.append((out, *vjp(ct)))
        return got

    with x64_if(dtype):
        batch = [(as_jax(d["theta"], dtype), as_jax(d["cotangent"], dtype)) for d in data]
        results = run(batch)
    for i, d, (out, grad_theta) in zip(indices, data, results, strict=True):
        assert out.dtype == np.dtype(dtype)
        assert_close(out, d["out"], dtype, what=f"{AFFINE[i]['id']} grid")
        assert_close(grad_theta, d["grad_theta"], dtype, what=f"{AFFINE[i]['id']} grad_theta")


def test_fixture_provenance():
    meta, cases, _ = load_cases("grid_sample.npz")
    assert meta["torch_version"].startswith("2.")
    assert len(cases) == 648
    hostile = [c for c in MATRIX if c["id"].endswith("-s1-hostile")]
    assert len(hostile) == 60 and len(MATRIX) == 708
    assert sum(len(g) for _, g in MATRIX_GROUPS) == 708
