"""The `roi` suite of bench.py: roi_align and multi_scale_roi_align against torchvision.

    python benchmarks/bench.py --suite roi --json benchmarks/results_cpu_roi.json

Cases, on the FPN levels of a Mask R-CNN batch (2 images of 800x1216, C = 256,
P2 200x304 ... P5 25x38, float32), proposals of sizes log-uniform in [16, 600]
px and aspect ratios in [1/2, 2]: torchvision's box head (MultiScaleRoIAlign,
512 boxes per image, 7x7, sampling_ratio 2), its mask head (64 boxes per
image, 14x14) and detectron2's default pooler (ROIAlign with aligned=True and
sampling_ratio=0 on each box's level, levels as detectron2 assigns them, one
call per level).
"fwd+bwd" differentiates w.r.t. the features. Each case also records XLA's
memory analysis and what the compiled gradient contains.
"""

from __future__ import annotations

import math
import re
from collections import OrderedDict

import jax
import jax.numpy as jnp
import numpy as np
from bench import _compile, _run, median_cell

import jax_gridsample

IMAGE = (800, 1216)
LEVELS = ((200, 304), (100, 152), (50, 76), (25, 38))
CHANNELS = 256

# name: (boxes per image, output size, sampling_ratio, detectron2's pooler)
ROI_CASES = {
    "box head 2x512 7x7 sr2": (512, 7, 2, False),
    "mask head 2x64 14x14 sr2": (64, 14, 2, False),
    "detectron2 2x512 7x7 aligned sr0": (512, 7, 0, True),
}


def _boxes(rng, per_image):
    """(2 * per_image, 5) rows, image by image: proposals inside the image, of sides
    ``size * sqrt(aspect)`` and ``size / sqrt(aspect)``, aspect in [1/2, 2] as the anchors'."""
    size = np.exp(rng.uniform(np.log(16), np.log(600), (2, per_image, 1)))
    aspect = np.exp(rng.uniform(np.log(0.5), np.log(2), (2, per_image, 1)))
    sides = np.concatenate([size * np.sqrt(aspect), size / np.sqrt(aspect)], -1)
    sides = np.minimum(sides, IMAGE[::-1])
    corner = rng.uniform(0, 1, (2, per_image, 2)) * (np.array(IMAGE[::-1]) - sides)
    coords = np.concatenate([corner, corner + sides], -1).reshape(-1, 4)
    image = np.repeat(np.arange(2), per_image)[:, None]
    return np.concatenate([image, coords], 1).astype(np.float32)


def detectron2_levels(rows):
    """detectron2's assign_boxes_to_levels: floor(4 + log2(sqrt(area) / 224 + 1e-8)), P2..P5."""
    side = np.sqrt((rows[:, 3] - rows[:, 1]) * (rows[:, 4] - rows[:, 2]))
    return np.clip(np.floor(4 + np.log2(side / 224 + 1e-8)), 2, 5).astype(int) - 2


def _gradient_contents(fn, *arrays):
    """How many scatters and gathers the compiled gradient holds."""
    text = jax.jit(fn).lower(*arrays).compile().as_text()
    return {
        "scatters": len(re.findall(r"= \S+ scatter\(", text)),
        "gathers": len(re.findall(r"= \S+ gather\(", text)),
    }


def roi_inputs(spec):
    """The case's features (4 levels), box rows (K, 5) and output cotangent, as numpy."""
    per_image, out = spec[:2]
    rng = np.random.default_rng(0)
    feats = [rng.standard_normal((2, CHANNELS, h, w)).astype(np.float32) for h, w in LEVELS]
    rows = _boxes(rng, per_image)
    cot = rng.standard_normal((len(rows), CHANNELS, out, out)).astype(np.float32)
    return feats, rows, cot


def pooler(module, spec, rows):
    """The case's pooling of a list of feature levels with ``module``'s functions."""
    _, out, ratio, detectron2 = spec
    if detectron2:
        levels = detectron2_levels(rows)
        # Both sides give the boxes level by level, in that order.
        level_rows = [jnp.asarray(rows[levels == i]) for i in range(len(LEVELS))]

        def ours(fs):
            parts = [
                module.roi_align(f, r, out, 1 / 2 ** (i + 2), ratio, True)
                for i, (f, r) in enumerate(zip(fs, level_rows, strict=True))
            ]
            return jnp.concatenate(parts)

        return ours
    jrows = jnp.asarray(rows)
    return lambda fs: module.multi_scale_roi_align(fs, jrows, out, ratio, IMAGE)


def bench_roi_case(name, spec, args, torch, tdev):
    feats, rows, cot = roi_inputs(spec)
    jfeats = [jnp.asarray(f) for f in feats]
    jcot = jnp.asarray(cot)
    ours = pooler(jax_gridsample, spec, rows)

    def loss(fs):
        return jnp.sum(ours(fs) * jcot)

    fns = {}
    result = {"case": name, "kind": "roi", "dtype": "float32", "compile_s": {}}
    _compile(result, fns, "ours", ours, jax.grad(loss), jfeats)
    memory = {}
    for tag, fn in (("forward", ours), ("fwd+bwd", jax.grad(loss))):
        m = jax.jit(fn).lower(jfeats).compile().memory_analysis()
        memory[tag] = {
            "temp_mib": m.temp_size_in_bytes / 2**20,
            "output_mib": m.output_size_in_bytes / 2**20,
            "argument_mib": m.argument_size_in_bytes / 2**20,
        }
    result["memory"] = memory
    result["gradient"] = _gradient_contents(jax.grad(loss), jfeats)
    torch_fns = _torchvision_fns(torch, tdev, feats, rows, cot, spec)
    return _run(result, fns, torch_fns, args, torch, tdev)


def _torchvision_fns(torch, tdev, feats, rows, cot, spec):
    if torch is None:
        return {}
    import torchvision

    per_image, out, ratio, detectron2 = spec
    tfeats = [torch.tensor(f, device=tdev).requires_grad_(True) for f in feats]
    tcot = torch.tensor(cot, device=tdev)
    if detectron2:
        levels = detectron2_levels(rows)
        level_rows = [torch.tensor(rows[levels == i], device=tdev) for i in range(len(LEVELS))]

        def pool():
            parts = [
                torchvision.ops.roi_align(f, r, out, 1 / 2 ** (i + 2), ratio, True)
                for i, (f, r) in enumerate(zip(tfeats, level_rows, strict=True))
            ]
            return torch.cat(parts)

    else:
        names = [f"p{i + 2}" for i in range(len(LEVELS))]
        pooler = torchvision.ops.MultiScaleRoIAlign(names, out, ratio)
        per = [torch.tensor(rows[rows[:, 0] == i, 1:], device=tdev) for i in range(2)]

        def pool():
            return pooler(OrderedDict(zip(names, tfeats, strict=True)), per, [IMAGE] * 2)

    def t_fwd():
        with torch.no_grad():
            return pool()

    def t_bwd():
        return torch.autograd.grad(pool(), tfeats, tcot)

    return {("torch", "forward"): t_fwd, ("torch", "fwd+bwd"): t_bwd}


def roi_table(args, torch, tdev, selected):
    names = [n for n in ROI_CASES if selected(n, args)]
    if not names:
        return []
    print(
        f"{'roi case':34s} {'ours fwd':>9s} {'tv fwd':>9s} {'ratio':>6s} {'ours f+b':>9s} "
        f"{'tv f+b':>9s} {'ratio':>6s} {'temp MiB fwd, f+b':>18s}"
    )
    rows = []
    for name in names:
        r = bench_roi_case(name, ROI_CASES[name], args, torch, tdev)
        rows.append(r)
        t = r["timings"]
        cells = []
        for tag in ("forward", "fwd+bwd"):
            cells += [median_cell(t, f"ours {tag}", 9), median_cell(t, f"torch {tag}", 9)]
            cells.append(f"{r.get(f'ratio {tag}', math.nan):6.2f}")
        mem = r["memory"]
        cells.append(f"{mem['forward']['temp_mib']:8.0f}, {mem['fwd+bwd']['temp_mib']:8.0f}")
        print(f"{name:34s} {' '.join(cells)}", flush=True)
    return rows
