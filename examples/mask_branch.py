"""Mask R-CNN's mask branch in JAX, end to end (Flax NNX + optax), on drawn scenes.

Scenes of 64x64 pixels hold three shapes each (discs, squares, triangles, of
sides 10 to 40 pixels) on a noisy background, with their boxes and masks. A
small backbone makes two feature levels (32x32 and 16x16, an FPN-like sum);
`multi_scale_roi_align` crops each ground-truth box at 14x14 from the level its
size picks (boxes of side 32 and up from the coarser one); a mask head turns
the crops into 28x28 mask logits. Targets are made as Mask R-CNN makes them:
`roi_align` of each instance's full-size mask over its box, at 28x28. The
predicted masks are pasted back into the image with `grid_sample_separable`
(see paste_masks.py), thresholded at 0.5 and scored by their IoU with the
true masks on held-out scenes, before and after training. Proposals are the
ground-truth boxes, so the score measures the mask branch alone.

    python examples/mask_branch.py [--quick] [--out examples/mask_branch.png]
"""

from __future__ import annotations

import argparse
import pathlib
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from paste_masks import paste_axes

from jax_gridsample import grid_sample_separable, multi_scale_roi_align, roi_align

SIZE = 64  # scene height and width
SHAPES = 3  # instances per scene
CROP, MASK = 14, 28  # roi_align output and predicted mask sizes
LEVELS = dict(canonical_scale=32, canonical_level=2)  # side 32 and up: the 1/4 level


def draw_scenes(rng: np.random.Generator, n: int):
    """``n`` scenes: images (n, 64, 64, 3), boxes (n, 3, 4) as (x1, y1, x2, y2) and
    instance masks (n, 3, 64, 64), later shapes drawn over earlier ones."""
    y, x = np.mgrid[0:SIZE, 0:SIZE] + 0.5  # pixel centres
    images = rng.normal(0.0, 0.25, (n, SIZE, SIZE, 3)) + rng.uniform(-0.5, 0.5, (n, 1, 1, 3))
    masks = np.zeros((n, SHAPES, SIZE, SIZE), bool)
    for i in range(n):
        for k in range(SHAPES):
            side = rng.uniform(10, 40)
            cx, cy = rng.uniform(side / 2, SIZE - side / 2, 2)
            kind = rng.integers(3)
            dx, dy = (x - cx) / (side / 2), (y - cy) / (side / 2)
            if kind == 0:
                inside = dx**2 + dy**2 <= 1
            elif kind == 1:
                inside = (np.abs(dx) <= 1) & (np.abs(dy) <= 1)
            else:
                inside = (dy <= 1) & (dy >= 2 * np.abs(dx) - 1)
            masks[i, :k] &= ~inside  # occluded by the new shape
            masks[i, k] = inside
            images[i][inside] = rng.uniform(-1.5, 1.5, 3)
    boxes = np.zeros((n, SHAPES, 4))
    for i, k in np.ndindex(n, SHAPES):
        rows, cols = np.nonzero(masks[i, k])
        if len(rows):
            boxes[i, k] = cols.min(), rows.min(), cols.max() + 1, rows.max() + 1
    return images.astype(np.float32), boxes.astype(np.float32), masks


def mask_targets(masks: np.ndarray, boxes: np.ndarray) -> jax.Array:
    """Mask R-CNN's targets: each instance's mask averaged over MASK x MASK bins of its box."""
    n = masks.shape[0] * SHAPES
    rows = np.concatenate([np.arange(n)[:, None], boxes.reshape(n, 4)], 1).astype(np.float32)
    full = jnp.asarray(masks.reshape(n, SIZE, SIZE, 1), jnp.float32)
    targets = roi_align(full, jnp.asarray(rows), MASK, channel_axis=-1)
    return targets.reshape(*boxes.shape[:2], MASK, MASK)


class MaskBranch(nnx.Module):
    """Two-level backbone, multi-scale RoIAlign, and a mask head of 28x28 logits."""

    def __init__(self, rngs: nnx.Rngs, width: int = 32):
        conv = dict(kernel_size=(3, 3), rngs=rngs)
        self.stem = nnx.Conv(3, width, strides=(2, 2), **conv)  # 32x32
        self.down = nnx.Conv(width, width, strides=(2, 2), **conv)  # 16x16
        self.lateral = nnx.Conv(width, width, kernel_size=(1, 1), rngs=rngs)
        self.head1 = nnx.Conv(width, width, **conv)
        self.head2 = nnx.Conv(width, width, **conv)
        self.up = nnx.ConvTranspose(width, width, kernel_size=(2, 2), strides=(2, 2), rngs=rngs)
        self.logits = nnx.Conv(width, 1, kernel_size=(1, 1), rngs=rngs)

    def __call__(self, images: jax.Array, boxes: jax.Array) -> jax.Array:
        """(N, 64, 64, 3) images and (N, K, 4) boxes -> (N, K, 28, 28) mask logits."""
        fine = nnx.relu(self.stem(images))
        coarse = nnx.relu(self.down(fine))
        n, h, w, c = fine.shape
        fine = self.lateral(fine) + jax.image.resize(coarse, (n, h, w, c), "nearest")
        crops = multi_scale_roi_align(
            [fine, coarse], boxes, CROP, 2, (SIZE, SIZE), channel_axis=-1, **LEVELS
        )
        h = crops.reshape(-1, CROP, CROP, c)
        h = nnx.relu(self.head2(nnx.relu(self.head1(h))))
        h = self.logits(nnx.relu(self.up(h)))
        return h.reshape(*boxes.shape[:2], MASK, MASK)


@nnx.jit
def train_step(model, optimizer, images, boxes, targets):
    def loss_fn(model):
        return optax.sigmoid_binary_cross_entropy(model(images, boxes), targets).mean()

    loss, grads = nnx.value_and_grad(loss_fn)(model)
    optimizer.update(model, grads)
    return loss


@jax.jit
def paste(masks: jax.Array, boxes: jax.Array) -> jax.Array:
    """Pastes (N, K, 28, 28) mask probabilities into their (N, K) boxes: (N, K, 64, 64)."""
    flat = boxes.reshape(-1, 4)
    axes = paste_axes(flat, SIZE, SIZE)
    pasted = grid_sample_separable(masks.reshape(-1, 1, MASK, MASK), axes, align_corners=False)
    return pasted.reshape(*boxes.shape[:2], SIZE, SIZE)


@nnx.jit
def predict(model, images, boxes):
    return paste(jax.nn.sigmoid(model(images, boxes)), boxes) >= 0.5


def mean_iou(predicted: np.ndarray, masks: np.ndarray) -> float:
    """Mean of |predicted & true| / |predicted | true| over the instances left visible."""
    visible = masks.any((-1, -2))
    union = (predicted | masks).sum((-1, -2))[visible]
    return float(np.mean((predicted & masks).sum((-1, -2))[visible] / union))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--quick", action="store_true", help="60 steps, for smoke tests")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(pathlib.Path(__file__).with_suffix(".png")))
    args = parser.parse_args()
    steps = 60 if args.quick else args.steps
    rng = np.random.default_rng(args.seed)
    images, boxes, masks = draw_scenes(rng, 1024)
    test_images, test_boxes, test_masks = draw_scenes(rng, 128)
    targets = mask_targets(masks, boxes)
    model = MaskBranch(nnx.Rngs(args.seed))
    optimizer = nnx.Optimizer(model, optax.adam(2e-3), wrt=nnx.Param)
    before = np.asarray(predict(model, test_images, test_boxes))
    iou_before = mean_iou(before, test_masks)
    start, losses = time.perf_counter(), []
    for _ in range(steps):
        pick = rng.choice(len(images), args.batch, replace=False)
        losses.append(float(train_step(model, optimizer, images[pick], boxes[pick], targets[pick])))
    seconds = time.perf_counter() - start
    after = np.asarray(predict(model, test_images, test_boxes))
    iou_after = mean_iou(after, test_masks)
    print(f"trained {steps} steps of {args.batch} scenes in {seconds:.1f} s")
    print(f"loss {np.mean(losses[:10]):.3f} -> {np.mean(losses[-10:]):.3f}")
    print(f"held-out mask IoU: before {iou_before:.3f}, after {iou_after:.3f}")
    plot(test_images[:4], before[:4], after[:4], args.out)
    print(f"wrote {args.out}")


def plot(images, before, after, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colours = np.array([[1, 0.2, 0.2], [0.2, 1, 0.2], [0.3, 0.5, 1]])
    fig, axes = plt.subplots(2, len(images), figsize=(2.2 * len(images), 4.8))
    for row, (masks, title) in enumerate(((before, "before"), (after, "after training"))):
        for ax, image, scene in zip(axes[row], images, masks, strict=True):
            shown = np.clip((image - image.min()) / np.ptp(image), 0, 1)
            for k in range(SHAPES):
                shown[scene[k]] = 0.4 * shown[scene[k]] + 0.6 * colours[k]
            ax.imshow(shown)
            ax.set_axis_off()
        axes[row][0].set_title(f"pasted masks, {title}", loc="left", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=80)


if __name__ == "__main__":
    main()
