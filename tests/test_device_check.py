"""Smoke test of the prepared accelerator run, so that it works the first time it meets a GPU."""

from __future__ import annotations

import json
import os
import pathlib
import platform
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).parent.parent


@pytest.fixture(name="bench")
def _bench():
    """``benchmarks/bench.py``, imported the way the scripts next to it import it."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import bench

    return bench


@pytest.mark.slow
def test_device_check_dry_run(tmp_path, bench):
    run = subprocess.run(
        # A budget a slow 2-core CPU shared with another pytest worker does not
        # run out of: the dry run took about 4 minutes unconstrained there, and
        # the default budget skipped the last separable variant.
        [
            sys.executable,
            "benchmarks/device_check.py",
            "--dry-run",
            "--budget",
            "1500",
            "--out",
            str(tmp_path),
        ],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    report = json.loads((tmp_path / "device_check.json").read_text())
    assert not report["skipped"], report["skipped"]
    assert report["parity"]["returncode"] == 0 and not report["parity"]["failed"]
    assert " passed" in report["parity"]["summary"]
    assert (tmp_path / "parity.txt").stat().st_size > 0
    variants = {(r["dtype"], r["variant"]) for r in report["results"]}
    assert ("bfloat16", "policy") in variants
    assert {v for d, v in variants if d == "float32"} == {
        "policy",
        "fused+loop",
        "fused_stored+loop",
        "loop+loop",
    }
    cases = {r["case"] for r in report["results"]}
    assert any(c.startswith("mask-paste") for c in cases)  # the contended scatter-add
    for row in report["results"]:
        assert {"ours forward", "ours fwd+bwd"} <= set(row["timings"])
    separable = {(r["variant"], r["case"]) for r in report["separable"]}
    assert {v for v, _ in separable} == {
        "policy",
        "taps+matmul",
        "taps_rows+matmul",
        "taps+expanded",
        "expanded+expanded",
    }
    assert {c for _, c in separable} == set(bench.SEPARABLE_CASES)
    for row in report["separable"]:
        assert {"separable fwd+bwd", "expanded fwd+bwd"} <= set(row["timings"])


def test_separable_plot_ratios_fall_back_to_the_expanded_grid_without_torch(bench):
    def row(**ms):
        return {"timings": {k.replace("_", " "): {"median_ms": v} for k, v in ms.items()}}

    with_torch = [row(separable_forward=1.0, expanded_forward=4.0, torch_forward=2.0)]
    assert bench.separable_ratios(with_torch, "forward") == (
        "torch",
        {"separable": [0.5], "expanded": [2.0]},
    )
    without = [row(separable_forward=1.0, expanded_forward=4.0)]
    assert bench.separable_ratios(without, "forward") == ("expanded", {"separable": [0.25]})


def test_benchmarks_record_the_cpu_model(tmp_path, bench):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nvendor_id\t: X\nmodel name\t: Example CPU @ 2.00GHz\n")
    assert bench.cpu_model(str(cpuinfo)) == "Example CPU @ 2.00GHz"
    # The family, model and widest AVX, where given: the name may not tell generations apart.
    lines = "model name\t: AMD EPYC\ncpu family\t: {}\nmodel\t\t: {}\nflags\t\t: {}\n"
    cpuinfo.write_text(lines.format(25, 17, "fpu avx2 avx512f avx512bw"))
    assert bench.cpu_model(str(cpuinfo)) == "AMD EPYC (family 25, model 17, AVX-512)"
    cpuinfo.write_text(lines.format(23, 1, "fpu avx avx2"))
    assert bench.cpu_model(str(cpuinfo)) == "AMD EPYC (family 23, model 1, AVX2)"
    # Without a cpuinfo file, what the platform module reports.
    missing = str(tmp_path / "missing")
    assert bench.cpu_model(missing) == (platform.processor() or platform.machine())


def test_benchmarks_skip_torch_where_its_cpu_half_kernels_overflow(bench):
    # 181 x 181 = 32761 pixels fit torch's 16-bit offsets; 128 x 257 = 32896 do not.
    assert bench.torch_skipped("cpu", "bfloat16", (4, 3, 181, 181)) is None
    assert bench.torch_skipped("cpu", "bfloat16", (1, 1, 1, 32767)) is None
    reason = bench.torch_skipped("cpu", "bfloat16", (1, 1, 1, 32768))
    assert reason is not None and "32768 pixels" in reason
    assert bench.torch_skipped("cpu", "float16", (4, 3, 128, 257)) is not None
    # 5-D inputs, float32 on the CPU, and CUDA in any dtype index with wider offsets.
    assert bench.torch_skipped("cpu", "bfloat16", (2, 4, 64, 64, 64)) is None
    assert bench.torch_skipped("cpu", "float32", (4, 3, 256, 256)) is None
    assert bench.torch_skipped("cuda", "bfloat16", (4, 3, 256, 256)) is None
