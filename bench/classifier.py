"""Benchmark: study B KL classifier epoch time (training + validation), demo and paper size.

Demo size: ``kneesynth.study_b.classify.train_classifier`` for one epoch on random images of the demo's
shape (small_cnn, 64 x 64, 168 training and 24 validation images, batch 32), i.e. the same code
path as the workflow (ResumableTrainer, flips, model selection on the validation split).
Paper size: a few optimisation steps of MONAI DenseNet121 at 224 x 224 (batch 32) are timed and
the epoch time over Chen et al.'s 5778 training images is extrapolated (steps x step time).

    python bench/classifier.py                  # demo epoch, then 1 paper-size step
    python bench/classifier.py --paper-steps 0  # demo only
    python bench/classifier.py --threads 2
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time

import numpy as np
import torch

from kneesynth.compute import device_for
from kneesynth.study_b import classify


def random_set(n: int, image_size: int, seed: int) -> classify.ImageSet:
    generator = torch.Generator().manual_seed(seed)
    images = torch.rand(n, 1, image_size, image_size, generator=generator)
    grades = np.arange(n) % 5
    return classify.ImageSet(images, grades, [f"img{i}" for i in range(n)], [""] * n)


def demo_epoch_seconds(args, device: torch.device) -> float:
    """Wall time of one epoch of the workflow's training function at demo size."""
    data = classify.ArmData(
        train=random_set(args.n_train, args.image_size, 0),
        val=random_set(args.n_val, args.image_size, 1),
        test=random_set(1, args.image_size, 2),
    )
    settings = {
        "backbone": args.backbone,
        "image_size": args.image_size,
        "epochs": 1,
        "batch_size": args.batch_size,
        "learning_rate": 1e-3,
        "weight_decay": 1e-4,
        "class_weighting": "none",
        "augment_flip": True,
        "selection_metric": "accuracy",
        "checkpoint_every": 10**9,
    }
    with tempfile.TemporaryDirectory() as state_dir:
        # warm-up (allocations, MONAI import paths), then the timed epoch
        classify.train_classifier(data, "kl5", 0, settings, f"{state_dir}/warm", device)
        start = time.perf_counter()
        classify.train_classifier(data, "kl5", 1, settings, f"{state_dir}/timed", device)
        return time.perf_counter() - start


def step_seconds(
    backbone: str, image_size: int, batch_size: int, steps: int, device: torch.device
) -> float:
    """Mean wall time of one training step (forward, backward, AdamW) after one warm-up step."""
    torch.manual_seed(0)
    model = classify.build_classifier(backbone, 5, image_size).to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    images = torch.rand(batch_size, 1, image_size, image_size, device=device)
    target = torch.randint(0, 5, (batch_size,), device=device)
    times = []
    for step in range(steps + 1):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        loss = torch.nn.functional.cross_entropy(model(images), target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        if step:  # the first step is a warm-up
            times.append(time.perf_counter() - start)
    return float(np.mean(times))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="small_cnn", choices=classify.BACKBONES)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--n-train", type=int, default=168)
    parser.add_argument("--n-val", type=int, default=24)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument(
        "--paper-steps", type=int, default=1, help="DenseNet121 224^2 steps to time"
    )
    parser.add_argument("--paper-train-images", type=int, default=5778)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = device_for({"device": args.device})

    seconds = demo_epoch_seconds(args, device)
    steps = math.ceil(args.n_train / args.batch_size)
    print(
        f"demo classifier epoch ({args.backbone}, {args.image_size}^2, {args.n_train} train + "
        f"{args.n_val} val images, batch {args.batch_size}, {device}, {args.threads} thread(s)): "
        f"{seconds:.2f} s ({seconds / steps * 1000:.0f} ms per step incl. validation)"
    )
    if args.paper_steps > 0:
        step = step_seconds("densenet121", 224, 32, args.paper_steps, device)
        epoch_steps = math.ceil(args.paper_train_images / 32)
        print(
            f"paper-size classifier step (densenet121, 224^2, batch 32, {device}): {step:.2f} s; "
            f"epoch of {args.paper_train_images} images ~ {epoch_steps * step / 60:.1f} min "
            f"({epoch_steps} steps, validation excluded)"
        )


if __name__ == "__main__":
    main()
