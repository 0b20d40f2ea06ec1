"""Benchmark: blocked maximum correlation vs the bare matrix product of the same sizes.

    python bench/memorization.py                      # 10,000 x 8,000 images of 64^2, CPU
    python bench/memorization.py --device cuda        # on a GPU node

Prints pairs/s of :func:`kneesynth.checks.memorization.max_correlation` (centring, normalising, blocked
products, running max/argmax, within a memory budget) and of one bare ``S @ T.T`` of the same
sizes (float32, torch.matmul, no normalisation, no max, output held whole), in the same run,
and their ratio (time ours / time bare; target <= 2).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from kneesynth.checks.memorization import block_sizes, max_correlation


def synchronise(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def best_time(function, repeats: int, device: torch.device) -> float:
    times = []
    for _ in range(repeats):
        synchronise(device)
        start = time.perf_counter()
        function()
        synchronise(device)
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n-synthetic", type=int, default=10_000)
    parser.add_argument("--n-training", type=int, default=8_000)
    parser.add_argument("--size", type=int, default=64, help="images are size x size")
    parser.add_argument("--memory-budget-mb", type=float, default=512)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=2, help="best of this many runs each")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    rng = np.random.default_rng(0)
    dim = args.size * args.size
    synthetic = rng.random((args.n_synthetic, args.size, args.size), dtype=np.float32)
    training = rng.random((args.n_training, args.size, args.size), dtype=np.float32)
    if device.type == "cuda":  # inputs already on the device for both, so both time compute only
        synthetic_in, training_in = (
            torch.from_numpy(synthetic).to(device),
            torch.from_numpy(training).to(device),
        )
    else:
        synthetic_in, training_in = synthetic, training
    s_flat = torch.from_numpy(synthetic.reshape(len(synthetic), dim)).to(device)
    t_flat = torch.from_numpy(training.reshape(len(training), dim)).to(device)
    pairs = args.n_synthetic * args.n_training
    bs, bt, keep = block_sizes(
        args.n_synthetic, args.n_training, dim, int(args.memory_budget_mb * 2**20)
    )
    print(f"device {device} ({torch.get_num_threads()} threads); {args.n_synthetic} x {args.n_training} images of {args.size}^2; "
          f"memory budget {args.memory_budget_mb:g} MiB -> blocks {bs} x {bt}{' (training kept)' if keep else ''}")  # fmt: skip

    # warm up both (BLAS/cuBLAS initialisation) on a slice
    max_correlation(
        synthetic_in[:64], training_in[:64], memory_budget_mb=args.memory_budget_mb, device=device
    )
    _ = s_flat[:64] @ t_flat[:64].T

    bare = best_time(lambda: s_flat @ t_flat.T, args.repeats, device)
    ours = best_time(
        lambda: max_correlation(
            synthetic_in, training_in, memory_budget_mb=args.memory_budget_mb, device=device
        ),
        args.repeats,
        device,
    )
    print(f"bare matmul    : {bare:8.3f} s  {pairs / bare:14,.0f} pairs/s")
    print(f"max_correlation: {ours:8.3f} s  {pairs / ours:14,.0f} pairs/s")
    print(f"ratio (time ours / time bare): {ours / bare:.2f}  (target <= 2)")


if __name__ == "__main__":
    main()
