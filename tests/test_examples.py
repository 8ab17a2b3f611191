"""Smoke tests of the examples (skipped without the `examples` extra)."""

from __future__ import annotations

import pathlib
import subprocess
import sys

import pytest

EXAMPLES = pathlib.Path(__file__).parent.parent / "examples"


def _run(script, *args):
    return subprocess.run(
        [sys.executable, str(EXAMPLES / script), *args],
        capture_output=True,
        text=True,
        timeout=900,
        check=True,
    ).stdout


def test_paste_masks_writes_png(tmp_path):
    pytest.importorskip("matplotlib")
    out = tmp_path / "paste.png"
    stdout = _run("paste_masks.py", "--quick", "--out", str(out))
    assert out.stat().st_size > 10_000
    difference = float(stdout.split("max |separable - grid_sample| = ")[1].split()[0])
    assert difference < 1e-5
    # The 4x4 worked example, by hand as in test_spec_cases.test_worked_example.
    assert "align_corners=True: [[4.75, 6.25], [10.75, 12.25]]" in stdout
    assert "align_corners=False: [[3.5, 5.5], [11.5, 13.5]]" in stdout


def test_paste_masks_diamond_area():
    sys.path.insert(0, str(EXAMPLES))
    import jax.numpy as jnp
    import numpy as np
    from paste_masks import diamond, paste

    mask = diamond()
    pasted = np.asarray(paste(jnp.asarray(mask), jnp.array([100.0, 100.0, 200.0, 300.0])))
    assert pasted.shape == (300, 500)
    # The box is 100x200 pixels for a 100x100 mask: every mask pixel covers 2 image pixels.
    assert abs(pasted.sum() - 2 * mask.sum()) < 0.01 * mask.sum()
    # By hand: image row y (centre y + 0.5) reads mask row (y + 0.5 - 100) / 2 - 0.5, so
    # row 99 reads -0.75 (a quarter of mask row 0, blended with zero padding) and rows
    # up to 98 read nothing; column x reads mask column x - 100, so x >= 200 reads nothing.
    assert pasted[:99].max() == 0 and pasted[:, 200:].max() == 0
    np.testing.assert_allclose(pasted[99, 100:200], 0.25 * mask[0], atol=1e-6)


def test_spatial_transformer_quick_run_learns(tmp_path):
    for module in ("flax", "optax", "sklearn", "matplotlib"):
        pytest.importorskip(module)
    out = tmp_path / "stn.png"
    stdout = _run("spatial_transformer.py", "--quick", "--out", str(out))
    assert out.stat().st_size > 10_000
    for line in stdout.splitlines():
        if "loss" in line:  # "<name>: test accuracy A  loss FIRST -> LAST (...)"
            first, last = (float(v) for v in line.split("loss")[1].split("(")[0].split("->"))
            assert last < first - 0.05, line
