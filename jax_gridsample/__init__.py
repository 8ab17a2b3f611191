"""torch's grid_sample and affine_grid, torchvision's roi_align family: for JAX, exactly."""

from jax_gridsample._affine_grid import affine_grid as affine_grid
from jax_gridsample._core import MODES as MODES
from jax_gridsample._core import PADDING_MODES as PADDING_MODES
from jax_gridsample._grid_sample import grid_sample as grid_sample
from jax_gridsample._multi_scale import multi_scale_roi_align as multi_scale_roi_align
from jax_gridsample._roi_align import roi_align as roi_align
from jax_gridsample._separable import grid_sample_separable as grid_sample_separable

__version__ = "0.2.0"

__all__ = [
    "MODES",
    "PADDING_MODES",
    "affine_grid",
    "grid_sample",
    "grid_sample_separable",
    "multi_scale_roi_align",
    "roi_align",
]
