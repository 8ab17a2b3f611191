"""`affine_grid`: torch.nn.functional.affine_grid in JAX."""

from __future__ import annotations

import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from jax_gridsample import _checks, _core


def affine_grid(
    theta: ArrayLike,
    size: Sequence[int],
    align_corners: bool | None = None,
) -> jax.Array:
    """Builds a sampling grid from affine matrices, like `torch.nn.functional.affine_grid`.

    The output feeds `grid_sample`: ``grid_sample(x, affine_grid(theta,
    x.shape))`` warps ``x`` by ``theta``, which maps output coordinates to
    input coordinates, both normalised to ``[-1, 1]``.

    Conventions:
      Output point ``(h, w)`` has base coordinates ``(x_w, y_h)``: evenly
      spaced from -1 to 1 over the pixel centres when ``align_corners`` is
      True, and scaled by ``(S - 1) / S`` (so ±1 are pixel edges) when False;
      a size-1 axis has the single coordinate 0. Then ``grid[n, h, w] =
      theta[n] @ (x_w, y_h, 1)``, computed with multiply-adds rather than a
      matrix product, so no TF32 precision loss on GPUs.

    Args:
      theta: `(N, 2, 3)` matrices for a 4-D ``size``, `(N, 3, 4)` for a 5-D
        one; float16, bfloat16, float32 or float64.
      size: the output image size, `(N, C, H, W)` or `(N, C, D, H, W)` (C is
        ignored), positive ints.
      align_corners: as in `grid_sample`; None means False.

    Returns:
      `(N, H, W, 2)` or `(N, D, H, W, 3)` grid with the dtype of ``theta``.

    Raises:
      TypeError: non-array or non-float ``theta``, non-int sizes, or a
        non-bool ``align_corners``.
      ValueError: ``theta`` of the wrong shape for ``size``, a batch
        mismatch, or a non-positive size.
      NotImplementedError: ``size`` of length other than 4 or 5 (as torch).

    Example:
      >>> import jax.numpy as jnp
      >>> from jax_gridsample import affine_grid
      >>> identity = jnp.array([[[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]])
      >>> affine_grid(identity, (1, 1, 2, 2), align_corners=False)[0, :, :, 0]
      Array([[-0.5,  0.5],
             [-0.5,  0.5]], dtype=float32)

    Note:
      torch skips its positive-size check when ``align_corners`` is True and
      a spatial size is 1 (it then accepts C=0); here every size must be
      positive. float16 and bfloat16 are computed in float32 and rounded once.
    """
    align_corners = _checks.check_align_corners(align_corners)
    theta = _checks.as_array("theta", theta)
    _checks.check_float_dtype("theta", theta)
    if isinstance(size, (str, bytes)) or not isinstance(size, Sequence):
        raise TypeError(f"size must be a sequence of ints, got {type(size).__name__} ({size!r})")
    size = tuple(_checks.check_int(f"size[{i}]", s) for i, s in enumerate(size))
    if len(size) not in (4, 5):
        raise NotImplementedError(
            "affine_grid supports 4-D sizes (N, C, H, W) and 5-D sizes (N, C, D, H, W), "
            f"got size {list(size)} of length {len(size)}"
        )
    ndim = len(size) - 2
    expected = (size[0], ndim, ndim + 1)
    if theta.shape != expected:
        raise ValueError(
            f"theta must have shape (N, {ndim}, {ndim + 1}) = {expected} for size "
            f"{list(size)}, got {theta.shape}"
        )
    if min(size) <= 0:
        raise ValueError(f"size must be positive, got {list(size)}")
    return _affine_grid(theta, size[2:], align_corners)


def base_coordinates(size: int, align_corners: bool) -> np.ndarray:
    """Normalised coordinates of the ``size`` pixel centres along one axis (float64).

    torch's ``linspace(-1, 1, size)``, scaled by ``(size - 1) / size`` when
    ``align_corners`` is False; ``[0]`` for a size-1 axis.
    """
    if size == 1:
        return np.zeros(1)
    lin = np.linspace(-1.0, 1.0, size)
    return lin if align_corners else lin * (size - 1) / size


@functools.partial(jax.jit, static_argnames=("spatial", "align_corners"))
def _affine_grid(theta: jax.Array, spatial: tuple[int, ...], align_corners: bool) -> jax.Array:
    compute = _core.compute_dtype(theta.dtype)
    t = theta.astype(compute)
    ndim = len(spatial)
    # Coordinate j (x, y, z) varies along spatial axis ndim - 1 - j.
    grid = t[:, :, ndim].reshape((-1,) + (1,) * ndim + (ndim,))
    for j in range(ndim):
        axis = ndim - 1 - j
        shape = [1] * ndim
        shape[axis] = spatial[axis]
        base = jnp.asarray(base_coordinates(spatial[axis], align_corners), compute)
        grid = grid + base.reshape(1, *shape, 1) * t[:, None, :, j].reshape(
            (-1,) + (1,) * ndim + (ndim,)
        )
    return grid.astype(theta.dtype)
