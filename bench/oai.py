"""Benchmark of study B's generators: training steps/s, sampling images/s, at demo and paper size.

Usage (repo root)::

    python bench/oai.py                          # demo settings (config/config.yaml), CPU or GPU
    python bench/oai.py --threads 2 --repeats 5
    python bench/oai.py --skip-paper             # without the 224 x 224 paper-size step

Prints one table (TSV on stdout): what, setting, value, unit. Rows:

- training steps/s of the DDPM UNet (one model; ddpm_uncond trains five in lockstep, so its
  job runs at a fifth of this), the conditional DDPM, the WGAN-GP (one generator update with
  ``n_critic`` critic updates) and the FID feature net, at the demo's image size and batch;
- sampling images/s of the conditional DDPM for ancestral (DDPMScheduler at the paper's
  ``num_train_timesteps`` steps, timed on ``--ancestral-steps`` of them and scaled, since the cost
  per step is constant), DDIM and DPM-Solver++ at the demo's ``inference_steps``, and the WGAN;
- seconds per training step at paper size (224 x 224, config/paper.yaml nets, batch
  ``--paper-batch``, the paper's batch on a GPU) for the DDPM and the WGAN;
- classifier seconds per epoch (kneesynth.study_b.classify, study_b.classifiers) when that module is
  importable, on random images of the demo's real training-set size.

Times are wall-clock (or process CPU time with ``--cpu-time``) after one warm-up call, with CUDA
synchronised, on random data (the nets' cost does not depend on the pixels). Networks are
untrained.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from kneesynth.compute import device_for  # noqa: E402
from kneesynth.study_b.ddpm import (  # noqa: E402
    NULL_CLASS,
    build_unet,
    sample_ddpm,
    scheduler_settings,
    unet_settings,
)
from kneesynth.study_b.wgan import (  # noqa: E402
    WganCritic,
    WganGenerator,
    _gradient_penalty,
    wgan_settings,
)

CLOCK = {"clock": time.perf_counter}


def timed(function: Callable[[], object], device: torch.device, repeats: int) -> float:
    """Seconds per call of ``function`` (mean of ``repeats`` after one warm-up); wall clock, or
    this process's CPU time with ``--cpu-time`` (fairer on a CPU shared with other jobs)."""
    clock = CLOCK["clock"]
    function()
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = clock()
    for _ in range(repeats):
        function()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (clock() - start) / repeats


def ddpm_step(generators: dict, image_size: int, batch: int, conditional: bool, device):
    """One DDPM training step (epsilon MSE, AdamW) as a closure."""
    unet = build_unet(unet_settings(generators["ddpm"], image_size, conditional)).to(device)
    optimizer = torch.optim.AdamW(unet.parameters(), lr=1e-4)
    clean = torch.randn(batch, 1, image_size, image_size, device=device)
    labels = torch.randint(0, NULL_CLASS + 1, (batch,), device=device) if conditional else None
    steps = int(generators["ddpm"]["num_train_timesteps"])

    def step():
        noise = torch.randn_like(clean)
        t = torch.randint(0, steps, (batch,), device=device)
        loss = F.mse_loss(unet(clean + noise, t, class_labels=labels).sample, noise)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step, unet


def wgan_step(generators: dict, image_size: int, batch: int, device):
    """One WGAN-GP step (n_critic critic updates + one generator update) as a closure."""
    wgan = generators["wgan"]
    settings = wgan_settings(wgan, image_size)
    latent = int(wgan["latent_dim"])
    net_g = WganGenerator(latent_dim=latent, **settings).to(device)
    critic = WganCritic(**settings).to(device)
    opt_g = torch.optim.Adam(net_g.parameters(), lr=1e-4, betas=(0.0, 0.9))
    opt_c = torch.optim.Adam(critic.parameters(), lr=1e-4, betas=(0.0, 0.9))
    real = torch.randn(batch, 1, image_size, image_size, device=device)
    labels = torch.randint(0, NULL_CLASS, (batch,), device=device)
    generator = torch.Generator().manual_seed(0)

    def step():
        for _ in range(int(wgan["n_critic"])):
            with torch.no_grad():
                fake = net_g(torch.randn(batch, latent, device=device), labels)
            loss = critic(fake, labels).mean() - critic(real, labels).mean()
            loss = loss + 10 * _gradient_penalty(critic, real, fake, labels, generator)
            opt_c.zero_grad(set_to_none=True)
            loss.backward()
            opt_c.step()
        loss = -critic(net_g(torch.randn(batch, latent, device=device), labels), labels).mean()
        opt_g.zero_grad(set_to_none=True)
        loss.backward()
        opt_g.step()

    return step, net_g


def classifier_epoch_rows(config: dict, image_size: int, n_images: int, device, repeats: int):
    """Seconds per classifier epoch (B2's kneesynth.study_b.classify) on random images, if available."""
    try:
        from kneesynth.study_b.classify import build_classifier
    except ImportError:
        return []
    classifiers = config["study_b"].get("classifiers")
    if not classifiers:
        return []
    net = build_classifier(classifiers["backbone"], 5, image_size).to(device)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    batch = int(classifiers["batch_size"])
    images = torch.randn(n_images, 1, image_size, image_size, device=device)
    labels = torch.randint(0, 5, (n_images,), device=device)

    def epoch():
        for start in range(0, n_images, batch):
            loss = F.cross_entropy(
                net(images[start : start + batch]), labels[start : start + batch]
            )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

    seconds = timed(epoch, device, max(1, repeats // 3))
    return [
        (
            "classifier epoch",
            f"{classifiers['backbone']} {n_images} images {image_size}^2",
            seconds,
            "s/epoch",
        )
    ]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(ROOT / "config/config.yaml"))
    parser.add_argument("--paper-config", default=str(ROOT / "config/paper.yaml"))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--ancestral-steps",
        type=int,
        default=20,
        help="ancestral steps actually timed (scaled to num_train_timesteps)",
    )
    parser.add_argument("--sample-batch", type=int, default=32)
    parser.add_argument(
        "--paper-batch",
        type=int,
        default=None,
        help="batch of the paper-size step (default: paper's on CUDA, 4 on CPU)",
    )
    parser.add_argument(
        "--classifier-images",
        type=int,
        default=168,
        help="images per classifier epoch (demo real training split: 168)",
    )
    parser.add_argument("--skip-paper", action="store_true")
    parser.add_argument(
        "--cpu-time",
        action="store_true",
        help="time by process CPU time instead of wall clock (CPU runs only)",
    )
    args = parser.parse_args(argv)
    if args.cpu_time:
        CLOCK["clock"] = time.process_time
    torch.set_num_threads(args.threads)
    config = yaml.safe_load(Path(args.config).read_text())
    device = device_for(config.get("compute"))
    generators = config["study_b"]["generators"]
    samples = config["study_b"]["samples"]
    size = int(generators["image_size"])
    rows = []

    batch = int(generators["ddpm"]["batch_size"])
    for name, conditional in (("ddpm_uncond (one grade model)", False), ("ddpm_cond", True)):
        step, _ = ddpm_step(generators, size, batch, conditional, device)
        rows.append(
            (
                f"train {name}",
                f"{size}^2 batch {batch}",
                1 / timed(step, device, args.repeats),
                "steps/s",
            )
        )
    wgan_batch = int(generators["wgan"]["batch_size"])
    step, net_g = wgan_step(generators, size, wgan_batch, device)
    rows.append(
        (
            "train wgan",
            f"{size}^2 batch {wgan_batch} n_critic {generators['wgan']['n_critic']}",
            1 / timed(step, device, args.repeats),
            "steps/s",
        )
    )

    from kneesynth.study_b.fid import build_feature_net

    fid_net = build_feature_net(config["study_b"]["fid"]["classifier"]).to(device)
    fid_opt = torch.optim.Adam(fid_net.parameters())
    fid_batch = int(config["study_b"]["fid"]["classifier"]["batch_size"])
    fid_x = torch.randn(fid_batch, 1, size, size, device=device)
    fid_y = torch.randint(0, 5, (fid_batch,), device=device)

    def fid_step():
        loss = F.cross_entropy(fid_net(fid_x), fid_y)
        fid_opt.zero_grad(set_to_none=True)
        loss.backward()
        fid_opt.step()

    rows.append(
        (
            "train fid_features",
            f"{size}^2 batch {fid_batch}",
            1 / timed(fid_step, device, args.repeats),
            "steps/s",
        )
    )

    # sampling: conditional DDPM (untrained: cost does not depend on the weights)
    unet = build_unet(unet_settings(generators["ddpm"], size, True)).to(device).eval()
    scheduler = scheduler_settings(generators["ddpm"])
    n = args.sample_batch
    seeds, grades = list(range(n)), [i % 5 for i in range(n)]
    total = int(scheduler["num_train_timesteps"])
    timed_steps = min(args.ancestral_steps, total)
    seconds = timed(
        lambda: sample_ddpm(unet, scheduler, "ancestral", timed_steps, seeds, grades, 0.0, device),
        device,
        1,
    )
    # DDPMScheduler with fewer inference steps than T strides the chain; the cost per network
    # evaluation is the same, so the full chain costs total / timed_steps as much.
    rows.append(
        (
            "sample ancestral",
            f"{total} steps (timed {timed_steps}, scaled) batch {n}",
            n / (seconds * total / timed_steps),
            "images/s",
        )
    )
    steps = int(samples["inference_steps"])
    for sampler in ("ddim", "dpmsolver++"):
        seconds = timed(
            lambda s=sampler: sample_ddpm(unet, scheduler, s, steps, seeds, grades, 0.0, device),
            device,
            1,
        )
        rows.append((f"sample {sampler}", f"{steps} steps batch {n}", n / seconds, "images/s"))
    seconds = timed(
        lambda: sample_ddpm(unet, scheduler, "ddim", steps, seeds, grades, 1.0, device), device, 1
    )
    rows.append(("sample ddim + guidance", f"{steps} steps batch {n} w=1", n / seconds, "images/s"))
    z = torch.randn(n, net_g.latent_dim, device=device)
    labels = torch.tensor(grades, device=device)
    net_g.eval()
    with torch.no_grad():
        seconds = timed(lambda: net_g(z, labels), device, args.repeats)
    rows.append(("sample wgan", f"batch {n}", n / seconds, "images/s"))

    rows += classifier_epoch_rows(config, size, args.classifier_images, device, args.repeats)

    if not args.skip_paper:
        paper = yaml.safe_load(Path(args.paper_config).read_text())["study_b"]["generators"]
        psize = int(paper["image_size"])
        pbatch = args.paper_batch or (
            int(paper["ddpm"]["batch_size"]) if device.type == "cuda" else 4
        )
        step, _ = ddpm_step(paper, psize, pbatch, True, device)
        rows.append(
            (
                "train ddpm_cond paper net",
                f"{psize}^2 batch {pbatch}",
                timed(step, device, 1),
                "s/step",
            )
        )
        wbatch = args.paper_batch or (
            int(paper["wgan"]["batch_size"]) if device.type == "cuda" else 4
        )
        step, _ = wgan_step(paper, psize, wbatch, device)
        rows.append(
            (
                "train wgan paper net",
                f"{psize}^2 batch {wbatch} n_critic {paper['wgan']['n_critic']}",
                timed(step, device, 1),
                "s/step",
            )
        )

    name = (
        torch.cuda.get_device_name() if device.type == "cuda" else f"cpu, {args.threads} thread(s)"
    )
    clock = "process CPU time" if args.cpu_time else "wall clock"
    print(f"# bench/oai.py on {name}; torch {torch.__version__}; {clock}")
    print("what\tsetting\tvalue\tunit")
    for what, setting, value, unit in rows:
        print(f"{what}\t{setting}\t{value:.4g}\t{unit}")


if __name__ == "__main__":
    main()
