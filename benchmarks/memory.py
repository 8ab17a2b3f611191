"""Peak memory of forward+backward from XLA's compiled memory analysis.

    python benchmarks/memory.py

Case: N=8, C=64, 128x128 -> 128x128, float32, bilinear and bicubic; reports the
temporaries XLA allocates as a multiple of input + grid + output bytes.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jax_gridsample import grid_sample


def main():
    n, c, h, w = 8, 64, 128, 128
    x = jax.ShapeDtypeStruct((n, c, h, w), jnp.float32)
    g = jax.ShapeDtypeStruct((n, h, w, 2), jnp.float32)
    base = 4 * (n * c * h * w * 2 + n * h * w * 2)  # input + output + grid bytes
    print(f"input+grid+output: {base / 2**20:.1f} MiB")
    for mode in ("bilinear", "nearest", "bicubic"):
        for layout in (1, -1):
            xs = x if layout == 1 else jax.ShapeDtypeStruct((n, h, w, c), jnp.float32)

            def loss(x, g, mode=mode, layout=layout):
                return jnp.sum(grid_sample(x, g, mode, channel_axis=layout) ** 2)

            for tag, f in (
                ("forward", jax.jit(lambda x, g, loss=loss: loss(x, g))),
                ("fwd+bwd", jax.jit(jax.grad(loss, argnums=(0, 1)))),
            ):
                m = f.lower(xs, g).compile().memory_analysis()
                temp = m.temp_size_in_bytes
                print(
                    f"{mode:8s} channel_axis={layout:2d} {tag:8s}: temporaries "
                    f"{temp / 2**20:7.1f} MiB = {temp / base:5.2f} x (input+grid+output)"
                )


if __name__ == "__main__":
    main()
