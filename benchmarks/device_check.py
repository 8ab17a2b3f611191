"""One prepared run for an accelerator machine: parity on its backend, then benchmarks.

    PYTHONPATH=. python benchmarks/device_check.py --out DIR            # on the GPU, ~5 min
    PYTHONPATH=. python benchmarks/device_check.py --dry-run --out DIR  # CPU, tiny sizes, a subset

Runs from the checkout (no install, no package registry needed: jax, numpy,
pytest and chex must be there; torch and matplotlib are used when present).
Writes into DIR:

* ``device_check.json``: the environment; the parity pass (the quick tier of
  the fixture and policy tests on the default backend: every mode x padding x
  align_corners x 4-D/5-D, values and both gradients, nearest exactly, the
  affine_grid fixtures, every formulation forced); and the benchmark rows:
  every case of `bench.py` against torch (CUDA when JAX runs on a GPU), in
  float32 with each formulation of `_policy` side by side (the plan chosen,
  then each value formulation forced), and in bfloat16 with the chosen plan. Mask pasting's
  fwd+bwd is the contended scatter-add case. Before those, ``separable``:
  `bench.py`'s separable cases (grid_sample_separable against grid_sample
  and torch on the expanded grid), float32, the plan chosen and four
  other plans forced.
* ``parity.txt``: pytest's output; ``bench_float32.png``, ``bench_bfloat16.png``.

Each stage stops starting new work once its share of ``--budget`` seconds is
spent and records what it skipped, so the run ends in time with what it has.

``--dry-run`` checks the script itself on any backend, at tiny sizes: the
parity pass on a few tests, every case with the chosen plan, and every other
variant (and bfloat16) on `DRY_RUN_CASES` only. Each variant x case is a
program of its own to compile, and the suite tests every plan's numbers.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import pathlib
import platform
import subprocess
import sys
import time

import jax
import numpy as np

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

import bench  # noqa: E402 -- benchmarks/, next to this file

from jax_gridsample import __version__, _policy  # noqa: E402

# (label, forward formulation, derivatives formulation); None keeps the policy's.
VARIANTS = [("policy", None, None)]
VARIANTS += [(f"{f}+loop", f, "loop") for f in _policy.FORWARDS]


# Cases that the dry run takes through every variant: mask pasting (the
# contended scatter-add) and a channels-last input (the script moves its
# axes); the formulations themselves are checked by tests/test_policy.py.
DRY_RUN_CASES = (
    "mask-paste 16x1x28x28->300x500",
    "deform-attn NHWC 16x32x32x32->100x16",
)
DRY_RUN_SEPARABLE_CASES = ("mask-paste 16x1x28x28->300x500",)


def _in_dry_run(label: str, dtype: str, case: str, cases: tuple[str, ...]) -> bool:
    """Whether a job runs in the dry run: every case with the plan chosen, the rest on ``cases``."""
    return (label == "policy" and dtype == "float32") or case in cases


def _tiny(spec):
    """A case shrunk for the dry run: N <= 2, C <= 4, every spatial size <= 8."""
    shape, out, *rest = spec
    shape = (min(shape[0], 2), min(shape[1], 4)) + tuple(min(s, 8) for s in shape[2:])
    return (shape, tuple(min(s, 8) for s in out), *rest)


def _chosen_plan(name: str, spec) -> list[str]:
    """The policy's plan for a `bench.CASES` entry on the default backend."""
    shape, out, mode = spec[0], spec[1], spec[2]
    return list(_policy.grid_sample_plan(mode, len(out), shape[1], "NHWC" in name))


def parity(out_dir: pathlib.Path, dry_run: bool, budget: float) -> dict:
    """The quick tier of the fixture and policy tests on the default backend, in a subprocess."""
    cmd = [sys.executable, "-m", "pytest", "-q", "-m", "not slow", "-p", "no:cacheprovider"]
    cmd += ["tests/test_parity_fixtures.py", "tests/test_policy.py", "tests/test_spec_cases.py"]
    # Each test compiles its own program: the subset fits the budget on one
    # process. Every mode x padding x align_corners x rank, float32 on exact
    # pixel positions (fixture matrix and pixel grids), half types, affine_grid
    # (a TF32 matmul would miss its 1e-5 tolerance), every formulation forced.
    subset = (
        "(test_matrix and s1) or exact_pixel or half_dtypes or affine"
        " or every_formulation or reflected_half_pixel"
    )
    if dry_run:
        subset = "(test_matrix and 4d-bilinear-float32-s1) or affine or reflected_half_pixel"
    cmd += ["-k", subset]
    start = time.perf_counter()
    try:
        run = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=budget)
        output, code = run.stdout + run.stderr, run.returncode
    except subprocess.TimeoutExpired as e:
        output, code = f"{e.stdout or ''}\ntimed out after {budget:.0f} s", -1
    (out_dir / "parity.txt").write_text(output)
    tail = [line for line in output.splitlines() if " passed" in line or " failed" in line]
    failed = [line.split(" ")[1] for line in output.splitlines() if line.startswith("FAILED")]
    return {
        "command": " ".join(cmd[1:]),
        "returncode": code,
        "summary": tail[-1] if tail else "",
        "failed": failed,
        "seconds": time.perf_counter() - start,
    }


def benchmarks(args, torch, tdev, budget: float) -> tuple[list, list]:
    """Rows of `bench.bench_case` per dtype, case and variant; and what the budget skipped."""

    def forced(forward, derivatives):
        def context(name, spec):
            chosen = _chosen_plan(name, spec)
            plan = _policy.Plan(forward or chosen[0], derivatives or chosen[1])
            return _forced("grid_sample_plan", plan)

        return context

    plan = [("float32", *variant) for variant in VARIANTS] + [("bfloat16", "policy", None, None)]
    jobs = [
        (dtype, dtype, label, name, spec, forced(forward, derivatives), bench.bench_case)
        for dtype, label, forward, derivatives in plan
        for name, spec in bench.CASES.items()
        if not args.dry_run or _in_dry_run(label, dtype, name, DRY_RUN_CASES)
    ]
    return _run_jobs(jobs, args, torch, tdev, budget)


SEPARABLE_VARIANTS = [("policy", None)] + [
    (f"{f}+{d}", _policy.Plan(f, d))
    for f, d in (("taps", "matmul"), ("taps_rows", "matmul"), ("taps", "expanded"))
    + (("expanded", "expanded"),)
]


@contextlib.contextmanager
def _forced(name: str, plan):
    """Makes `_policy`'s function ``name`` return ``plan`` (the plan is part of jit's key)."""
    chosen = getattr(_policy, name)
    setattr(_policy, name, lambda *args, **kwargs: plan)
    try:
        yield
    finally:
        setattr(_policy, name, chosen)


def separable_benchmarks(args, torch, tdev, budget: float) -> tuple[list, list]:
    """Rows of `bench.bench_separable_case` per case and variant; and what the budget skipped."""

    def forced(plan):
        return lambda name, spec: (
            _forced("separable_plan", plan) if plan else contextlib.nullcontext()
        )

    jobs = [
        ("separable", "float32", label, name, spec, forced(plan), bench.bench_separable_case)
        for label, plan in SEPARABLE_VARIANTS
        for name, spec in bench.SEPARABLE_CASES.items()
        if not args.dry_run or _in_dry_run(label, "float32", name, DRY_RUN_SEPARABLE_CASES)
    ]
    return _run_jobs(jobs, args, torch, tdev, budget)


def _run_jobs(jobs, args, torch, tdev, budget: float) -> tuple[list, list]:
    """Runs ``(tag, dtype, variant, case, spec, context(case, spec), bench_fn)`` jobs.

    Jobs left when ``budget`` seconds are spent are skipped and listed.
    """
    start, rows, skipped = time.perf_counter(), [], []
    for tag, dtype, label, name, spec, context, run in jobs:
        if time.perf_counter() - start > budget:
            skipped.append(f"{tag} {label} {name}")
            continue
        case_args = argparse.Namespace(
            dtype=dtype, repeats=args.repeats, inner=args.inner, pause=0.0
        )
        spec = _tiny(spec) if args.dry_run else spec
        with context(name, spec):
            row = run(name, spec, case_args, torch, tdev)
        row["variant"] = label
        rows.append(row)
        print(
            f"{tag:9s} {label:36s} {name:38s} "
            f"fwd {row.get('ratio forward', float('nan')):6.2f} "
            f"f+b {row.get('ratio fwd+bwd', float('nan')):6.2f}",
            flush=True,
        )
    return rows, skipped


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True, help="directory for the JSON, PNGs and log")
    parser.add_argument("--dry-run", action="store_true", help="tiny sizes, on any backend")
    parser.add_argument("--budget", type=float, default=330.0, help="seconds for everything")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--inner", type=int, default=5)
    args = parser.parse_args()
    if args.dry_run:
        args.repeats, args.inner = 3, 1
    out_dir = pathlib.Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()

    try:
        import torch
    except ImportError:
        torch, tdev = None, "cpu"
    else:
        tdev = "cuda" if jax.default_backend() == "gpu" and torch.cuda.is_available() else "cpu"
    env = {
        "jax": jax.__version__,
        "jax_gridsample": __version__,
        "backend": jax.default_backend(),
        "devices": [str(d.device_kind) for d in jax.devices()],
        "python": platform.python_version(),
        "cpu": bench.cpu_model(),
        "numpy": np.__version__,
        "torch": getattr(torch, "__version__", None),
        "torch_device": tdev,
        "torch_device_name": torch.cuda.get_device_name() if tdev == "cuda" else None,
        "dry_run": args.dry_run,
        "repeats": args.repeats,
        "inner": args.inner,
        "policy": {name: _chosen_plan(name, spec) for name, spec in bench.CASES.items()},
    }
    print(json.dumps(env), flush=True)
    report = {"env": env}
    report["parity"] = parity(out_dir, args.dry_run, budget=0.45 * args.budget)
    print("parity:", report["parity"]["summary"], flush=True)
    remaining = args.budget - (time.perf_counter() - started)
    report["separable"], skipped = separable_benchmarks(args, torch, tdev, 0.25 * remaining)
    remaining = args.budget - (time.perf_counter() - started)
    report["results"], report["skipped"] = benchmarks(args, torch, tdev, remaining)
    report["skipped"] += skipped
    report["seconds"] = time.perf_counter() - started
    (out_dir / "device_check.json").write_text(json.dumps(report, indent=1))
    for dtype in ("float32", "bfloat16"):
        rows = [r for r in report["results"] if r["dtype"] == dtype and r["variant"] == "policy"]
        if torch is not None and rows:
            try:
                bench._plot(
                    rows,
                    {**env, "device": env["devices"][0], "dtype": dtype},
                    out_dir / f"bench_{dtype}.png",
                )
            except ImportError:  # no matplotlib: the JSON has everything
                pass
    print(f"wrote {out_dir} in {report['seconds']:.0f} s", flush=True)
    return 0 if report["parity"]["returncode"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
