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
import functools
import json
import math
import os
import platform
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

import jax_gridsample
from jax_gridsample import grid_sample, grid_sample_separable

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


def cpu_model(cpuinfo: str = "/proc/cpuinfo") -> str:
    """The host CPU's model name (from Linux's ``cpuinfo``), else what `platform` says.

    Ratios against torch depend on the CPU (one case's differed 4x between
    two hosts), so every result records it. Where ``cpuinfo`` gives them, the
    family, model and widest AVX follow the name, which alone may not tell
    CPU generations apart (e.g. "AMD EPYC").
    """
    try:
        with open(cpuinfo) as f:
            info = dict(line.split(":", 1) for line in f if ":" in line)
    except OSError:
        info = {}
    info = {k.strip(): v.strip() for k, v in info.items()}
    name = info.get("model name")
    if not name:
        return platform.processor() or platform.machine()
    details = [f"family {info['cpu family']}, model {info['model']}"] if "model" in info else []
    flags = info.get("flags", "").split()
    details += ["AVX-512"] if "avx512f" in flags else ["AVX2"] if "avx2" in flags else []
    return f"{name} ({', '.join(details)})" if details else name


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


def _jsync(r):
    jax.block_until_ready(r)


def _torch_sync(torch, tdev):
    def sync(r):
        del r
        if tdev == "cuda":
            torch.cuda.synchronize()

    return sync


def _interleaved(timed, args):
    """``{key: [seconds per call, ...]}`` for ``timed = {key: (fn, sync)}``, samples interleaved."""
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
    return samples


def _compile(result, fns, key, forward, backward, *arrays):
    """Compiles ``forward`` and ``backward`` ahead of timing into ``fns[(key, tag)]``."""
    for tag, fn in (("forward", forward), ("fwd+bwd", backward)):
        t0 = time.perf_counter()
        compiled = jax.jit(fn).lower(*arrays).compile()
        result["compile_s"][f"{key} {tag}"] = time.perf_counter() - t0
        fns[(key, tag)] = lambda c=compiled: c(*arrays)


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
        bwd = jax.grad(lambda a, b, f=f: loss(a, b, f), argnums=(0, 1))
        _compile(result, fns, key, f, bwd, jx, jg)

    torch_fns = _torch_fns(torch, tdev, args.dtype, x, g, ct, spec[2:], result)
    return _run(result, fns, torch_fns, args, torch, tdev)


# torch's 4-D CPU kernels index half-type inputs with 16-bit offsets: past this
# many pixels per channel its results are wrong, and its backward corrupted the
# heap (the process aborted) on 256x256 inputs. Its 5-D kernels use wider ones.
TORCH_CPU_HALF_MAX_PIXELS = 2**15 - 1


def torch_skipped(tdev: str, dtype: str, shape: tuple[int, ...]) -> str | None:
    """Why torch is not timed on an input of ``shape`` `(N, C, *spatial)`, or None."""
    pixels = math.prod(shape[2:])
    half = dtype in ("bfloat16", "float16")
    if tdev == "cpu" and half and len(shape) == 4 and pixels > TORCH_CPU_HALF_MAX_PIXELS:
        return f"torch CPU {dtype}: {pixels} pixels per channel overflow its 16-bit offsets"
    return None


def _torch_fns(torch, tdev, dtype, x, g, ct, options, result):
    """torch's grid_sample forward and fwd+bwd (w.r.t. input and grid), keyed like ours.

    Empty where `torch_skipped` gives a reason, which goes in ``result["torch skipped"]``.
    """
    if torch is None:
        return {}
    skipped = torch_skipped(tdev, dtype, x.shape)
    if skipped:
        result["torch skipped"] = skipped
        return {}
    mode, pad, align = options
    F = torch.nn.functional
    tdt = getattr(torch, dtype)
    tx = torch.tensor(x, device=tdev).to(tdt).requires_grad_(True)
    tg = torch.tensor(g, device=tdev).to(tdt).requires_grad_(True)
    tct = torch.tensor(ct, device=tdev).to(tdt)

    def t_fwd():
        with torch.no_grad():
            return F.grid_sample(tx, tg, mode=mode, padding_mode=pad, align_corners=align)

    def t_bwd():
        o = F.grid_sample(tx, tg, mode=mode, padding_mode=pad, align_corners=align)
        return torch.autograd.grad(o, (tx, tg), tct)

    return {("torch", "forward"): t_fwd, ("torch", "fwd+bwd"): t_bwd}


def _run(result, fns, torch_fns, args, torch, tdev, ours="ours"):
    """Times ``fns`` and ``torch_fns`` interleaved; timings and ratios ``ours`` / torch."""
    timed = {k: (f, _jsync) for k, f in fns.items()}
    timed |= {k: (f, _torch_sync(torch, tdev)) for k, f in torch_fns.items()}
    samples = _interleaved(timed, args)
    result["timings"] = {f"{k[0]} {k[1]}": _stats(v) for k, v in samples.items()}
    for tag in ("forward", "fwd+bwd"):
        if ("torch", tag) in samples:
            result[f"ratio {tag}"] = statistics.median(samples[(ours, tag)]) / statistics.median(
                samples[("torch", tag)]
            )
    return result


def _box_axes(rng, n, width, height):
    """Mask pasting: each of ``n`` random boxes, partly outside the image at times."""
    x0 = rng.uniform(-50, width - 50, (n, 1))
    y0 = rng.uniform(-50, height - 50, (n, 1))
    w, h = rng.uniform(20, 250, (n, 1)), rng.uniform(20, 250, (n, 1))
    return (np.arange(width) + 0.5 - x0) / w * 2 - 1, (np.arange(height) + 0.5 - y0) / h * 2 - 1


def _resize_axes(rng, n, width, height, zoom=False):
    """Resizing (align_corners=False pixel centres), or a zoom by a random scale and shift."""

    def axis(size):
        g = np.tile((np.arange(size) + 0.5) / size * 2 - 1, (n, 1))
        if zoom:
            g = g * rng.uniform(0.6, 1.6, (n, 1)) + rng.uniform(-0.3, 0.3, (n, 1))
        return g

    return axis(width), axis(height)


def _seed_axes(rng, n, width, height):
    """The seed document's paste: box (x0, y0, x1, y1) = (100, 100, 200, 300)."""
    del rng
    x = (np.arange(width) + 0.5 - 100) / 100 * 2 - 1
    y = (np.arange(height) + 0.5 - 100) / 200 * 2 - 1
    return np.tile(x, (n, 1)), np.tile(y, (n, 1))


# name: (input shape, (H_out, W_out), mode, padding, axes (x, y) from (rng, N, W_out, H_out));
# align_corners=False throughout.
SEPARABLE_CASES = {
    "mask-paste 16x1x28x28->300x500": ((16, 1, 28, 28), (300, 500), "bilinear", "zeros", _box_axes),
    "seed 1x1x100x100->300x500": ((1, 1, 100, 100), (300, 500), "bilinear", "zeros", _seed_axes),
    "upsample 2x 8x64x64x64 border": (
        (8, 64, 64, 64),
        (128, 128),
        "bilinear",
        "border",
        _resize_axes,
    ),
    "downsample 0.5x 4x3x512x512": (
        (4, 3, 512, 512),
        (256, 256),
        "bilinear",
        "zeros",
        _resize_axes,
    ),
    "bicubic zoom 8x3x128x128 reflection": (
        (8, 3, 128, 128),
        (128, 128),
        "bicubic",
        "reflection",
        functools.partial(_resize_axes, zoom=True),
    ),
}


def bench_separable_case(name, spec, args, torch, tdev):
    """grid_sample_separable against grid_sample and torch on the expanded grid.

    The expanded grid is built before timing; each fwd+bwd differentiates
    w.r.t. the input and the arguments given (axis vectors, or the grid).
    """
    shape, out, mode, pad, make_axes = spec
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape).astype(np.float32)
    ax, ay = (a.astype(np.float32) for a in make_axes(rng, shape[0], out[1], out[0]))
    g = np.stack(np.broadcast_arrays(ax[:, None, :], ay[:, :, None]), axis=-1)
    ct = rng.standard_normal(shape[:2] + out).astype(np.float32)
    dt = jnp.dtype(args.dtype)
    jx, jax_, jay, jg, jct = (jnp.asarray(a).astype(dt) for a in (x, ax, ay, g, ct))

    def separable(a, x_axis, y_axis):
        return grid_sample_separable(a, (x_axis, y_axis), mode, pad, False)

    def expanded(a, b):
        return grid_sample(a, b, mode, pad, False)

    def grads(f, n):
        return jax.grad(lambda *a: jnp.sum(f(*a).astype(jnp.float32) * jct), tuple(range(n)))

    fns = {}
    result = {"case": name, "kind": "separable", "dtype": args.dtype, "compile_s": {}}
    _compile(result, fns, "separable", separable, grads(separable, 3), jx, jax_, jay)
    _compile(result, fns, "expanded", expanded, grads(expanded, 2), jx, jg)
    torch_fns = _torch_fns(torch, tdev, args.dtype, x, g, ct, (mode, pad, False), result)
    result = _run(result, fns, torch_fns, args, torch, tdev, ours="separable")
    for tag in ("forward", "fwd+bwd"):
        t = result["timings"]
        ratio = t[f"separable {tag}"]["median_ms"] / t[f"expanded {tag}"]["median_ms"]
        result[f"separable/expanded {tag}"] = ratio
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
    parser.add_argument(
        "--suite",
        default="all",
        choices=["all", "grid", "separable", "roi"],
        help="grid_sample cases (CASES), grid_sample_separable cases (SEPARABLE_CASES), both, "
        "or roi_align's (roi.py, against torchvision)",
    )
    parser.add_argument("--no-torch", action="store_true")
    parser.add_argument(
        "--replot", metavar="JSON", help="only redraw --plot from a JSON this script wrote"
    )
    args = parser.parse_args()
    if args.replot:
        with open(args.replot) as f:
            recorded = json.load(f)
        if recorded["results"]:
            _plot(recorded["results"], recorded["env"], args.plot)
        if recorded.get("separable"):
            _plot_separable(recorded["separable"], recorded["env"], _separable_plot_path(args.plot))
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
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch": getattr(torch, "__version__", None),
        "torch_device": tdev,
        "torch_threads": torch.get_num_threads() if torch is not None else None,
        "dtype": args.dtype,
        "repeats": args.repeats,
        "inner": args.inner,
        "pause_s": args.pause,
        "xla_flags": os.environ.get("XLA_FLAGS"),
    }
    if args.suite == "roi" and torch is not None:
        import torchvision

        env["torchvision"] = torchvision.__version__
    if torch is not None and tdev == "cuda":
        env["torch_device_name"] = torch.cuda.get_device_name()
    print(json.dumps(env))
    if args.suite == "roi":
        from roi import roi_table

        with open(args.json, "w") as f:
            json.dump({"env": env, "roi": roi_table(args, torch, tdev, _selected)}, f, indent=1)
        return
    selected = [n for n in CASES if args.suite in ("all", "grid") and _selected(n, args)]
    results = []
    header = (
        f"{'case':34s} {'ours fwd':>9s} {'torch fwd':>9s} {'ratio':>6s} "
        f"{'ours f+b':>9s} {'torch f+b':>9s} {'ratio':>6s}"
    )
    if selected:
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
            f"{ms('torch fwd+bwd')} {r.get('ratio fwd+bwd', float('nan')):6.2f}"
            + (f"  ({r['torch skipped']})" if "torch skipped" in r else ""),
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
    separable = _separable_table(args, torch, tdev)
    with open(args.json, "w") as f:
        record = {"env": env, "results": results, "summary": summary, "separable": separable}
        json.dump(record, f, indent=1)
    if summary:
        _plot(results, env, args.plot)
    if separable:
        _plot_separable(separable, env, _separable_plot_path(args.plot))


def _selected(name, args):
    return not args.cases or any(s in name for s in args.cases.split(","))


def _separable_plot_path(path):
    stem, dot, ext = path.rpartition(".")
    return f"{stem}_separable.{ext}" if dot else f"{path}_separable"


def median_cell(timings, key, width):
    """The median of ``timings[key]`` in ms, or a dash, ``width`` characters wide."""
    return f"{timings[key]['median_ms']:{width}.2f}" if key in timings else f"{'-':>{width}s}"


def _separable_table(args, torch, tdev):
    names = [
        n for n in SEPARABLE_CASES if args.suite in ("all", "separable") and _selected(n, args)
    ]
    if not names:
        return []
    print(
        f"{'separable case':36s} {'sep fwd':>8s} {'exp fwd':>8s} {'torch':>8s} "
        f"{'sep f+b':>8s} {'exp f+b':>8s} {'torch':>8s}  ms; sep/torch fwd, f+b"
    )
    rows = []
    for name in names:
        r = bench_separable_case(name, SEPARABLE_CASES[name], args, torch, tdev)
        rows.append(r)
        t = r["timings"]
        cells = [
            median_cell(t, k, 8)
            for tag in ("forward", "fwd+bwd")
            for k in (f"separable {tag}", f"expanded {tag}", f"torch {tag}")
        ]
        ratios = [f"{r.get(f'ratio {tag}', float('nan')):.2f}" for tag in ("forward", "fwd+bwd")]
        print(f"{name:36s} {' '.join(cells)}  {', '.join(ratios)}", flush=True)
    return rows


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
    _log2_ticks(ax)
    ax.set_xlabel("time ours / torch (lower is better)")
    host = f", {env['cpu']}" if "cpu" in env else ""
    ax.set_title(
        f"{env['device']} ({env['backend']}{host}), {env['dtype']}, torch on {env['torch_device']}"
    )
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=90)


def _log2_ticks(ax):
    """A log x axis labelled on powers of two only: matplotlib's default minor labels
    (3x10^-1, 4x10^-1, ...) ran into each other."""
    import matplotlib.ticker

    ax.set_xscale("log")
    low, high = ax.get_xlim()
    ticks = [2.0**k for k in range(-8, 9) if low <= 2.0**k <= high]
    ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())


def separable_ratios(results, tag):
    """``(base, {implementation: [time / base's time per case]})`` for ``tag``.

    The base is torch; in a ``--no-torch`` run, grid_sample on the expanded
    grid (then only the separable ratios).
    """
    base = "torch" if any(f"torch {tag}" in r["timings"] for r in results) else "expanded"
    keys = ("separable", "expanded") if base == "torch" else ("separable",)
    ratios = {
        k: [
            r["timings"][f"{k} {tag}"]["median_ms"] / r["timings"][f"{base} {tag}"]["median_ms"]
            for r in results
        ]
        for k in keys
    }
    return base, ratios


def _plot_separable(results, env, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [r["case"] for r in results]
    y = np.arange(len(names))
    legend = {"separable": "grid_sample_separable", "expanded": "grid_sample, expanded grid"}
    fig, axes = plt.subplots(1, 2, figsize=(11, 0.5 * len(names) + 1.8), sharey=True)
    for ax, tag in zip(axes, ("forward", "fwd+bwd"), strict=True):
        base, ratios = separable_ratios(results, tag)
        for off, (key, values) in zip((-0.2, 0.2), ratios.items(), strict=False):
            ax.barh(y + off, values, 0.4, label=legend[key])
        ax.axvline(1.0, color="k", lw=1)
        _log2_ticks(ax)
        ax.set_title(tag)
        reference = "torch's grid_sample" if base == "torch" else "our grid_sample"
        ax.set_xlabel(f"time / {reference} on the expanded grid")
    axes[0].set_yticks(y, names)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=2, fontsize=9)
    fig.suptitle(f"separable grids: {env['device']} ({env['backend']}), {env['dtype']}")
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    fig.savefig(path, dpi=90)


if __name__ == "__main__":
    main()
