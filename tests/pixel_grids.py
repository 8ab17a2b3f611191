"""Grid values on exact pixel positions, built the way users build them.

Shared by the fixture generator (tests/fixtures/generate.py) and the tests.
"""

from __future__ import annotations

import numpy as np


def pixel_grid_values(size: int, align: bool, dtype) -> np.ndarray:
    """Grid values for integer and half-integer pixel positions, as users compute them.

    Positions run from ``-3 * size - 2`` to ``4 * size + 2`` in steps of 1/2,
    so reflection folds them several times. Each is normalised in ``dtype``
    arithmetic (every operation rounded, as in a user's torch or NumPy code)
    by the textbook formula and by its multiply-first variant, plus
    ``linspace`` over the pixel centres. Most values are not exactly the
    ideal ones: they sit an ulp or so to either side, where the rounding
    order of the unnormalisation decides the pixel.
    """
    f = np.dtype(dtype).type
    xs = np.arange(-3 * size - 2, 4 * size + 2.5, 0.5).astype(f)
    one, two = f(1), f(2)
    if align and size == 1:
        values = [f(-1), f(0), f(1), f(-3.5), f(2.5)]  # every finite value maps to 0
    elif align:
        s1 = f(size - 1)
        values = [two * xs / s1 - one, xs * (two / s1) - one, np.linspace(-1, 1, size, dtype=f)]
    else:
        s = f(size)
        centres = np.linspace(-1 + 1 / size, 1 - 1 / size, size).astype(f)
        values = [(two * xs + one) / s - one, (xs + f(0.5)) * (two / s) - one, centres]
    return np.unique(np.concatenate([np.ravel(v) for v in values]).astype(f))
