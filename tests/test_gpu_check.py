"""bench/gpu_check.sh, the prepared GPU check: every path it runs, at tiny size on CPU.

``--tiny`` runs each part (DRR comparison, paper-scale DRR, training throughput of every model
plain and with bf16 + channels_last, sampling of every model, the torch.compile runs) at tiny
sizes on whatever device there is; TORCHDYNAMO_DISABLE=1 makes torch.compile run the module as
it is (compiling on a CPU takes minutes), so the check's own compile branch still runs. Without a
GPU the default run must skip the GPU parts with a line each and time the CPU DRR path.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

import gpu_check  # noqa: E402  (bench/ is not a package)

from kneesynth.projection.drr import DrrResult  # noqa: E402


def run_check(*args: str, timeout: int = 900) -> str:
    env = {**os.environ, "TORCHDYNAMO_DISABLE": "1"}
    result = subprocess.run(
        ["bash", str(ROOT / "bench" / "gpu_check.sh"), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout


def phantom_drrs(views: int = 6, size: int = 24) -> DrrResult:
    """Asymmetric DRRs (views, size, size): a bright blob off-centre that turns with the view."""
    rows, cols = np.indices((size, size))
    drr, bone = [], []
    for view in range(views):
        angle = 2 * np.pi * view / views
        centre_row = size / 3 + size / 8 * np.sin(angle)
        centre_col = size / 2 + size / 4 * np.cos(angle)
        blob = np.exp(-((rows - centre_row) ** 2 + (cols - centre_col) ** 2) / 8.0)
        drr.append(0.2 + 0.6 * blob * (rows < size / 2) + 0.1 * rows / size)
        bone.append(blob)
    return DrrResult(
        drr=np.array(drr, np.float32),
        bone_projection=np.array(bone, np.float32),
        angles_deg=np.arange(views) * 360.0 / views,
        projector="cpu",
    )


def test_compare_drrs_passes_close_images_and_catches_orientation_and_value_errors():
    reference = phantom_drrs()
    rng = np.random.default_rng(0)
    close = DrrResult(
        reference.drr + rng.normal(0, 0.005, reference.drr.shape).astype(np.float32),
        reference.bone_projection,
        reference.angles_deg,
        "cuda",
    )
    result = gpu_check.compare_drrs(reference, close)
    assert result["passes"] and result["orientation"]
    assert result["mean_abs"] < 0.01 and result["centroid_px"] == pytest.approx(0.0)

    flipped = DrrResult(
        reference.drr[:, ::-1], reference.bone_projection[:, ::-1], reference.angles_deg, "cuda"
    )
    result = gpu_check.compare_drrs(reference, flipped)
    assert not result["orientation"] and not result["passes"]
    assert result["centroid_px"] > 1.0

    reversed_views = np.concatenate([reference.drr[:1], reference.drr[:0:-1]])
    result = gpu_check.compare_drrs(
        reference,
        DrrResult(reversed_views, reference.bone_projection, reference.angles_deg, "cuda"),
    )
    assert not result["orientation"] and not result["passes"]

    brighter = DrrResult(reference.drr + 0.05, reference.bone_projection, reference.angles_deg, "")
    result = gpu_check.compare_drrs(reference, brighter)
    assert result["orientation"] and result["correlation"] > 0.999
    assert result["mean_abs"] == pytest.approx(0.05, rel=1e-3) and not result["passes"]


def test_every_part_runs_at_tiny_size():
    output = run_check("--tiny")
    assert "DRR check: PASS" in output
    assert "55 volumes x" in output
    for model in ("study A ctm", "study B ddpm_cond", "study B wgan", "study B classifier"):
        line = next(line for line in output.splitlines() if line.startswith(model))
        assert "fp32 eager" in line and "bf16 + channels_last" in line and "x (target >= 2x" in line
    for model in ("study A unet", "study A csm", "study A ctm", "study B ddpm_uncond"):
        assert any(line.startswith(model) and "images/s" in line for line in output.splitlines())
    assert "study B wgan 16^2 fp32" in output
    compiled = [line for line in output.splitlines() if "+ compile" in line and "images/s" in line]
    assert len(compiled) == 2
    skipped = [line for line in output.splitlines() if line.startswith("SKIP")]
    if not torch.cuda.is_available():
        assert skipped == [
            "SKIP FP3D_CUDA: astra.use_cuda() is false (ASTRA's 3D calls need a GPU)"
        ]
    assert output.rstrip().splitlines()[-1].startswith("== done in")


@pytest.mark.skipif(torch.cuda.is_available(), reason="with a GPU this is the 8-minute check")
def test_without_a_gpu_the_gpu_parts_are_skipped_with_a_line_each():
    output = run_check()
    assert "CPU fan beam" in output and "SKIP FP3D_CUDA" in output
    assert "cpu: 1 volume(s) of 256^3 measured" in output
    for part in ("training throughput", "sampling throughput", "torch.compile"):
        assert f"SKIP {part}: no CUDA GPU" in output
    assert output.rstrip().splitlines()[-1].startswith("== done in")
