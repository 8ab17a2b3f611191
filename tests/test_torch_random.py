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

torch = pytest.importorskip("torch")
F = torch.nn.functional

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


@pytest.mark.parametrize("seed", range(FIRST_SEED, FIRST_SEED + NUM_CASES))
def test_random_against_torch(seed):
    rng = np.random.default_rng(seed)
    mode, pad, align, dtype, (x, grid, ct) = _random_case(rng)
    xt = torch.tensor(x, requires_grad=True)
    gt = torch.tensor(grid, requires_grad=True)
    ref = F.grid_sample(xt, gt, mode=mode, padding_mode=pad, align_corners=align)
    ref.backward(torch.tensor(ct))
    with x64_if(dtype):
        out, vjp = jax.vjp(
            lambda a, b: grid_sample(a, b, mode, pad, align), as_jax(x, dtype), as_jax(grid, dtype)
        )
        gx, gg = vjp(as_jax(ct, dtype))
    what = f"{mode} {pad} align={align} {dtype} x{x.shape} grid{grid.shape}"
    assert_close(out, ref.detach().numpy(), dtype, what=f"output {what}", exact=mode == "nearest")
    assert_close(gx, xt.grad.numpy(), dtype, what=f"grad_input {what}")
    # Natural size of a grid gradient: sum over channels and taps of
    # |value| * |cotangent| * |d weight / d grid| (at most ~2 * S / 2 per tap).
    terms = x.shape[1] * np.abs(x).max() * np.abs(ct).max() * max(x.shape[2:])
    assert_close(gg, gt.grad.numpy(), dtype, what=f"grad_grid {what}", scale=terms)
