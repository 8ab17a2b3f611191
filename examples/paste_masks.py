"""Paste instance masks into an image the way Mask R-CNN does.

A box (x0, y0, x1, y1) in image pixels receives a mask M of any resolution: each
image pixel centre (x + 0.5, y + 0.5) is mapped to the mask's normalised
coordinates, g = (x + 0.5 - x0) / (x1 - x0) * 2 - 1, and the mask is read there
with grid_sample(..., align_corners=False), whose -1/+1 are the mask's outer
edges. The grid is separable: one row of x values, one column of y values, so
a batch of masks goes through grid_sample_separable, which never builds the
grid and whose gradient has no scatter-add. The script times it against
grid_sample on the expanded grid (and torch's grid_sample when installed).

    python examples/paste_masks.py [--out examples/paste_masks.png] [--quick]
"""

from __future__ import annotations

import argparse
import pathlib
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from jax_gridsample import grid_sample, grid_sample_separable

WIDTH, HEIGHT = 500, 300


def diamond(size: int = 100) -> np.ndarray:
    """Filled diamond with corners (50, 0), (99, 50), (50, 99), (0, 50) as (x, y)."""
    corners = np.array([(50, 0), (99, 50), (50, 99), (0, 50)], float)
    y, x = np.mgrid[0:size, 0:size].astype(float)
    inside = np.ones((size, size), bool)
    for (ax, ay), (bx, by) in zip(corners, np.roll(corners, -1, axis=0), strict=True):
        inside &= (bx - ax) * (y - ay) - (by - ay) * (x - ax) >= 0  # left of each edge
    return inside.astype(np.float32)


def paste_axes(boxes: jax.Array, width: int = WIDTH, height: int = HEIGHT):
    """Per box (x0, y0, x1, y1), the mask coordinates of the image's pixel centres.

    Returns ``(x, y)``, `(N, W)` and `(N, H)`: the axes of the paste grid.
    """
    x0, y0, x1, y1 = (boxes[:, i : i + 1] for i in range(4))
    gx = (jnp.arange(width)[None] + 0.5 - x0) / (x1 - x0) * 2 - 1
    gy = (jnp.arange(height)[None] + 0.5 - y0) / (y1 - y0) * 2 - 1
    return gx, gy


def paste_grid(box: jax.Array, width: int = WIDTH, height: int = HEIGHT) -> jax.Array:
    """`(H, W, 2)` grid sending image pixels into the mask's [-1, 1] square."""
    gx, gy = paste_axes(box[None], width, height)
    return jnp.stack(jnp.broadcast_arrays(gx[0][None, :], gy[0][:, None]), axis=-1)


def paste(mask: jax.Array, box: jax.Array) -> jax.Array:
    """Pastes one `(h, w)` mask into an `(H, W)` image at ``box`` (x0, y0, x1, y1)."""
    out = grid_sample(mask[None, None], paste_grid(box)[None], align_corners=False)
    return out[0, 0]


@jax.jit
def paste_batch(masks: jax.Array, boxes: jax.Array) -> jax.Array:
    """Pastes `(N, h, w)` masks at `(N, 4)` boxes: `(N, H, W)`, one call, no grid built."""
    return grid_sample_separable(masks[:, None], paste_axes(boxes), align_corners=False)[:, 0]


@jax.jit
def paste_batch_expanded(masks: jax.Array, boxes: jax.Array) -> jax.Array:
    """The same through `grid_sample` on the expanded `(N, H, W, 2)` grid."""
    return jax.vmap(paste)(masks, boxes)


def _median_ms(fn, *args, repeats: int = 15) -> float:
    jax.block_until_ready(fn(*args))  # compile and warm up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def time_paths(masks: np.ndarray, boxes: np.ndarray) -> None:
    """Prints forward and forward+backward times of both paths (and torch's)."""
    m, b = jnp.asarray(masks), jnp.asarray(boxes)
    ct = jnp.asarray(np.random.default_rng(0).standard_normal((len(masks), HEIGHT, WIDTH)), m.dtype)
    rows = {}
    for name, fn in (("grid_sample_separable", paste_batch), ("grid_sample", paste_batch_expanded)):
        grad = jax.jit(jax.grad(lambda m, b, fn=fn: jnp.sum(fn(m, b) * ct), argnums=(0, 1)))
        rows[name] = (_median_ms(fn, m, b), _median_ms(grad, m, b))
    try:
        import torch
    except ImportError:
        torch = None
    if torch is not None:
        grid = np.asarray(jax.vmap(paste_grid)(b))
        tm = torch.tensor(masks)[:, None].requires_grad_(True)
        tg = torch.tensor(grid).requires_grad_(True)
        tct = torch.tensor(np.asarray(ct))[:, None]

        def t_fwd():
            with torch.no_grad():
                return torch.nn.functional.grid_sample(tm, tg, align_corners=False)

        def t_bwd():
            out = torch.nn.functional.grid_sample(tm, tg, align_corners=False)
            return torch.autograd.grad(out, (tm, tg), tct)

        rows["torch grid_sample"] = (_median_ms(t_fwd), _median_ms(t_bwd))
    print(f"pasting {masks.shape[0]} masks {masks.shape[1:]} -> {HEIGHT}x{WIDTH} (median ms):")
    for name, (fwd, bwd) in rows.items():
        print(f"  {name:22s} forward {fwd:7.2f}   forward+backward {bwd:7.2f}")


def worked_example() -> None:
    """A 4x4 worked example: the input is 4y + x + 1, read at (±0.5, ±0.5)."""
    image = jnp.arange(1.0, 17.0).reshape(1, 1, 4, 4)
    grid = jnp.array([[[[-0.5, -0.5], [0.5, -0.5]], [[-0.5, 0.5], [0.5, 0.5]]]])
    for align in (True, False):
        out = grid_sample(image, grid, align_corners=align)[0, 0]
        print(f"4x4 example, align_corners={align}: {np.asarray(out).tolist()}")


def compare_with_torch(mask: np.ndarray, box: np.ndarray) -> None:
    try:
        import torch
    except ImportError:
        print("torch not installed: skipping the comparison")
        return
    grid = np.asarray(paste_grid(jnp.asarray(box)))[None]
    ref = torch.nn.functional.grid_sample(
        torch.tensor(mask)[None, None], torch.tensor(grid), align_corners=False
    )[0, 0].numpy()
    ours = np.asarray(paste(jnp.asarray(mask), jnp.asarray(box)))
    print(f"max |ours - torch| on the diamond: {np.abs(ours - ref).max():.3g}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=str(pathlib.Path(__file__).with_suffix(".png")))
    parser.add_argument("--quick", action="store_true", help="skip the timings, for smoke tests")
    args = parser.parse_args()

    mask = diamond()
    box = np.array([100, 100, 200, 300], np.float32)
    pasted = np.asarray(paste(jnp.asarray(mask), jnp.asarray(box)))
    print(
        f"diamond pasted into a {WIDTH}x{HEIGHT} image at {box.tolist()}: "
        f"area {pasted.sum():.1f} px (mask area {mask.sum():.0f} px x scale 2)"
    )
    compare_with_torch(mask, box)
    worked_example()

    # A batch: three shapes, boxes partly outside the image included.
    yy, xx = np.mgrid[0:28, 0:28] / 27.0 * 2 - 1
    masks = np.stack(
        [
            diamond(28 * 4)[::4, ::4],
            (xx**2 + yy**2 < 0.8).astype(np.float32),
            (
                (np.abs(xx) < 0.9) & (np.abs(yy) < 0.9) & ~((np.abs(xx) < 0.5) & (np.abs(yy) < 0.5))
            ).astype(np.float32),
            (xx**2 + yy**2 < 0.8).astype(np.float32),
        ]
    )
    boxes = np.array(
        [[20, 30, 140, 160], [300, 40, 480, 200], [-60, 180, 90, 360], [420, -50, 560, 90]],
        np.float32,
    )
    batch = np.asarray(paste_batch(jnp.asarray(masks), jnp.asarray(boxes)))
    expanded = np.asarray(paste_batch_expanded(jnp.asarray(masks), jnp.asarray(boxes)))
    print(
        f"batch of {len(masks)} masks pasted in one jitted call: {batch.shape}, "
        f"max |separable - grid_sample| = {np.abs(batch - expanded).max():.2g}"
    )
    # Mask R-CNN's case: 16 masks of 28x28 in random boxes.
    rng = np.random.default_rng(0)
    many = rng.random((16, 28, 28)).astype(np.float32)
    corner = rng.uniform([-50, -50], [WIDTH - 50, HEIGHT - 50], (16, 2))
    many_boxes = np.concatenate([corner, corner + rng.uniform(20, 250, (16, 2))], 1)
    if not args.quick:
        time_paths(many, many_boxes.astype(np.float32))

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 3.6), gridspec_kw=dict(width_ratios=[1, 2.2, 2.2]))
    axes[0].imshow(mask, cmap="gray")
    axes[0].set_title("100x100 mask")
    axes[1].imshow(pasted, cmap="gray", extent=(0, WIDTH, HEIGHT, 0))
    axes[1].add_patch(plt.Rectangle((100, 100), 100, 200, fill=False, ec="r"))
    axes[1].set_title("pasted at box (100, 100, 200, 300)")
    axes[2].imshow(batch.max(axis=0), cmap="magma", extent=(0, WIDTH, HEIGHT, 0))
    for x0, y0, x1, y1 in boxes:
        axes[2].add_patch(plt.Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, ec="c"))
    axes[2].set_xlim(0, WIDTH)
    axes[2].set_ylim(HEIGHT, 0)
    axes[2].set_title("batch: 4 masks, 4 boxes (some partly outside)")
    fig.tight_layout()
    fig.savefig(args.out, dpi=80)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
