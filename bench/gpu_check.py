"""The GPU check, run by bench/gpu_check.sh: one script, one GPU, under 8 minutes.

Prints, section by section (each figure on one line, as it is measured):

1. the environment (torch, CUDA device, ASTRA and whether it sees the GPU);
2. DRR: ASTRA ``FP3D_CUDA`` cone beam against the CPU fan-beam path on one knee phantom at the
   paper's geometry, with the tolerances they must meet (:data:`DRR_TOLERANCES`): correlation,
   mean absolute difference, bone-projection centroid per view, and an orientation test (the
   unflipped GPU image must match the CPU one better than its up-down and left-right flips and
   the view order reversed);
3. DRR at paper scale: a measured part of 55 volumes x 60 views x 256^2 and the extrapolation;
4. training throughput at paper size (config/paper.yaml) of study A's CTM and study B's
   conditional DDPM, WGAN-GP and KL classifier, fp32 eager against bf16 + channels_last, then
   + torch.compile where time allows, the ratio (target >= 2x) and the peak GPU memory of each.
   The real training functions run (kneesynth.study_a.train.train_model, study_b.ddpm.train_ddpms
   and study_b.wgan.train_wgan, study_b.classify.train_classifier) on random data; the time of each step is taken
   where the training records its loss (``ResumableTrainer.record``), after warm-up steps;
5. sampling throughput at paper size of every model (study A U-Net, CSM, CTM; study B DDPMs,
   WGAN) with its peak GPU memory, timed on a few sampler steps and extrapolated to the
   configured number of steps (the cost per step is constant).

Without a CUDA GPU the GPU parts are skipped, each with a line saying so, and the CPU DRR path
is timed alone. ``--tiny`` runs every part at tiny sizes on whatever device there is (without a
GPU the DRR comparison then compares the CPU path with itself: a self-test of the comparison):
tests/test_gpu_check.py runs it so that every path of this script is exercised on CPU.

A time budget (``--budget-s``, default 450 s) keeps the whole under 8 minutes: a part that would
not fit in what is left is skipped with a line saying so.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import functools
import math
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

#: what the FP3D_CUDA cone beam and the CPU fan beam (which ignores the cone angle, < 7 degrees
#: at the paper's geometry) must agree to, on DRRs in [0, 1]
DRR_TOLERANCES = {"min_correlation": 0.99, "max_mean_abs": 0.02, "max_centroid_px": 1.0}
TRAINING_TARGET_RATIO = 2.0
PLAIN = {"bf16": False, "channels_last": False, "compile": False}
FAST = {"bf16": True, "channels_last": True, "compile": False}
FAST_COMPILED = {"bf16": True, "channels_last": True, "compile": True}


def say(text: str = "") -> None:
    print(text, flush=True)


def section(title: str) -> None:
    say()
    say(f"== {title}")


class Budget:
    """Seconds left of the run; ``fits(s)`` is False once fewer than ``s`` remain."""

    def __init__(self, seconds: float):
        self.deadline = time.perf_counter() + seconds
        self.start = time.perf_counter()

    def left(self) -> float:
        return self.deadline - time.perf_counter()

    def fits(self, seconds: float, what: str) -> bool:
        if self.left() >= seconds:
            return True
        say(f"SKIP {what}: {self.left():.0f} s left of the budget, it needs about {seconds:.0f} s")
        return False


# ------------------------------------------------------------------------------ devices
def cuda_device():
    """torch's CUDA device, or None."""
    import torch

    return torch.device("cuda") if torch.cuda.is_available() else None


def synchronize(device) -> None:
    import torch

    if device is not None and device.type == "cuda":
        torch.cuda.synchronize(device)


@contextlib.contextmanager
def peak_memory(device) -> Iterator[dict[str, float]]:
    """Yields a dict whose ``gib`` is the peak GPU memory allocated inside the block (NaN on
    CPU)."""
    import torch

    result = {"gib": float("nan")}
    cuda = device is not None and device.type == "cuda"
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    try:
        yield result
    finally:
        if cuda:
            synchronize(device)
            result["gib"] = torch.cuda.max_memory_allocated(device) / 2**30


def memory_text(gib: float) -> str:
    return "n/a on CPU" if math.isnan(gib) else f"{gib:.2f} GiB peak"


def environment() -> dict[str, Any]:
    import torch

    from kneesynth.projection import drr

    info = {"torch": torch.__version__, "cuda": cuda_device() is not None}
    gpu = torch.cuda.get_device_name(0) if info["cuda"] else "none"
    info["astra_cuda"] = drr.cuda_available()
    try:
        import astra

        astra_version = astra.__version__
    except (ImportError, AttributeError):
        astra_version = "?"
    say(
        f"torch {info['torch']}, CUDA device: {gpu}, astra {astra_version}, "
        f"astra.use_cuda(): {info['astra_cuda']}"
    )
    return info


# ------------------------------------------------------------------------------ DRR
def drr_settings(config: Mapping[str, Any], detector: int | None = None, views: int | None = None):
    """ProjectionSettings of ``config['projection']`` (optionally a smaller detector / fewer
    views, the field of view kept)."""
    from kneesynth.projection import drr

    projection = dict(config["projection"])
    if detector:
        scale = int(projection["detector_rows"]) / detector
        spacing = projection["detector_spacing_mm"]
        spacing = [spacing, spacing] if isinstance(spacing, (int, float)) else list(spacing)
        projection.update(
            detector_rows=detector,
            detector_cols=detector,
            detector_spacing_mm=[float(s) * scale for s in spacing],
        )
    if views:
        projection["n_views"] = views
    return drr.ProjectionSettings.from_config(projection)


def _centroids(images: np.ndarray) -> np.ndarray:
    """(views, 2) intensity centroids (row, col) of (views, rows, cols) images."""
    rows, cols = np.indices(images.shape[1:])
    total = images.sum(axis=(1, 2)) + 1e-12
    return np.stack(
        [(images * rows).sum(axis=(1, 2)) / total, (images * cols).sum(axis=(1, 2)) / total], 1
    )


def compare_drrs(reference, other, tolerances: Mapping[str, float] = DRR_TOLERANCES) -> dict:
    """Agreement of two DrrResults of one volume and geometry (``reference``: the CPU path).

    Returns correlation and mean absolute difference of the DRRs, the largest distance (px)
    between the bone projections' centroids in a view, the correlation of ``other`` transformed
    (flipped up-down, left-right, views in reverse order: what a wrong orientation would look
    like), ``orientation`` (True when the untransformed image matches best), and ``passes``.
    """
    a, b = reference.drr.astype(np.float64), other.drr.astype(np.float64)

    def correlation(x, y):
        return float(np.corrcoef(x.ravel(), y.ravel())[0, 1])

    result = {
        "correlation": correlation(a, b),
        "mean_abs": float(np.abs(a - b).mean()),
        "centroid_px": float(
            np.linalg.norm(
                _centroids(reference.bone_projection) - _centroids(other.bone_projection), axis=1
            ).max()
        ),
    }
    views_reversed = np.concatenate([b[:1], b[:0:-1]])  # angle -theta in place of theta
    result["transformed"] = {
        "flipped up-down": correlation(a, b[:, ::-1, :]),
        "flipped left-right": correlation(a, b[:, :, ::-1]),
        "views reversed": correlation(a, views_reversed) if len(b) > 2 else -1.0,
    }
    result["orientation"] = all(r < result["correlation"] for r in result["transformed"].values())
    result["passes"] = (
        result["orientation"]
        and result["correlation"] >= tolerances["min_correlation"]
        and result["mean_abs"] <= tolerances["max_mean_abs"]
        and result["centroid_px"] <= tolerances["max_centroid_px"]
    )
    return result


def drr_check(config, size: int, spacing_mm: float, settings, info, budget: Budget) -> None:
    """FP3D_CUDA against the CPU path on one knee phantom."""
    from drr import make_phantom

    from kneesynth.projection import drr

    if not budget.fits(30 if size > 64 else 2, "the DRR comparison"):
        return
    hu = make_phantom(size, spacing_mm, seed=0)
    spacing = (spacing_mm,) * 3
    start = time.process_time()
    cpu = drr.project_ct(
        hu, spacing, drr.ProjectionSettings(**{**vars(settings), "backend": "cpu"})
    )
    cpu_s = time.process_time() - start
    say(
        f"phantom {size}^3 at {spacing_mm:.2f} mm, {settings.n_views} views of "
        f"{settings.detector_rows} x {settings.detector_cols}; CPU fan beam {cpu_s:.2f} CPU s "
        "(with its system matrix)"
    )
    if info["astra_cuda"]:
        label = "FP3D_CUDA"
        gpu_settings = drr.ProjectionSettings(**{**vars(settings), "backend": "cuda"})
        drr.project_ct(hu, spacing, gpu_settings)  # warm-up (CUDA context, kernels)
        start = time.perf_counter()
        other = drr.project_ct(hu, spacing, gpu_settings)
        say(f"FP3D_CUDA cone beam {time.perf_counter() - start:.3f} s wall")
    else:
        say("SKIP FP3D_CUDA: astra.use_cuda() is false (ASTRA's 3D calls need a GPU)")
        if not info["tiny"]:
            return
        label = "CPU path (self-test of the comparison, no GPU)"
        other = cpu
    result = compare_drrs(cpu, other)
    tol = DRR_TOLERANCES
    say(
        f"{label} vs CPU: correlation {result['correlation']:.4f} (>= {tol['min_correlation']}), "
        f"mean |diff| {result['mean_abs']:.4f} (<= {tol['max_mean_abs']}), bone centroid "
        f"offset {result['centroid_px']:.2f} px (<= {tol['max_centroid_px']})"
    )
    transformed = ", ".join(f"{k} {v:.3f}" for k, v in result["transformed"].items())
    say(
        f"orientation: {transformed} (each must be below {result['correlation']:.3f}): "
        f"{'agrees' if result['orientation'] else 'DIFFERS'}"
    )
    say(f"DRR check: {'PASS' if result['passes'] else 'FAIL'}")


def drr_paper_scale(
    size: int, spacing_mm: float, settings, info, budget: Budget, volumes: int = 55
) -> None:
    """Projection time per volume on the configured path, extrapolated to ``volumes``."""
    from drr import cylinder_leg_phantom

    from kneesynth.projection import drr

    backend = "cuda" if info["astra_cuda"] else "cpu"
    if backend == "cpu" and not info["tiny"] and not budget.fits(60, "the CPU paper-scale DRR"):
        return
    settings = drr.ProjectionSettings(**{**vars(settings), "backend": backend})
    measured = 5 if backend == "cuda" else 1
    spacing = (spacing_mm,) * 3
    drr.project_ct(cylinder_leg_phantom(size, spacing_mm, 0), spacing, settings)  # warm-up
    seconds = []
    for seed in range(measured):
        hu = cylinder_leg_phantom(size, spacing_mm, seed)  # generation not timed
        start = time.perf_counter()
        drr.project_ct(hu, spacing, settings)
        seconds.append(time.perf_counter() - start)
    per_volume = statistics.median(seconds)
    say(
        f"{backend}: {measured} volume(s) of {size}^3 measured, {per_volume:.3f} s per volume -> "
        f"{volumes} volumes x {settings.n_views} views x {settings.detector_rows}^2: "
        f"{per_volume * volumes:.1f} s (projection only, wall; reading and writing excluded)"
    )


# ------------------------------------------------------------------------------ training
@contextlib.contextmanager
def step_clock(device) -> Iterator[list[float]]:
    """Times (s) at which each training step recorded its loss (after a device sync)."""
    from kneesynth import training

    times: list[float] = []
    original = training.ResumableTrainer.record

    def record(self, step, **metrics):
        synchronize(device)
        times.append(time.perf_counter())
        return original(self, step, **metrics)

    training.ResumableTrainer.record = record
    try:
        yield times
    finally:
        training.ResumableTrainer.record = original


def timed_training(run: Callable[[], Any], batch: int, warmup: int, device) -> tuple[float, float]:
    """(images/s after ``warmup`` steps, peak GiB) of ``run``, a training of warmup + n steps."""
    with peak_memory(device) as memory, step_clock(device) as times:
        run()
    if len(times) < warmup + 2:
        raise RuntimeError(f"only {len(times)} training steps were recorded")
    steps = len(times) - 1 - warmup
    return steps * batch / (times[-1] - times[warmup]), memory["gib"]


def random_study_a_dataset(path: Path, n: int, size: int) -> None:
    from kneesynth.io import save_npz

    rng = np.random.default_rng(0)
    drr = rng.random((n, size, size), dtype=np.float32)
    contour = (rng.random((n, size, size)) > 0.3).astype(np.float32) * 0.5
    save_npz(
        path,
        drr=drr,
        contour=contour,
        bone=np.maximum(contour, (drr > 0.8).astype(np.float32)),
        volume=np.array([f"v{i // 10}" for i in range(n)]),
        view=np.arange(n) % 10,
        split=np.array(["train"] * (n - 2) + ["test"] * 2),
    )


def training_runs(config, device, steps: int, folder: Path) -> dict[str, tuple[int, Callable]]:
    """name -> (batch size, function(compute) that trains for ``steps`` steps)."""
    import torch

    from kneesynth.study_a.train import train_model
    from kneesynth.study_b import classify
    from kneesynth.study_b.ddpm import (
        train_ddpms,
    )
    from kneesynth.study_b.wgan import train_wgan

    a = copy.deepcopy(config["study_a"])
    a.update(steps=steps, checkpoint_every=10**6)
    size_a = int(a["image_size"])
    dataset = folder / "study_a.npz"
    random_study_a_dataset(dataset, max(2 * int(a["batch_size"]), 4) + 2, size_a)

    generators = config["study_b"]["generators"]
    size_b = int(generators["image_size"])
    rng = np.random.default_rng(1)
    images = rng.integers(
        0, 256, (max(2 * int(generators["wgan"]["batch_size"]), 8), size_b, size_b), dtype=np.uint8
    )
    grades = np.arange(len(images)) % 5
    ddpm = {**generators["ddpm"], "steps": steps, "checkpoint_every": 10**6}
    wgan = {**generators["wgan"], "steps": steps, "checkpoint_every": 10**6}

    classifiers = copy.deepcopy(config["study_b"]["classifiers"])
    batch_c = int(classifiers["batch_size"])
    classifiers.update(epochs=1, checkpoint_every=10**6)
    size_c = int(classifiers["image_size"])

    def image_set(n):
        return classify.ImageSet(
            images=torch.rand(n, 1, size_c, size_c),
            kl_grade=np.arange(n) % 5,
            image=[f"image{i}" for i in range(n)],
            participant=[f"p{i}" for i in range(n)],
        )

    arm = classify.ArmData(train=image_set(batch_c * steps), val=image_set(8), test=image_set(8))
    counter = iter(range(10**6))

    def state():
        return folder / f"state{next(counter)}"

    return {
        f"study A ctm {size_a}^2": (
            int(a["batch_size"]),
            lambda compute: train_model(
                "ctm",
                "contour",
                dataset,
                folder / "ctm.pt",
                state(),
                a,
                {**config["compute"], "device": device.type, **compute},
            ),
        ),
        f"study B ddpm_cond {size_b}^2": (
            int(ddpm["batch_size"]),
            lambda compute: train_ddpms(
                {"all": (images, grades)},
                ddpm,
                size_b,
                0,
                state(),
                True,
                label_dropout=0.1,
                device=device,
                compute=compute,
            ),
        ),
        f"study B wgan {size_b}^2 (n_critic {wgan['n_critic']})": (
            int(wgan["batch_size"]),
            lambda compute: train_wgan(
                images, grades, wgan, size_b, 0, state(), device=device, compute=compute
            ),
        ),
        f"study B classifier {classifiers['backbone']} {size_c}^2": (
            batch_c,
            lambda compute: classify.train_classifier(
                arm, "kl5", 0, classifiers, state(), device, compute
            ),
        ),
    }


def training_throughput(
    config, device, budget: Budget, steps: int, warmup: int, compiled: bool = False
) -> dict[str, float]:
    """fp32 eager against bf16 + channels_last for every training, the ratio (images/s);
    ``compiled``: bf16 + channels_last + torch.compile instead, for study A's CTM and study B's
    DDPM (compilation happens in the warm-up steps)."""
    estimate = 40.0 if device.type == "cuda" else 5.0
    ratios = {}
    with tempfile.TemporaryDirectory() as folder:
        runs = training_runs(config, device, warmup + steps + 1, Path(folder))
        if compiled:
            runs = {n: r for n, r in runs.items() if n.startswith(("study A", "study B ddpm"))}
        for name, (batch, train) in runs.items():
            if compiled:
                if not budget.fits(150 if device.type == "cuda" else 30, f"compile of {name}"):
                    continue
                try:
                    rate, gib = timed_training(
                        functools.partial(train, FAST_COMPILED), batch, warmup, device
                    )
                except Exception as error:  # noqa: BLE001 - report it, go on with the check
                    say(f"{name}: torch.compile failed: {type(error).__name__}: {error}"[:300])
                    continue
                say(
                    f"{name}, batch {batch}: bf16 + channels_last + compile {rate:.1f} images/s "
                    f"({memory_text(gib)})"
                )
                continue
            if not budget.fits(2 * estimate, f"training throughput of {name}"):
                continue
            plain, plain_gib = timed_training(
                functools.partial(train, PLAIN), batch, warmup, device
            )
            fast, fast_gib = timed_training(functools.partial(train, FAST), batch, warmup, device)
            ratios[name] = fast / plain
            say(
                f"{name}, batch {batch}: fp32 eager {plain:.1f} images/s "
                f"({memory_text(plain_gib)}); bf16 + channels_last {fast:.1f} images/s "
                f"({memory_text(fast_gib)}): {fast / plain:.2f}x (target >= "
                f"{TRAINING_TARGET_RATIO:.0f}x: "
                f"{'met' if fast / plain >= TRAINING_TARGET_RATIO else 'not met'})"
            )
    return ratios


# ------------------------------------------------------------------------------ sampling
def timed_sampling(run: Callable[[], Any], device) -> tuple[float, float]:
    """(wall seconds, peak GiB) of ``run`` after one warm-up call."""
    run()
    with peak_memory(device) as memory:
        synchronize(device)
        start = time.perf_counter()
        run()
        synchronize(device)
        seconds = time.perf_counter() - start
    return seconds, memory["gib"]


def sampling_throughput(config, device, budget: Budget, steps: int) -> None:
    """Images/s of every model at its configured sampler and steps, timed on ``steps`` steps."""
    import torch

    from kneesynth.score.sde import VESDE
    from kneesynth.study_a.sample import generate, make_sampler
    from kneesynth.study_a.train import build_network
    from kneesynth.study_b.ddpm import (
        build_unet,
        sample_ddpm,
        scheduler_settings,
        unet_settings,
    )
    from kneesynth.study_b.wgan import WganGenerator, sample_wgan, wgan_settings

    estimate = 20.0 if device.type == "cuda" else 3.0
    a = config["study_a"]
    size_a, batch_a = int(a["image_size"]), int(a["sample_batch_size"])
    sampler = a["sampler"]["name"]
    paper_steps = int(a["sampler"][sampler]["steps"])
    few = copy.deepcopy(a)
    few["sampler"][sampler]["steps"] = steps
    masks = (torch.rand(batch_a, 1, size_a, size_a) > 0.5).float() * 0.5
    for precision, compute in (("fp32", PLAIN), ("bf16", {"bf16": True})):
        for kind in ("unet", "csm", "ctm"):
            if not budget.fits(estimate, f"sampling of study A {kind} ({precision})"):
                continue
            net = build_network(kind, a["network"], size_a, seed=0).to(device).eval()
            sde = VESDE(float(a["sigma_min"]), float(a["sigma_max"]))
            fast_sampler = make_sampler(few, sde)
            seconds, gib = timed_sampling(
                functools.partial(
                    generate,
                    kind,
                    net,
                    masks,
                    few,
                    0,
                    sampler=fast_sampler,
                    device=device,
                    compute=compute,
                ),
                device,
            )
            scale = 1 if kind == "unet" else paper_steps / steps
            say(
                f"study A {kind} {size_a}^2 {precision}: {batch_a / (seconds * scale):.2f} images/s "
                f"({'one pass' if kind == 'unet' else f'{sampler} {paper_steps} steps, timed on {steps}'}; "
                f"{memory_text(gib)})"
            )
            del net

    generators = config["study_b"]["generators"]
    samples = config["study_b"]["samples"]
    size_b, batch_b = int(generators["image_size"]), int(samples["batch_size"])
    ddpm = generators["ddpm"]
    paper_inference = int(samples["inference_steps"])
    seeds = list(range(batch_b))
    grades = [i % 5 for i in seeds]
    for name, conditional in (("ddpm_uncond", False), ("ddpm_cond", True)):
        if not budget.fits(estimate, f"sampling of study B {name}"):
            continue
        unet = build_unet(unet_settings(ddpm, size_b, conditional)).to(device)
        seconds, gib = timed_sampling(
            functools.partial(
                sample_ddpm,
                unet,
                scheduler_settings(ddpm),
                samples["sampler"],
                steps,
                seeds,
                grades if conditional else None,
                device=device,
            ),
            device,
        )
        say(
            f"study B {name} {size_b}^2 fp32: {batch_b / (seconds * paper_inference / steps):.2f} "
            f"images/s ({samples['sampler']} {paper_inference} steps, timed on {steps}; "
            f"{memory_text(gib)})"
        )
        del unet
    wgan = generators["wgan"]
    net = WganGenerator(latent_dim=int(wgan["latent_dim"]), **wgan_settings(wgan, size_b)).to(
        device
    )
    seconds, gib = timed_sampling(
        functools.partial(sample_wgan, net, seeds, grades, device), device
    )
    say(f"study B wgan {size_b}^2 fp32: {batch_b / seconds:.1f} images/s ({memory_text(gib)})")


# ------------------------------------------------------------------------------ presets
def tiny_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """``config`` shrunk to seconds on a CPU: the same code paths, tiny networks and images."""
    tiny = copy.deepcopy(dict(config))
    a = tiny["study_a"]
    a.update(image_size=16, batch_size=2, sample_batch_size=2)
    a["network"].update(
        block_out_channels=[32, 32],
        attention_levels=[False, True],
        layers_per_block=1,
        norm_num_groups=8,
    )
    b = tiny["study_b"]
    b["generators"]["image_size"] = 16
    b["generators"]["ddpm"].update(
        block_out_channels=[8, 16],
        attention=False,
        norm_num_groups=4,
        batch_size=2,
        num_train_timesteps=50,
    )
    b["generators"]["wgan"].update(
        latent_dim=8, channels=8, max_channels=16, batch_size=2, n_critic=1
    )
    b["samples"].update(batch_size=2, inference_steps=4)
    b["classifiers"].update(backbone="small_cnn", image_size=16, batch_size=2)
    tiny["compute"]["device"] = "auto"
    return tiny


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=ROOT / "config" / "paper.yaml")
    parser.add_argument("--tiny", action="store_true", help="tiny sizes on any device (tests)")
    parser.add_argument("--budget-s", type=float, default=450.0, help="time budget (450 s)")
    parser.add_argument("--steps", type=int, default=10, help="timed training steps (10)")
    parser.add_argument("--warmup", type=int, default=3, help="warm-up training steps (3)")
    parser.add_argument("--sampler-steps", type=int, default=6, help="sampler steps timed (6)")
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile runs")
    args = parser.parse_args(argv)
    budget = Budget(args.budget_s)
    config = yaml.safe_load(args.config.read_text())
    if args.tiny:
        config = tiny_config(config)
        args.steps, args.warmup, args.sampler_steps = 2, 1, 2
    try:
        import torch

        section("environment")
        info = environment()
        info["tiny"] = args.tiny
        device = cuda_device()
        # the global settings every job of the pipeline makes (deterministic algorithms ...)
        from kneesynth.compute import device_for

        device_for({**config["compute"], "device": "cuda" if device is not None else "cpu"})
        say(f"compute section of {args.config.name}: {config['compute']}")

        section("DRR: ASTRA FP3D_CUDA cone beam against the CPU path, one knee phantom")
        if args.tiny:
            size, spacing_mm, settings = 32, 6.4, drr_settings(config, detector=32, views=6)
        else:
            size, spacing_mm, settings = 128, 1.6, drr_settings(config)
        drr_check(config, size, spacing_mm, settings, info, budget)

        section("DRR at paper scale: 55 volumes x 60 views x 256^2")
        if args.tiny:
            drr_paper_scale(32, 6.4, settings, info, budget)
        else:
            drr_paper_scale(256, 0.8, drr_settings(config), info, budget)

        run_on = device if device is not None else (torch.device("cpu") if args.tiny else None)
        section("training throughput at paper size: fp32 eager vs bf16 + channels_last")
        if run_on is None:
            say(
                "SKIP training throughput: no CUDA GPU (paper-size training on CPU takes hours; "
                "--tiny runs these paths at tiny size)"
            )
        else:
            training_throughput(config, run_on, budget, args.steps, args.warmup)

        section("sampling throughput at paper size")
        if run_on is None:
            say("SKIP sampling throughput: no CUDA GPU")
        else:
            sampling_throughput(config, run_on, budget, args.sampler_steps)

        section("training throughput at paper size with torch.compile, as time allows")
        if run_on is None or args.no_compile:
            say("SKIP torch.compile: " + ("no CUDA GPU" if run_on is None else "--no-compile"))
        else:
            training_throughput(config, run_on, budget, args.steps, args.warmup, compiled=True)
    except KeyboardInterrupt:
        say(f"INTERRUPTED after {time.perf_counter() - budget.start:.0f} s (time limit)")
        return 1
    say()
    say(f"== done in {time.perf_counter() - budget.start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
