"""Training throughput of one study A score model, plain versus optimised, in the same run.

plain:     fp32, eager, contiguous (NCHW) tensors, batches from a torch DataLoader over the
           numpy images (collated on the host each step, copied to the device).
optimised: bf16 autocast, channels_last, torch.compile (where it works here), the data set
           preloaded on the device as tensors and indexed there (pinned host memory when not).

    python bench/train_throughput.py                       # demo network, CPU here
    python bench/train_throughput.py --config config/paper.yaml --batch 16 --steps 30   # GPU

Prints images/s of both and their ratio. Each switch can be turned off (--no-bf16 ...).
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

import numpy as np
import torch
import yaml

from kneesynth import compute as compute_lib
from kneesynth.score.losses import dsm_loss
from kneesynth.score.sde import VESDE
from kneesynth.study_a.train import build_network


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="config/config.yaml")
    parser.add_argument("--batch", type=int, default=None, help="default: config batch_size")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--images", type=int, default=256, help="size of the synthetic data set")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="auto")
    for switch in ("bf16", "channels-last", "compile", "preload"):
        parser.add_argument(f"--no-{switch}", action="store_true")
    return parser.parse_args()


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


class PairDataset(torch.utils.data.Dataset):
    """(drr, mask) pairs from numpy arrays (n, 1, H, W), as a plain training script holds them."""

    def __init__(self, drr, mask):
        self.drr, self.mask = drr, mask

    def __len__(self):
        return len(self.drr)

    def __getitem__(self, i):
        return torch.from_numpy(self.drr[i]), torch.from_numpy(self.mask[i])


def run(label, params, drr, mask, batch, steps, warmup, device, options):
    size = drr.shape[-1]
    net = build_network("ctm", params["network"], size, seed=0).to(device)
    if options["channels_last"]:
        net = net.to(memory_format=torch.channels_last)
    forward = net
    if options["compile"]:
        forward = torch.compile(net)
    sde = VESDE(float(params["sigma_min"]), float(params["sigma_max"]))
    optimizer = torch.optim.Adam(net.parameters(), lr=float(params["lr"]))
    compute = {"bf16": options["bf16"]}
    generator = torch.Generator().manual_seed(0)
    total = warmup + steps
    if options["preload"]:
        drr_t = torch.from_numpy(drr).to(device)
        mask_t = torch.from_numpy(mask).to(device)
        if options["channels_last"]:
            drr_t = drr_t.contiguous(memory_format=torch.channels_last)
            mask_t = mask_t.contiguous(memory_format=torch.channels_last)

        def batches():
            for _ in range(total):
                index = torch.randint(len(drr_t), (batch,), generator=generator).to(device)
                yield drr_t[index], mask_t[index]
    else:
        loader = torch.utils.data.DataLoader(
            PairDataset(drr, mask),
            batch_size=batch,
            shuffle=True,
            drop_last=True,
            pin_memory=device.type == "cuda",
            generator=torch.Generator().manual_seed(0),
        )

        def batches():
            produced = 0
            while produced < total:
                for images, masks in loader:
                    yield images.to(device, non_blocking=True), masks.to(device, non_blocking=True)
                    produced += 1
                    if produced == total:
                        return

    start = None
    compile_seconds = 0.0
    first = time.perf_counter()
    for step, (images, masks) in enumerate(batches()):
        if step == warmup:
            sync(device)
            compile_seconds = time.perf_counter() - first
            start = time.perf_counter()
        with compute_lib.autocast(device, compute):
            loss = dsm_loss(forward, sde, images, generator, condition=masks)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    sync(device)
    seconds = time.perf_counter() - start
    rate = steps * batch / seconds
    switches = ", ".join(k for k, v in options.items() if v) or "fp32 eager, DataLoader"
    print(f"{label:9s}: {rate:8.1f} images/s  ({switches}; warm-up {compile_seconds:.1f} s)")
    return rate


def compile_available(device):
    if device.type == "cpu" and shutil.which("g++") is None and shutil.which("c++") is None:
        return False, "no C++ compiler for the CPU inductor backend"
    try:
        f = torch.compile(lambda x: x * 2 + 1)
        f(torch.ones(4, device=device))
        return True, ""
    except Exception as error:  # noqa: BLE001 - any backend failure means: not available here
        return False, f"{type(error).__name__}: {str(error).splitlines()[0][:100]}"


def main():
    args = parse_args()
    torch.set_num_threads(args.threads)
    config = yaml.safe_load(Path(args.config).read_text())
    params = config["study_a"]
    device = compute_lib.device_for({"device": args.device, "deterministic": False})
    batch = args.batch or int(params["batch_size"])
    size = int(params["image_size"])
    rng = np.random.default_rng(0)
    drr = rng.random((args.images, 1, size, size), dtype=np.float32)
    mask = (rng.random((args.images, 1, size, size)) > 0.5).astype(np.float32) * 0.5
    can_compile, why = compile_available(device)
    if not can_compile and not args.no_compile:
        print(f"torch.compile not used: {why}")
    optimised = {
        "bf16": not args.no_bf16,
        "channels_last": not args.no_channels_last,
        "compile": can_compile and not args.no_compile,
        "preload": not args.no_preload,
    }
    print(
        f"device {device}, {size}x{size}, batch {batch}, {args.steps} timed steps, torch {torch.__version__}"
    )
    plain = run(
        "plain",
        params,
        drr,
        mask,
        batch,
        args.steps,
        args.warmup,
        device,
        {"bf16": False, "channels_last": False, "compile": False, "preload": False},
    )
    fast = run("optimised", params, drr, mask, batch, args.steps, args.warmup, device, optimised)
    print(f"ratio optimised / plain: {fast / plain:.2f}x")


if __name__ == "__main__":
    main()
