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


@pytest.mark.slow
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


@pytest.mark.slow
def test_mask_branch_quick_run_learns(tmp_path):
    for module in ("flax", "optax", "matplotlib"):
        pytest.importorskip(module)
    out = tmp_path / "mask_branch.png"
    stdout = _run("mask_branch.py", "--quick", "--out", str(out))
    assert out.stat().st_size > 10_000
    loss = stdout.split("loss ")[1].split()
    assert float(loss[2]) < float(loss[0]) - 0.03, stdout
    iou = stdout.split("held-out mask IoU: before ")[1].split()
    assert float(iou[2]) > float(iou[0].rstrip(",")) + 0.2, stdout


def test_mask_branch_targets_and_paste_by_hand():
    pytest.importorskip("flax")
    sys.path.insert(0, str(EXAMPLES))
    import jax.numpy as jnp
    import numpy as np
    from mask_branch import MASK, SHAPES, SIZE, mask_targets, mean_iou, paste

    # A mask filling columns 8..23 of rows 4..19 (pixel j at coordinate j, aligned=False).
    # Its own box takes one sample per bin, at 8 + (p + 0.5) * 16 / 28: the last two read
    # pixel 23 at weights 6/7 and 2/7. A box twice as wide takes two per bin, 8/7 apart.
    masks = np.zeros((1, SHAPES, SIZE, SIZE), bool)
    masks[0, :, 4:20, 8:24] = True
    boxes = np.array([[[8, 4, 24, 20], [8, 4, 40, 20], [8, 4, 24, 20]]], np.float32)
    targets = np.asarray(mask_targets(masks, boxes))
    assert targets.shape == (1, SHAPES, MASK, MASK)
    own = np.ones(MASK)
    own[26:] = 6 / 7, 2 / 7
    wide = np.zeros(MASK)
    wide[:13], wide[13] = 1, (6 / 7 + 2 / 7) / 2
    # float32 sample positions near 24 are within 2e-6 of these.
    np.testing.assert_allclose(targets[0, 0], np.outer(own, own), atol=1e-5)
    np.testing.assert_allclose(targets[0, 1], np.outer(own, wide), atol=1e-5)
    # A mask of ones pasted into its box covers exactly the box's pixels at 0.5.
    pasted = np.asarray(paste(jnp.ones((1, SHAPES, MASK, MASK)), jnp.asarray(boxes))) >= 0.5
    np.testing.assert_array_equal(pasted[0, 0], masks[0, 0])
    assert mean_iou(pasted[:, :1], masks[:, :1]) == 1.0
    assert abs(mean_iou(pasted[:, 1:2], masks[:, 1:2]) - 0.5) < 1e-12
