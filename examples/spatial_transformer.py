"""A spatial transformer network (Flax NNX + optax) on distorted digits.

scikit-learn's 8x8 `load_digits` (no download) are upscaled and placed in a
40x40 canvas under random rotation, scale and translation. Two models with the
same classifier and the same training budget are compared:

* baseline: the classifier sees the whole canvas, resampled to 16x16;
* STN: a localisation net predicts an affine `theta` (initialised to the
  identity), and `affine_grid` + `grid_sample` resample the canvas to 16x16
  through it, so the classifier can see a centred, upright, zoomed-in digit.

    python examples/spatial_transformer.py            # ~2-4 minutes on 2 CPU cores
    python examples/spatial_transformer.py --quick    # a smoke run for CI
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
from sklearn.datasets import load_digits

from jax_gridsample import affine_grid, grid_sample

CANVAS, VIEW = 40, 16


def distort(key: jax.Array, digits: jax.Array) -> jax.Array:
    """Places `(N, 8, 8)` digits in `(N, 1, CANVAS, CANVAS)` canvases at random poses."""
    n = digits.shape[0]
    k1, k2, k3 = jax.random.split(key, 3)
    angle = jax.random.uniform(k1, (n,), minval=-0.9, maxval=0.9)
    scale = jax.random.uniform(k2, (n,), minval=0.35, maxval=0.55)  # digit / canvas
    shift = jax.random.uniform(k3, (n, 2), minval=-0.5, maxval=0.5)
    # theta maps canvas coordinates to digit coordinates (the inverse pose).
    cos, sin = jnp.cos(angle) / scale, jnp.sin(angle) / scale
    rot = jnp.stack([jnp.stack([cos, -sin], -1), jnp.stack([sin, cos], -1)], -2)
    trans = -jnp.einsum("nij,nj->ni", rot, shift, precision="highest")
    theta = jnp.concatenate([rot, trans[..., None]], axis=-1)
    grid = affine_grid(theta, (n, 1, CANVAS, CANVAS), align_corners=False)
    return grid_sample(digits[:, None] / 16.0, grid, mode="bicubic", align_corners=False)


class Classifier(nnx.Module):
    """A small MLP on a `(N, 1, VIEW, VIEW)` view: sensitive to pose, on purpose."""

    def __init__(self, rngs: nnx.Rngs):
        self.hidden = nnx.Linear(VIEW * VIEW, 128, rngs=rngs)
        self.out = nnx.Linear(128, 10, rngs=rngs)

    def __call__(self, view: jax.Array) -> jax.Array:
        return self.out(nnx.relu(self.hidden(view.reshape(view.shape[0], -1))))


class Localizer(nnx.Module):
    """Predicts `(N, 2, 3)` affine matrices, starting at the identity."""

    def __init__(self, rngs: nnx.Rngs):
        self.conv1 = nnx.Conv(1, 8, kernel_size=(5, 5), strides=(2, 2), rngs=rngs)
        self.conv2 = nnx.Conv(8, 16, kernel_size=(5, 5), strides=(2, 2), rngs=rngs)
        self.hidden = nnx.Linear(16 * 10 * 10, 64, rngs=rngs)
        self.theta = nnx.Linear(
            64,
            6,
            kernel_init=nnx.initializers.zeros,
            bias_init=lambda *_: jnp.array([1.0, 0, 0, 0, 1.0, 0]),
            rngs=rngs,
        )

    def __call__(self, canvas: jax.Array) -> jax.Array:
        h = jnp.transpose(canvas, (0, 2, 3, 1))  # NCHW -> NHWC for flax convs
        h = nnx.relu(self.conv2(nnx.relu(self.conv1(h))))
        h = nnx.relu(self.hidden(h.reshape(h.shape[0], -1)))
        return self.theta(h).reshape(-1, 2, 3)


class Model(nnx.Module):
    def __init__(self, use_stn: bool, rngs: nnx.Rngs):
        self.localizer = Localizer(rngs) if use_stn else None
        self.classifier = Classifier(rngs)

    def view(self, canvas: jax.Array) -> jax.Array:
        n = canvas.shape[0]
        if self.localizer is None:  # identity transform: the whole canvas
            theta = jnp.tile(jnp.array([[1.0, 0, 0], [0, 1.0, 0]]), (n, 1, 1))
        else:
            theta = self.localizer(canvas)
        grid = affine_grid(theta, (n, 1, VIEW, VIEW), align_corners=False)
        return grid_sample(canvas, grid, padding_mode="zeros", align_corners=False)

    def __call__(self, canvas: jax.Array) -> jax.Array:
        return self.classifier(self.view(canvas))


@nnx.jit
def train_step(model: Model, optimizer: nnx.Optimizer, canvas: jax.Array, labels: jax.Array):
    def loss_fn(model):
        logits = model(canvas)
        return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

    loss, grads = nnx.value_and_grad(loss_fn)(model)
    optimizer.update(model, grads)
    return loss


@nnx.jit
def accuracy(model: Model, canvas: jax.Array, labels: jax.Array) -> jax.Array:
    return jnp.mean(jnp.argmax(model(canvas), -1) == labels)


def train(use_stn: bool, data, steps: int, batch: int, seed: int):
    x_train, y_train, x_test, y_test = data
    model = Model(use_stn, nnx.Rngs(seed))
    optimizer = nnx.Optimizer(model, optax.adam(1e-3), wrt=nnx.Param)
    key = jax.random.key(seed + 1)
    losses = []
    for _ in range(steps):
        key, k_idx, k_pose = jax.random.split(key, 3)
        idx = jax.random.randint(k_idx, (batch,), 0, x_train.shape[0])
        canvas = distort(k_pose, x_train[idx])  # fresh poses every step
        losses.append(float(train_step(model, optimizer, canvas, y_train[idx])))
    return model, losses, float(accuracy(model, x_test, y_test))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--quick", action="store_true", help="200 steps, for smoke tests")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(pathlib.Path(__file__).with_suffix(".png")))
    args = parser.parse_args()
    steps = 200 if args.quick else args.steps

    digits = load_digits()
    images = jnp.asarray(digits.images, jnp.float32)
    labels = jnp.asarray(digits.target)
    perm = np.random.default_rng(args.seed).permutation(len(labels))
    train_idx, test_idx = perm[:1400], perm[1400:]
    x_test = distort(jax.random.key(1234), images[test_idx])  # one fixed distorted test set
    data = (images[train_idx], labels[train_idx], x_test, labels[test_idx])

    results = {}
    for use_stn in (False, True):
        name = "STN" if use_stn else "baseline"
        start = time.perf_counter()
        model, losses, acc = train(use_stn, data, steps, args.batch, args.seed)
        took = time.perf_counter() - start
        first, last = np.mean(losses[:20]), np.mean(losses[-20:])
        print(
            f"{name:8s}: test accuracy {acc:.3f}  loss {first:.3f} -> {last:.3f}  "
            f"({steps} steps, {took:.0f} s)"
        )
        results[name] = (model, acc)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    model = results["STN"][0]
    views = np.asarray(model.view(x_test[:8]))
    # One subfigure per row, each with its own title: row titles set on the
    # axes overlapped the row above once tight_layout packed the images.
    fig = plt.figure(figsize=(12, 3.8), layout="constrained")
    rows = fig.subfigures(2, 1)
    titles = ("distorted input", "after the transformer")
    pictures = (np.asarray(x_test[:8, 0]), views[:, 0])
    for row, title, images in zip(rows, titles, pictures, strict=True):
        row.suptitle(title, x=0.01, ha="left")
        for ax, image in zip(row.subplots(1, 8), images, strict=True):
            ax.imshow(image, cmap="gray")
            ax.axis("off")
    fig.suptitle(
        f"baseline {results['baseline'][1]:.1%} vs STN {results['STN'][1]:.1%} "
        f"test accuracy ({steps} steps each)"
    )
    fig.savefig(args.out, dpi=80)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
