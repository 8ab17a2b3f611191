"""Same-process A/B: this checkout's jax_gridsample against another git revision's.

    python benchmarks/ab.py --base HEAD~1 [--suite all] [--cases mask,stn] [--repeats 21]

The base revision's package is extracted with `git archive` into a temporary
directory and imported under another name, so both versions run in one
process on the same arrays; their samples alternate (A, B, B, A, ...), each
after one untimed call. Prints medians, interquartile ranges and the ratio
new/base per case of `bench.py`: `grid_sample`'s, with `--suite separable`
`grid_sample_separable`'s, with `--suite roi` RoIAlign's, with `all` every one;
forward and fwd+bwd. Writes them as JSON with `--json`. Use it to show that a
change did not slow a case down: the medians of two separate `bench.py` runs on
this shared machine vary by more than most changes.
"""

from __future__ import annotations

import argparse
import importlib
import io
import json
import pathlib
import subprocess
import sys
import tarfile
import tempfile

import jax
import jax.numpy as jnp
import numpy as np
from bench import CASES, SEPARABLE_CASES, _inputs, _stats, _time, cpu_model

import jax_gridsample


def _import_revision(rev: str, root: pathlib.Path):
    """Imports ``jax_gridsample`` as of git revision ``rev`` as module ``jax_gridsample_base``."""
    repo = pathlib.Path(__file__).resolve().parent.parent
    blob = subprocess.run(
        ["git", "archive", rev, "jax_gridsample"], cwd=repo, check=True, capture_output=True
    ).stdout
    with tarfile.open(fileobj=io.BytesIO(blob)) as tar:
        tar.extractall(root, filter="data")
    (root / "jax_gridsample").rename(root / "jax_gridsample_base")
    for path in (root / "jax_gridsample_base").glob("*.py"):
        text = path.read_text().replace("jax_gridsample.", "jax_gridsample_base.")
        path.write_text(
            text.replace("from jax_gridsample import", "from jax_gridsample_base import")
        )
    sys.path.insert(0, str(root))
    return importlib.import_module("jax_gridsample_base")


def _compiled(module, spec, nhwc, arrays):
    shape, out, mode, pad, align = spec
    x, g, ct = arrays

    def f(a, b):
        return module.grid_sample(a, b, mode, pad, align, channel_axis=-1 if nhwc else 1)

    return _pair(f, ct, x, g)


def _compiled_separable(module, spec, arrays):
    mode, pad = spec[2:4]
    x, ax, ay, ct = arrays

    def f(a, x_axis, y_axis):
        return module.grid_sample_separable(a, (x_axis, y_axis), mode, pad, False)

    return _pair(f, ct, x, ax, ay)


def _pair(f, ct, *args):
    """``f`` and the gradient of ``sum(f * ct)`` w.r.t. every argument, compiled."""

    def loss(*a):
        return jnp.sum(f(*a) * ct)

    fwd = jax.jit(f).lower(*args).compile()
    bwd = jax.jit(jax.grad(loss, argnums=tuple(range(len(args))))).lower(*args).compile()
    return {"forward": lambda: fwd(*args), "fwd+bwd": lambda: bwd(*args)}


def _grid_cases():
    for name, spec in CASES.items():
        nhwc = "NHWC" in name
        x, g, ct = (jnp.asarray(a) for a in _inputs(spec[0], spec[1]))
        if nhwc:
            x, ct = jnp.moveaxis(x, 1, -1), jnp.moveaxis(ct, 1, -1)
        yield name, lambda m, s=spec, n=nhwc, a=(x, g, ct): _compiled(m, s, n, a)


def _separable_cases():
    for name, spec in SEPARABLE_CASES.items():
        shape, out, make_axes = spec[0], spec[1], spec[4]
        rng = np.random.default_rng(0)
        x = rng.standard_normal(shape).astype(np.float32)
        ax, ay = (a.astype(np.float32) for a in make_axes(rng, shape[0], out[1], out[0]))
        ct = rng.standard_normal(shape[:2] + out).astype(np.float32)
        arrays = tuple(jnp.asarray(a) for a in (x, ax, ay, ct))
        yield f"separable {name}", lambda m, s=spec, a=arrays: _compiled_separable(m, s, a)


def _roi_cases():
    from roi import ROI_CASES, pooler, roi_inputs

    for name, spec in ROI_CASES.items():
        feats, rows, cot = roi_inputs(spec)
        arrays = ([jnp.asarray(f) for f in feats], jnp.asarray(cot))

        def compiled(module, spec=spec, rows=rows, arrays=arrays):
            return _pair(pooler(module, spec, rows), arrays[1], arrays[0])

        yield f"roi {name}", compiled


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--base", required=True, help="git revision to compare against")
    parser.add_argument("--suite", choices=("grid", "separable", "roi", "all"), default="grid")
    parser.add_argument("--cases", default="", help="comma-separated substrings to select")
    parser.add_argument("--repeats", type=int, default=21)
    parser.add_argument("--inner", type=int, default=3)
    parser.add_argument("--json", default="")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        base = _import_revision(args.base, pathlib.Path(tmp))
        results = []
        print(f"{'case':48s} {'tag':8s} {'base ms':>9s} {'new ms':>9s} {'new/base':>8s}")
        cases = []
        if args.suite in ("grid", "all"):
            cases.append(_grid_cases())
        if args.suite in ("separable", "all"):
            cases.append(_separable_cases())
        if args.suite in ("roi", "all"):
            cases.append(_roi_cases())
        for name, compiled in (c for suite in cases for c in suite):
            if args.cases and not any(s in name for s in args.cases.split(",")):
                continue
            fns = {"base": compiled(base), "new": compiled(jax_gridsample)}
            for tag in ("forward", "fwd+bwd"):
                pair = {k: v[tag] for k, v in fns.items()}
                samples = {k: [] for k in pair}
                for f in pair.values():
                    _time(f, jax.block_until_ready, 2)
                for r in range(args.repeats):
                    for k in ("base", "new") if r % 2 == 0 else ("new", "base"):
                        _time(pair[k], jax.block_until_ready, 1)
                        samples[k].append(_time(pair[k], jax.block_until_ready, args.inner))
                stats = {k: _stats(v) for k, v in samples.items()}
                ratio = stats["new"]["median_ms"] / stats["base"]["median_ms"]
                results.append({"case": name, "tag": tag, **stats, "ratio": ratio})
                print(
                    f"{name:48s} {tag:8s} {stats['base']['median_ms']:9.3f} "
                    f"{stats['new']['median_ms']:9.3f} {ratio:8.2f}",
                    flush=True,
                )
    if args.json:
        env = {
            "jax": jax.__version__,
            "cpu": cpu_model(),
            "base": args.base,
            "repeats": args.repeats,
            "inner": args.inner,
        }
        with open(args.json, "w") as f:
            json.dump({"env": env, "results": results}, f, indent=1)


if __name__ == "__main__":
    main()
