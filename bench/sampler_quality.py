"""Sampler quality versus cost on the trained study A models.

For CTM (both conditions) and CSM (SDEdit from t0, both conditions) this generates the same
test images with the PC sampler at several N and with EDM Heun (and its churn variant) at
about 10 to 100 network evaluations, computes MAE and PSNR per image, and compares each
setting with the reference PC N = 500 (1,000 evaluations, the paper's sampler) by a paired
Wilcoxon signed-rank test over the same images. Target: a sampler with <= 50 evaluations
within 0.5 dB PSNR and at most 5 % worse MAE than the reference.

    python bench/sampler_quality.py                       # demo models from the workflow
    python bench/sampler_quality.py --max-images 8 --conditions contour

Writes a TSV (--out-tsv) and a figure (--out-fig, PNG + PDF).
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import yaml
from scipy.stats import wilcoxon

from kneesynth import compute as compute_lib
from kneesynth.io import atomic_path, write_tsv
from kneesynth.score.sampling import get_sampler
from kneesynth.score.sde import VESDE
from kneesynth.seeding import derive_seed
from kneesynth.study_a.dataset import condition_key, load_dataset
from kneesynth.study_a.evaluate import image_metrics
from kneesynth.study_a.sample import generate, select_test_images
from kneesynth.study_a.train import load_network


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="config/config.yaml")
    parser.add_argument("--dataset", default="results/study_a/dataset.npz")
    parser.add_argument("--models", default="results/models/study_a")
    parser.add_argument("--conditions", default="contour,contour_bone")
    parser.add_argument("--kinds", default="ctm,csm")
    parser.add_argument("--max-images", type=int, default=None)
    parser.add_argument("--pc-steps", default="25,50,100,250")
    parser.add_argument("--reference-steps", type=int, default=500)
    parser.add_argument("--heun-steps", default="5,10,18,25,35,50")
    parser.add_argument("--churn-steps", default="10,25")
    parser.add_argument("--snr", type=float, default=None, help="PC snr (default: config)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out-tsv", default="results/study_a/sampler_quality.tsv")
    parser.add_argument("--out-fig", default="results/figures/sampler_quality.png")
    return parser.parse_args()


def settings(args, params):
    pc = dict(params["sampler"]["pc"])
    if args.snr is not None:
        pc["snr"] = args.snr
    runs = [("pc", {**pc, "steps": args.reference_steps})]
    runs += [("pc", {**pc, "steps": int(n)}) for n in args.pc_steps.split(",") if n]
    heun = dict(params["sampler"]["heun"])
    runs += [("heun", {**heun, "steps": int(n)}) for n in args.heun_steps.split(",") if n]
    churn = dict(params["sampler"]["heun_churn"])
    runs += [("heun_churn", {**churn, "steps": int(n)}) for n in args.churn_steps.split(",") if n]
    return runs


def paired_p(a, b):
    if np.all(a - b == 0):
        return 1.0
    return float(wilcoxon(a, b).pvalue)


def main():
    args = parse_args()
    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.WARNING)
    config = yaml.safe_load(Path(args.config).read_text())
    params = config["study_a"]
    device = compute_lib.device_for(config.get("compute"))
    data = load_dataset(args.dataset)
    index = select_test_images(data, args.max_images)
    target = data["drr"][index]
    sde = VESDE(float(params["sigma_min"]), float(params["sigma_max"]))
    rows = []
    for kind in args.kinds.split(","):
        for condition in args.conditions.split(","):
            name = "csm" if kind == "csm" else f"{kind}_{condition}"
            net = load_network(kind, Path(args.models) / f"{name}.pt", params, device)
            masks = torch.from_numpy(data[condition_key(condition)][index])[:, None]
            seed = derive_seed(int(params["seed"]), "sampler_quality", kind, condition)
            reference = None
            for sampler_name, options in settings(args, params):
                sampler = get_sampler(
                    sampler_name, sde, eps=float(params["sampler"]["eps"]), **options
                )
                start = time.perf_counter()
                generated, evaluations = generate(
                    kind, net, masks, params, seed, sampler=sampler, device=device
                )
                seconds = time.perf_counter() - start
                images = generated[:, 0].clamp(0, 1).numpy()
                metrics = image_metrics(images, target)
                if reference is None:
                    reference = metrics
                row = {
                    "model": kind,
                    "condition": condition,
                    "sampler": sampler_name,
                    "steps": options["steps"],
                    "evaluations": evaluations,
                    "n": len(index),
                    "mae_mean": metrics["mae"].mean(),
                    "mae_std": metrics["mae"].std(ddof=1),
                    "psnr_mean": metrics["psnr"].mean(),
                    "psnr_std": metrics["psnr"].std(ddof=1),
                    "psnr_minus_reference": metrics["psnr"].mean() - reference["psnr"].mean(),
                    "mae_ratio_to_reference": metrics["mae"].mean() / reference["mae"].mean(),
                    "wilcoxon_p_mae": paired_p(metrics["mae"], reference["mae"]),
                    "wilcoxon_p_psnr": paired_p(metrics["psnr"], reference["psnr"]),
                    "seconds": seconds,
                    "images_per_s": len(index) / seconds,
                }
                row["meets_target"] = bool(
                    row["evaluations"] <= 50
                    and row["psnr_minus_reference"] >= -0.5
                    and row["mae_ratio_to_reference"] <= 1.05
                )
                rows.append(row)
                print(
                    f"{kind:4s} {condition:13s} {sampler_name:10s} N={options['steps']:4d} "
                    f"NFE={evaluations:5d} MAE={row['mae_mean']:.4f} PSNR={row['psnr_mean']:.2f} "
                    f"dPSNR={row['psnr_minus_reference']:+.2f} MAEx{row['mae_ratio_to_reference']:.3f} "
                    f"p_psnr={row['wilcoxon_p_psnr']:.3g} {seconds:.1f}s"
                    + ("  <- meets target" if row["meets_target"] else ""),
                    flush=True,
                )
    table = pd.DataFrame(rows)
    table.insert(0, "reference", f"pc N={args.reference_steps}")
    write_tsv(args.out_tsv, table)
    plot(table, args.out_fig)
    print(f"wrote {args.out_tsv} and {args.out_fig}")


def plot(table, out_png):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    markers = {"pc": "o", "heun": "s", "heun_churn": "^"}
    for (model, condition, sampler), group in table.groupby(["model", "condition", "sampler"]):
        group = group.sort_values("evaluations")
        label = f"{model.upper()} {condition} {sampler}"
        for ax, column in zip(axes, ("psnr_mean", "mae_mean"), strict=True):
            ax.plot(
                group["evaluations"], group[column], marker=markers.get(sampler, "x"), label=label
            )
    for ax, title in zip(axes, ("PSNR (dB)", "MAE"), strict=True):
        ax.set_xscale("log")
        ax.set_xlabel("network evaluations per image")
        ax.set_title(title)
        ax.axvline(50, color="gray", linestyle=":", linewidth=1)
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=6, ncol=1, bbox_to_anchor=(1.02, 1), loc="upper left")
    fig.suptitle("Study A: quality vs sampling cost (reference PC N=500 = 1000 evaluations)")
    fig.tight_layout()
    for path in (Path(out_png), Path(out_png).with_suffix(".pdf")):
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=150, format=path.suffix.lstrip("."))
    plt.close(fig)


if __name__ == "__main__":
    main()
