"""Randomized parity against live torch (skipped when torch is not installed).

JAX_GRIDSAMPLE_RANDOM_CASES sets the number of random cases (default 100) and
JAX_GRIDSAMPLE_RANDOM_FIRST_SEED the first seed (default 0).
"""

from __future__ import annotations

import os

import jax
import numpy as np
import pytest
from conftest import as_jax, assert_close, x64_if

from jax_gridsample import grid_sample


@pytest.fixture(scope="module")
def torch():
    """torch, imported by the test worker that runs these cases only (skipped without it)."""
    module = pytest.importorskip("torch")
    # The cases are tiny; torch's OpenMP workers would spin after each call and slow the
    # compiles of the tests that share this process.
    module.set_num_threads(1)
    return module


NUM_CASES = int(os.environ.get("JAX_GRIDSAMPLE_RANDOM_CASES", "100"))
FIRST_SEED = int(os.environ.get("JAX_GRIDSAMPLE_RANDOM_FIRST_SEED", "0"))


def _random_case(rng):
    ndim = int(rng.integers(2, 4))
    mode = str(rng.choice(["bilinear", "nearest"] + (["bicubic"] if ndim == 2 else [])))
    pad = str(rng.choice(["zeros", "border", "reflection"]))
    align = bool(rng.integers(0, 2))
    dtype = str(rng.choice(["float32", "float64"]))
    n, c = int(rng.integers(1, 4)), int(rng.integers(1, 4))
    spatial = tuple(int(s) for s in rng.choice([1, 2, 3, 5, 8, 13], ndim))
    out = tuple(int(s) for s in rng.integers(1, 6, ndim))
    spread = float(rng.choice([1.0, 1.1, 3.0, 50.0]))
    grid = rng.uniform(-spread, spread, (n,) + out + (ndim,))
    # Sprinkle simple dyadic values (exact pixel positions for many sizes).
    exact = rng.random(grid.shape) < 0.2
    grid[exact] = rng.choice([-1.0, -0.5, 0.0, 0.5, 1.0, 2.0], int(exact.sum()))
    x = rng.standard_normal((n, c) + spatial) * float(rng.choice([1.0, 100.0]))
    ct = rng.standard_normal((n, c) + out)
    return mode, pad, align, dtype, [a.astype(dtype) for a in (x, grid, ct)]


CHUNK = 10  # seeds per test: their cases of one dtype run in one compiled program
CHUNKS = [
    range(first, min(first + CHUNK, FIRST_SEED + NUM_CASES))
    for first in range(FIRST_SEED, FIRST_SEED + NUM_CASES, CHUNK)
]


def _torch_reference(torch, mode, pad, align, x, grid, ct):
    xt = torch.tensor(x, requires_grad=True)
    gt = torch.tensor(grid, requires_grad=True)
    ref = torch.nn.functional.grid_sample(xt, gt, mode=mode, padding_mode=pad, align_corners=align)
    ref.backward(torch.tensor(ct))
    return ref.detach().numpy(), xt.grad.numpy(), gt.grad.numpy()


@pytest.mark.parametrize("seeds", CHUNKS, ids=[f"{c[0]}-{c[-1]}" for c in CHUNKS])
def test_random_against_torch(torch, seeds):
    cases = {seed: _random_case(np.random.default_rng(seed)) for seed in seeds}
    for dtype in ("float32", "float64"):
        chunk = {seed: case for seed, case in cases.items() if case[3] == dtype}

        @jax.jit
        def run(arrays, chunk=chunk):
            got = []
            for case, (x, grid, ct) in zip(chunk.values(), arrays, strict=True):

                def f(x, grid, options=case[:3]):
                    return grid_sample(x, grid, *options)

                out, vjp = jax.vjp(f, x, grid)
                got.append((out, *vjp(ct)))
            return got

        with x64_if(dtype):
            arrays = [[as_jax(a, dtype) for a in case[4]] for case in chunk.values()]
            results = run(arrays) if chunk else []
        for (seed, case), got in zip(chunk.items(), results, strict=True):
            _check(torch, seed, case, got)


def _check(torch, seed, case, got):
    mode, pad, align, dtype, (x, grid, ct) = case
    out, gx, gg = got
    ref, ref_gx, ref_gg = _torch_reference(torch, mode, pad, align, x, grid, ct)
    what = f"seed {seed}: {mode} {pad} align={align} {dtype} x{x.shape} grid{grid.shape}"
    assert_close(out, ref, dtype, what=f"output {what}", exact=mode == "nearest")
    assert_close(gx, ref_gx, dtype, what=f"grad_input {what}")
    # Natural size of a grid gradient: sum over channels and taps of
    # |value| * |cotangent| * |d weight / d grid| (at most ~2 * S / 2 per tap).
    terms = x.shape[1] * np.abs(x).max() * np.abs(ct).max() * max(x.shape[2:])
    assert_close(gg, ref_gg, dtype, what=f"grad_grid {what}", scale=terms)
