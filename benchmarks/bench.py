"""Times jax_gridsample against torch's grid_sample (and two plain-JAX baselines).

    python benchmarks/bench.py --json out.json --plot out.png [--dtype bfloat16]

Method (see benchmarks/README.md): compile timed separately; warm-up calls; each
sample times `--inner` calls ending in `block_until_ready` (JAX) or
`torch.cuda.synchronize` (CUDA); ours and torch alternate sample by sample in
the same process, in a rotating order, each sample after one untimed call;
medians and interquartile spread over `--repeats` samples.
"forward" samples the output; "fwd+bwd" also computes gradients w.r.t. input
and grid for a fixed cotangent.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

import jax_gridsample
from jax_gridsample import grid_sample

# name: (input shape, output spatial shape, mode, padding, align_corners)
CASES = {
    "stn 32x1x28x28": ((32, 1, 28, 28), (28, 28), "bilinear", "zeros", False),
    "flow-warp 8x64x64x64 border": ((8, 64, 64, 64), (64, 64), "bilinear", "border", True),
    "images 4x3x256x256": ((4, 3, 256, 256), (256, 256), "bilinear", "zeros", False),
    "mask-paste 16x1x28x28->300x500": ((16, 1, 28, 28), (300, 500), "bilinear", "zeros", False),
    "deform-attn 16x32x32x32->100x16": ((16, 32, 32, 32), (100, 16), "bilinear", "zeros", False),
    "bicubic 4x3x128x128 border": ((4, 3, 128, 128), (128, 128), "bicubic", "border", False),
    "nearest 4x3x256x256": ((4, 3, 256, 256), (256, 256), "nearest", "zeros", False),
    "volume 2x4x32^3": ((2, 4, 32, 32, 32), (32, 32, 32), "bilinear", "zeros", False),
    # channel_axis=-1: our input is (N, H, W, C), torch's its native (N, C, H, W).
    "flow-warp NHWC 8x64x64x64 border": ((8, 64, 64, 64), (64, 64), "bilinear", "border", True),
    "deform-attn NHWC 16x32x32x32->100x16": (
        (16, 32, 32, 32),
        (100, 16),
        "bilinear",
        "zeros",
        False,
    ),
}


def _inputs(shape, out, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape).astype(np.float32)
    g = rng.uniform(-1.1, 1.1, (shape[0],) + out + (len(out),)).astype(np.float32)
    ct = rng.standard_normal(shape[:2] + out).astype(np.float32)
    return x, g, ct


def _four_gathers(x, g):
    """The naive hand-written port: bilinear, zeros, align_corners=False, 4 gathers."""
    n, _, h, w = x.shape
    px = ((g[..., 0] + 1) * w - 1) / 2
    py = ((g[..., 1] + 1) * h - 1) / 2
    x0, y0 = jnp.floor(px), jnp.floor(py)
    out = 0.0
    b = jnp.arange(n)[:, None, None]
    for dx in (0, 1):
        for dy in (0, 1):
            xi, yi = x0 + dx, y0 + dy
            wgt = (1 - jnp.abs(px - xi)) * (1 - jnp.abs(py - yi))
            ok = (xi >= 0) & (xi < w) & (yi >= 0) & (yi < h)
            v = x[b, :, jnp.clip(yi, 0, h - 1).astype(int), jnp.clip(xi, 0, w - 1).astype(int)]
            out = out + jnp.where(ok, wgt, 0.0)[..., None] * v
    return jnp.moveaxis(out, -1, 1)


def _map_coordinates(x, g):
    """jax.scipy.ndimage.map_coordinates (order 1, constant 0), vmapped over N and C."""
    _, _, h, w = x.shape
    coords = jnp.stack([((g[..., 1] + 1) * h - 1) / 2, ((g[..., 0] + 1) * w - 1) / 2])

    def one(img, c):
        return jax.scipy.ndimage.map_coordinates(img, list(c), order=1, mode="constant")

    return jax.vmap(lambda xi, ci: jax.vmap(lambda im: one(im, ci))(xi))(
        x, jnp.moveaxis(coords, 0, 1)
    )


def _time(fn, sync, inner):
    start = time.perf_counter()
    for _ in range(inner):
        r = fn()
    sync(r)
    return (time.perf_counter() - start) / inner


def _stats(samples):
    q = statistics.quantiles(samples, n=4)
    return {"median_ms": 1e3 * statistics.median(samples), "iqr_ms": 1e3 * (q[2] - q[0])}


def bench_case(name, spec, args, torch, tdev):
    shape, out, mode, pad, align = spec
    x, g, ct = _inputs(shape, out)
    dt = jnp.dtype(args.dtype)
    jx, jg, jct = (jnp.asarray(a).astype(dt) for a in (x, g, ct))
    nhwc = "NHWC" in name
    if nhwc:  # same values, channels-last layout for ours
        jx, jct = jnp.moveaxis(jx, 1, -1), jnp.moveaxis(jct, 1, -1)

    def loss(a, b, f):
        return jnp.sum(f(a, b).astype(jnp.float32) * jct.astype(jnp.float32))

    def ours(a, b):
        return grid_sample(a, b, mode, pad, align, channel_axis=-1 if nhwc else 1)

    impls = {"ours": ours}
    if not nhwc and len(out) == 2 and mode == "bilinear" and pad == "zeros" and not align:
        impls["four_gathers"] = _four_gathers
        impls["map_coordinates"] = _map_coordinates
    fns = {}
    result = {"case": name, "dtype": args.dtype, "compile_s": {}}
    for key, f in impls.items():
        fwd = jax.jit(f)
        bwd = jax.jit(jax.grad(lambda a, b, f=f: loss(a, b, f), argnums=(0, 1)))
        for tag, fn in (("forward", fwd), ("fwd+bwd", bwd)):
            t0 = time.perf_counter()
            compiled = fn.lower(jx, jg).compile()
            result["compile_s"][f"{key} {tag}"] = time.perf_counter() - t0
            fns[(key, tag)] = lambda c=compiled: c(jx, jg)

    torch_fns = {}
    if torch is not None:
        F = torch.nn.functional
        tdt = getattr(torch, args.dtype)
        tx = torch.tensor(x, device=tdev).to(tdt).requires_grad_(True)
        tg = torch.tensor(g, device=tdev).to(tdt).requires_grad_(True)
        tct = torch.tensor(ct, device=tdev).to(tdt)

        def t_fwd():
            with torch.no_grad():
                return F.grid_sample(tx, tg, mode=mode, padding_mode=pad, align_corners=align)

        def t_bwd():
            o = F.grid_sample(tx, tg, mode=mode, padding_mode=pad, align_corners=align)
            return torch.autograd.grad(o, (tx, tg), tct)

        torch_fns = {("torch", "forward"): t_fwd, ("torch", "fwd+bwd"): t_bwd}

    def jsync(r):
        jax.block_until_ready(r)

    def tsync(r):
        if tdev == "cuda":
            torch.cuda.synchronize()

    timed = {k: (f, jsync) for k, f in fns.items()} | {k: (f, tsync) for k, f in torch_fns.items()}
    for f, s in timed.values():  # warm-up
        for _ in range(2):
            _time(f, s, 1)
    samples = {k: [] for k in timed}
    keys = list(timed)
    for r in range(args.repeats):  # interleaved, in an order that rotates
        for k in keys[r % len(keys) :] + keys[: r % len(keys)]:
            f, s = timed[k]
            # The sample right after torch's shares the cores with torch's
            # spin-waiting OpenMP workers (see README): rotating the order
            # spreads that over all implementations, and one untimed call
            # absorbs part of it. --pause idles before that call.
            if args.pause:
                time.sleep(args.pause)
            _time(f, s, 1)
            samples[k].append(_time(f, s, args.inner))
    result["timings"] = {f"{k[0]} {k[1]}": _stats(v) for k, v in samples.items()}
    for tag in ("forward", "fwd+bwd"):
        if ("torch", tag) in samples:
            result[f"ratio {tag}"] = statistics.median(samples[("ours", tag)]) / statistics.median(
                samples[("torch", tag)]
            )
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", default="benchmarks/results.json")
    parser.add_argument("--plot", default="benchmarks/results.png")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--inner", type=int, default=3)
    parser.add_argument(
        "--pause", type=float, default=0.0, help="seconds idle before each sample (default none)"
    )
    parser.add_argument("--cases", default="", help="comma-separated substrings to select")
    parser.add_argument("--no-torch", action="store_true")
    parser.add_argument(
        "--replot", metavar="JSON", help="only redraw --plot from a JSON this script wrote"
    )
    args = parser.parse_args()
    if args.replot:
        with open(args.replot) as f:
            recorded = json.load(f)
        _plot(recorded["results"], recorded["env"], args.plot)
        return

    torch, tdev = None, "cpu"
    if not args.no_torch:
        try:
            import torch
        except ImportError:
            print("torch not installed: timing jax only")
        else:
            tdev = "cuda" if jax.default_backend() == "gpu" and torch.cuda.is_available() else "cpu"
    env = {
        "jax": jax.__version__,
        "jax_gridsample": jax_gridsample.__version__,
        "backend": jax.default_backend(),
        "device": str(jax.devices()[0].device_kind),
        "python": platform.python_version(),
        "machine": platform.machine(),
        "torch": getattr(torch, "__version__", None),
        "torch_device": tdev,
        "torch_threads": torch.get_num_threads() if torch is not None else None,
        "dtype": args.dtype,
        "repeats": args.repeats,
        "inner": args.inner,
        "pause_s": args.pause,
        "xla_flags": os.environ.get("XLA_FLAGS"),
    }
    if torch is not None and tdev == "cuda":
        env["torch_device_name"] = torch.cuda.get_device_name()
    print(json.dumps(env))
    selected = [n for n in CASES if not args.cases or any(s in n for s in args.cases.split(","))]
    results = []
    header = (
        f"{'case':34s} {'ours fwd':>9s} {'torch fwd':>9s} {'ratio':>6s} "
        f"{'ours f+b':>9s} {'torch f+b':>9s} {'ratio':>6s}"
    )
    print(header)
    for name in selected:
        r = bench_case(name, CASES[name], args, torch, tdev)
        results.append(r)
        t = r["timings"]

        def ms(k, t=t):
            return f"{t[k]['median_ms']:9.3f}" if k in t else f"{'-':>9s}"

        print(
            f"{name:34s} {ms('ours forward')} {ms('torch forward')} "
            f"{r.get('ratio forward', float('nan')):6.2f} {ms('ours fwd+bwd')} "
            f"{ms('torch fwd+bwd')} {r.get('ratio fwd+bwd', float('nan')):6.2f}",
            flush=True,
        )
    summary = {}
    for tag in ("forward", "fwd+bwd"):
        ratios = [r[f"ratio {tag}"] for r in results if f"ratio {tag}" in r]
        if ratios:
            summary[tag] = {
                "geomean_ratio": float(np.exp(np.mean(np.log(ratios)))),
                "max_ratio": max(ratios),
            }
            print(
                f"{tag}: geometric mean ours/torch {summary[tag]['geomean_ratio']:.2f}, "
                f"worst {summary[tag]['max_ratio']:.2f}"
            )
    with open(args.json, "w") as f:
        json.dump({"env": env, "results": results, "summary": summary}, f, indent=1)
    if summary:
        _plot(results, env, args.plot)


def _plot(results, env, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    names = [r["case"] for r in results]
    y = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(8, 0.45 * len(names) + 1.5))
    for off, tag in ((-0.2, "forward"), (0.2, "fwd+bwd")):
        ax.barh(y + off, [r.get(f"ratio {tag}", np.nan) for r in results], 0.4, label=tag)
    ax.axvline(1.0, color="k", lw=1)
    ax.set_yticks(y, names)
    ax.set_xscale("log")
    # Plain labels on powers of two only: matplotlib's default minor labels
    # on a log axis (3x10^-1, 4x10^-1, ...) ran into each other.
    low, high = ax.get_xlim()
    ticks = [2.0**k for k in range(-8, 9) if low <= 2.0**k <= high]
    ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_xlabel("time ours / torch (lower is better)")
    ax.set_title(
        f"{env['device']} ({env['backend']}), {env['dtype']}, torch on {env['torch_device']}"
    )
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=90)


if __name__ == "__main__":
    main()
