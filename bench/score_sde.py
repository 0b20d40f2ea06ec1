"""Study A score models: training steps/s and sampled images/s (with network evaluations per
image), for the demo network and the paper-size NCSN++.

    python bench/score_sde.py                    # demo + paper size (paper size: 1 step on CPU)
    python bench/score_sde.py --sizes paper --paper-batch 16 --paper-steps 20   # on a GPU

Numbers are wall-clock on this machine; the paper-size sampling rate is extrapolated from the
time of one network evaluation times the evaluations per image of the configured samplers.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
import yaml

from kneesynth import compute as compute_lib
from kneesynth.score.losses import dsm_loss
from kneesynth.score.sampling import get_sampler
from kneesynth.score.sde import VESDE
from kneesynth.study_a.train import build_network


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--demo-config", default="config/config.yaml")
    parser.add_argument("--paper-config", default="config/paper.yaml")
    parser.add_argument("--sizes", default="demo,paper")
    parser.add_argument("--demo-steps", type=int, default=10)
    parser.add_argument("--paper-steps", type=int, default=1)
    parser.add_argument(
        "--paper-batch", type=int, default=None, help="default: 16 on GPU, 2 on CPU"
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--bf16", action="store_true")
    return parser.parse_args()


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def bench(name, params, steps, batch, device, bf16):
    compute = {"device": device.type, "bf16": bf16}
    size = int(params["image_size"])
    net = build_network("ctm", params["network"], size, seed=0).to(device)
    n_params = sum(p.numel() for p in net.parameters())
    sde = VESDE(float(params["sigma_min"]), float(params["sigma_max"]))
    optimizer = torch.optim.Adam(net.parameters(), lr=float(params["lr"]))
    drr = torch.rand(batch, 1, size, size, device=device)
    mask = torch.rand(batch, 1, size, size, device=device)
    generator = torch.Generator().manual_seed(0)

    def train_step():
        with compute_lib.autocast(device, compute):
            loss = dsm_loss(net, sde, drr, generator, condition=mask)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    train_step()  # warm-up (allocations, cuDNN)
    sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        train_step()
    sync(device)
    step_seconds = (time.perf_counter() - start) / steps
    net.eval()
    sigma = torch.full((batch,), 1.0, device=device)
    with torch.no_grad(), compute_lib.autocast(device, compute):
        net(drr, sigma, mask)
        sync(device)
        start = time.perf_counter()
        repeats = max(1, steps)
        for _ in range(repeats):
            net(drr, sigma, mask)
        sync(device)
    eval_seconds = (time.perf_counter() - start) / repeats
    print(
        f"[{name}] {size}x{size}, channels {tuple(params['network']['block_out_channels'])}, "
        f"{n_params / 1e6:.2f} M parameters, batch {batch}, device {device}{' bf16' if bf16 else ''}"
    )
    print(
        f"  training: {1 / step_seconds:.3g} steps/s ({batch / step_seconds:.3g} images/s), "
        f"{steps} step(s) timed"
    )
    print(f"  one network evaluation: {eval_seconds * 1000:.1f} ms per batch of {batch}")
    samplers = [("pc", dict(params["sampler"]["pc"]))]
    samplers += [(n, dict(params["sampler"][n])) for n in ("heun", "heun_churn")]
    for sampler_name, options in samplers:
        sampler = get_sampler(sampler_name, sde, **options)
        for label, t_start in (("CTM", 1.0), ("CSM SDEdit", float(params["t0"]))):
            evaluations = sampler.num_evaluations(t_start)
            images_per_s = batch / (eval_seconds * evaluations)
            print(
                f"  sampling {label:10s} {sampler_name:10s} steps={options['steps']:4d}: "
                f"{evaluations:5d} evaluations/image -> {images_per_s:.3g} images/s ({1 / images_per_s:.3g} s/image)"
            )


def main():
    args = parse_args()
    torch.set_num_threads(args.threads)
    device = compute_lib.device_for({"device": args.device, "deterministic": False})
    for size in args.sizes.split(","):
        path = args.demo_config if size == "demo" else args.paper_config
        params = yaml.safe_load(Path(path).read_text())["study_a"]
        if size == "demo":
            bench("demo", params, args.demo_steps, int(params["batch_size"]), device, args.bf16)
        else:
            batch = args.paper_batch or (16 if device.type == "cuda" else 2)
            bench("paper", params, args.paper_steps, batch, device, args.bf16)


if __name__ == "__main__":
    main()
