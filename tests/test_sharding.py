"""Batch-sharded inputs on a device mesh: same numbers, same sharding, no collectives.

Runs in a subprocess with 8 forced CPU devices, so the rest of the suite keeps
its single-device configuration.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent(
    """
    import contextlib, sys
    import jax, jax.numpy as jnp, numpy as np
    from jax.sharding import NamedSharding, PartitionSpec as P
    from jax_gridsample import affine_grid, grid_sample, multi_scale_roi_align, roi_align

    assert jax.device_count() == 8, jax.devices()
    rng = np.random.default_rng(0)
    COLLECTIVES = ("all-gather", "all-reduce", "all-to-all", "collective-permute",
                   "reduce-scatter")

    def check(name, f, *args, allow=()):
        name = f"{name} [{MODE}]"
        sharded = [jax.device_put(a, batch) for a in args]
        compiled = f.lower(*sharded).compile()  # run and inspected: one compile
        out = compiled(*sharded)
        ref = f(*[jax.device_put(a, NamedSharding(mesh, P())) for a in args])  # replicated
        for o, r in zip(jax.tree.leaves(out), jax.tree.leaves(ref)):
            assert o.sharding.is_equivalent_to(batch, o.ndim), (name, o.sharding)
            o, r = np.asarray(o), np.asarray(r)
            # float32 tolerance of the suite (the two compilations may fuse differently)
            assert np.abs(o - r).max() <= 1e-5 * max(1.0, np.abs(r).max()), name
        found = [c for c in COLLECTIVES if c in compiled.as_text() and c not in allow]
        assert not found, (name, found)
        print(name, "ok: identical, batch-sharded, no collectives")

    # Auto axes (the partitioner places the work) and Explicit axes (shardings
    # are part of the types; jax.make_mesh's default from jax 0.12 on), the
    # latter with and without a mesh set.
    AxisType = jax.sharding.AxisType
    MODE = sys.argv[1]  # the mesh axis types, the test's parameter
    mesh = jax.make_mesh((8,), ("batch",), axis_types=(getattr(AxisType, MODE.split(",")[0]),))
    batch = NamedSharding(mesh, P("batch"))
    context = jax.set_mesh(mesh) if "set_mesh" in MODE else contextlib.nullcontext()
    with context:
        for ndim, mode in ((2, "bicubic"), (3, "bilinear")):
            x = rng.standard_normal((16, 3) + (6, 7, 8)[-ndim:]).astype(np.float32)
            g = rng.uniform(-1.2, 1.2, (16,) + (4, 5, 3)[-ndim:] + (ndim,)).astype(np.float32)
            for pad in ("zeros", "reflection"):
                fwd = jax.jit(lambda x, g: grid_sample(x, g, mode, pad, False))
                check(f"{ndim + 2}-D {mode} {pad} forward", fwd, x, g)
                def loss(x, g):
                    return (grid_sample(x, g, mode, pad, False) ** 2).sum() / 2
                grad = jax.jit(jax.grad(loss, argnums=(0, 1)))
                # The loss sums over the batch; its gradient per example stays local.
                check(f"{ndim + 2}-D {mode} {pad} gradients", grad, x, g)
            xl = np.moveaxis(x, 1, -1).copy()
            check(f"{ndim + 2}-D channels-last", jax.jit(
                lambda x, g: grid_sample(x, g, channel_axis=-1)), xl, g)

        # C >= 2K: the forward stores each point's offsets and weights first.
        x = rng.standard_normal((16, 8, 6, 7)).astype(np.float32)
        g = rng.uniform(-1.2, 1.2, (16, 4, 5, 2)).astype(np.float32)
        check("4-D bilinear, 8 channels", jax.jit(lambda x, g: grid_sample(x, g)), x, g)
        check("4-D bilinear, 8 channels, channels-last", jax.jit(
            lambda x, g: grid_sample(x, g, channel_axis=-1)), np.moveaxis(x, 1, -1).copy(), g)

        theta = rng.standard_normal((16, 2, 3)).astype(np.float32)
        check("affine_grid", jax.jit(lambda t: affine_grid(t, (16, 3, 9, 11))), theta)

        # RoIAlign's (N, K, 4) boxes, vmapped over images, the input gradient too. Adaptive
        # sampling takes its chunk counts over the whole batch: one all-reduce of a scalar.
        x = rng.standard_normal((16, 3, 9, 11)).astype(np.float32)
        boxes = rng.uniform(-2, 12, (16, 5, 4)).astype(np.float32)
        pool = jax.jit(lambda x, b: roi_align(x, b, 3, 1.0, 2))
        check("roi_align, (N, K, 4) boxes", pool, x, boxes)
        pooled = jax.jit(jax.grad(lambda x, b: (roi_align(x, b, 3, 1.0, 2) ** 2).sum()))
        check("roi_align gradient", pooled, x, boxes)
        adaptive = jax.jit(lambda x, b: roi_align(x, b, 3, 1.0, 0))
        check("roi_align, adaptive", adaptive, x, boxes, allow=("all-reduce",))
        levels = jax.jit(lambda a, c, b: multi_scale_roi_align([a, c], b, 2, 2, (18, 22)))
        check("multi_scale_roi_align", levels, x, x[:, :, ::2, ::2].copy(), boxes)
    print("ALL OK")
    """
)


# One subprocess per kind of mesh axes, each about a minute on 2 cores: the full suite's.
@pytest.mark.parametrize("axis_types", ["Auto", "Explicit", "Explicit, set_mesh"])
def test_batch_sharding_on_eight_devices(axis_types):
    env = dict(
        os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8", JAX_PLATFORMS="cpu"
    )
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT, axis_types],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ALL OK" in result.stdout
