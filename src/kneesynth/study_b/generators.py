"""Study B generators of knee radiographs by Kellgren-Lawrence (KL) grade, as whole generators:
trained from the OAI manifest, saved, loaded and sampled (the DDPMs in :mod:`kneesynth.study_b.ddpm`,
the WGAN-GP in :mod:`kneesynth.study_b.wgan`).

Three generators, all trained on the real training split only (Smits Serena et al., DKOU 2025):
``ddpm_uncond`` ("Diff-Unco": one unconditional DDPM per KL grade), ``ddpm_cond`` ("Diff-Cond":
one DDPM conditioned on the KL grade) and ``wgan`` (a conditional WGAN-GP).

Images are 1-channel, ``(n, 1, H, W)`` float tensors in ``[-1, 1]`` inside the models, and
``(n, H, W)`` uint8 arrays outside. Every random draw of a training step comes from
:func:`kneesynth.training.step_generator`, so a killed job resumes to the same weights; every
sample is drawn from its own ``torch.Generator`` seeded by the per-image seed written to the
sample manifest, so an image depends on (model, KL grade, seed) only, not on batching.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from kneesynth.data.images import load_images
from kneesynth.data.manifest import KL_GRADES, grade_counts, read_oai_manifest
from kneesynth.errors import InputError
from kneesynth.seeding import derive_seed
from kneesynth.study_b.ddpm import (
    build_unet,
    destandardise,
    sample_ddpm,
    scheduler_settings,
    standardiser,
    to_uint8,
    train_ddpms,
    unet_settings,
)
from kneesynth.study_b.settings import GENERATORS, UNCONDITIONAL_DDPMS
from kneesynth.study_b.wgan import WganGenerator, sample_wgan, train_wgan, wgan_settings
from kneesynth.training import load_weights, save_weights

logger = logging.getLogger(__name__)


def _training_split(manifest: str | os.PathLike[str], image_size: int):
    train = read_oai_manifest(manifest, split="train")
    return train, load_images(train["image"].tolist(), image_size), train["kl_grade"].to_numpy()


FINE_TUNE_KEYS = ("steps", "batch_size", "learning_rate")


def ddpm_settings(generators: Mapping[str, Any], name: str) -> dict[str, Any]:
    """The ``ddpm`` section with the steps (and, if given, batch size and learning rate) of
    ``name`` (``ddpm_uncond``, ``ddpm_cond``) or, for the base, ``ddpm.base_steps``."""
    ddpm = dict(generators["ddpm"])
    if name == "ddpm_base":
        return {**ddpm, "steps": int(ddpm["base_steps"])}
    section = generators[name]
    return {**ddpm, **{k: section[k] for k in FINE_TUNE_KEYS if section.get(k) is not None}}


def _ddpm_meta(ddpm: Mapping[str, Any], image_size: int, conditional: bool, stats) -> dict:
    meta = {
        "unet": unet_settings(ddpm, image_size, conditional),
        "scheduler": scheduler_settings(ddpm),
    }
    if stats is not None:
        meta["standardise"] = {"mean": stats["mean"].clone(), "scale": float(stats["scale"])}
    return meta


def train_ddpm_base(
    manifest: str | os.PathLike[str],
    generators: Mapping[str, Any],
    output: str | os.PathLike[str],
    state_dir: str | os.PathLike[str],
    seed: int,
    device: torch.device | str = "cpu",
    compute: Mapping[str, Any] | None = None,
) -> None:
    """Train one unconditional DDPM on the real training split (``ddpm.base_steps`` steps) and
    write ``output``: the shared base that ``ddpm_uncond``'s per-grade models and ``ddpm_cond``
    are fine-tuned from (:func:`train_generator` with ``base_weights``). ``compute``: bf16,
    channels_last, compile (:func:`train_ddpms`)."""
    image_size = int(generators["image_size"])
    train, images, _ = _training_split(manifest, image_size)
    seed = derive_seed(int(seed), "study_b", "ddpm_base")
    ddpm = ddpm_settings(generators, "ddpm_base")
    stats = standardiser(images) if ddpm.get("standardise") else None
    logger.info("ddpm_base: %d training images, %d steps", len(train), ddpm["steps"])
    weights = train_ddpms(
        {"all": (images, None)},
        ddpm,
        image_size,
        seed,
        state_dir,
        conditional=False,
        device=device,
        compute=compute,
        settings={
            "generator": "ddpm_base",
            "config": generators,
            "seed": seed,
            "images": train["image"].tolist(),
        },
        stats=stats,
    )
    meta = {
        "generator": "ddpm_base",
        "image_size": image_size,
        "n_train": len(train),
        **_ddpm_meta(ddpm, image_size, False, stats),
    }
    save_weights(output, weights["all"], meta)
    shutil.rmtree(state_dir, ignore_errors=True)  # the weights are safe: drop the resume state


def train_memorization_probe(
    manifest: str | os.PathLike[str],
    generators: Mapping[str, Any],
    probe: Mapping[str, Any],
    output: str | os.PathLike[str],
    state_dir: str | os.PathLike[str],
    seed: int,
    base_weights: str | os.PathLike[str],
    device: torch.device | str = "cpu",
    compute: Mapping[str, Any] | None = None,
) -> None:
    """The memorisation probe: the shared DDPM base trained further on a few training images.

    The base (:func:`train_ddpm_base`, the same DDPM trained on the whole training split) is
    fine-tuned for ``probe.steps`` steps of ``probe.batch_size`` images on ``probe.train_images``
    training images drawn at random (seeded), a set small enough for it to copy, as diffusion
    models copy their training images when the data set is small (Akbar et al.). The base is its
    full-data twin: a memorisation check that sees anything flags the probe's images and far
    fewer of the base's.
    """
    image_size = int(generators["image_size"])
    train, images, _ = _training_split(manifest, image_size)
    seed = derive_seed(int(seed), "study_b", "memorization_probe")
    count = int(probe["train_images"])
    if not 1 <= count <= len(train):
        raise InputError(
            manifest, f"memorization_probe: {count} training images wanted, {len(train)} exist"
        )
    chosen = np.sort(
        np.random.default_rng(derive_seed(seed, "subset")).choice(len(train), count, replace=False)
    )
    init, base_meta = load_weights(base_weights)
    if base_meta.get("generator") != "ddpm_base":
        raise InputError(base_weights, "not the shared DDPM base (meta generator)")
    stats = base_meta.get("standardise")
    ddpm = {
        **generators["ddpm"],
        "steps": int(probe["steps"]),
        "batch_size": int(probe["batch_size"]),
    }
    used = train["image"].iloc[chosen].tolist()
    logger.info("memorization probe: %d training images, %d steps", count, ddpm["steps"])
    weights = train_ddpms(
        {"all": (images[chosen], None)},
        ddpm,
        image_size,
        seed,
        state_dir,
        conditional=False,
        device=device,
        compute=compute,
        settings={"probe": dict(probe), "config": generators, "seed": seed, "images": used},
        init_weights=init,
        stats=stats,
    )
    meta = {
        "generator": "memorization_probe",
        "image_size": image_size,
        "n_train": count,
        "train_images": used,
        **_ddpm_meta(ddpm, image_size, False, stats),
    }
    save_weights(output, weights["all"], meta)
    shutil.rmtree(state_dir, ignore_errors=True)  # the weights are safe: drop the resume state


def train_generator(
    name: str,
    manifest: str | os.PathLike[str],
    generators: Mapping[str, Any],
    output: str | os.PathLike[str],
    state_dir: str | os.PathLike[str],
    seed: int,
    device: torch.device | str = "cpu",
    base_weights: str | os.PathLike[str] | None = None,
    compute: Mapping[str, Any] | None = None,
) -> None:
    """Train generator ``name`` on the real training split of ``manifest`` and write ``output``.

    ``generators`` is the ``study_b.generators`` config section (image_size, ddpm: the shared
    DDPM net and schedule, ddpm_uncond / ddpm_cond: steps and guidance, wgan). ``seed`` is the
    base seed; ``compute`` the ``compute`` config section (bf16, channels_last, compile). The
    weights file holds ``state_dict`` (for ``ddpm_uncond`` a dict ``kl0``..``kl4`` of UNet
    weights) and ``meta`` with everything needed to rebuild the nets.

    ``base_weights`` (DDPMs): fine-tune from the shared base (:func:`train_ddpm_base`): every
    per-grade model of ``ddpm_uncond`` and the conditional ``ddpm_cond`` start from it and
    work in its standardisation; without it they start from scratch.
    """
    if name not in GENERATORS:
        raise ValueError(f"unknown generator {name!r}; choose one of {', '.join(GENERATORS)}")
    image_size = int(generators["image_size"])
    train, images, kl_grades = _training_split(manifest, image_size)
    counts = grade_counts(kl_grades)
    seed = derive_seed(int(seed), "study_b", name)
    settings = {
        "generator": name,
        "config": generators,
        "seed": seed,
        "n_train": len(train),
        "counts": counts,
        "images": train["image"].tolist(),
    }
    meta: dict[str, Any] = {
        "generator": name,
        "image_size": image_size,
        "train_counts": counts,
        "n_train": len(train),
    }
    logger.info("%s: %d training images, per KL grade %s", name, len(train), counts)
    if name in ("ddpm_uncond", "ddpm_cond"):
        ddpm = ddpm_settings(generators, name)
        conditional = name == "ddpm_cond"
        if conditional:
            datasets = {"all": (images, kl_grades)}
            cond = generators["ddpm_cond"]
            guidance, dropout = float(cond["guidance_scale"]), float(cond["label_dropout"])
        else:
            empty = [g for g, n in counts.items() if n == 0]
            if empty:
                raise InputError(
                    manifest,
                    f"no training images of KL grade(s) {empty}: "
                    "ddpm_uncond needs one model per grade",
                )
            datasets = {f"kl{g}": (images[kl_grades == g], None) for g in KL_GRADES}
            guidance, dropout = 0.0, 0.0
        init, stats = None, None
        if base_weights is not None:
            init, base_meta = load_weights(base_weights)
            if base_meta.get("generator") != "ddpm_base":
                raise InputError(base_weights, "not the shared DDPM base (meta generator)")
            stats = base_meta.get("standardise")
            settings["base"] = {k: v for k, v in base_meta.items() if k != "standardise"}
        elif ddpm.get("standardise"):
            stats = standardiser(images)
        weights = train_ddpms(
            datasets,
            ddpm,
            image_size,
            seed,
            state_dir,
            conditional,
            guidance,
            dropout,
            device=device,
            settings=settings,
            init_weights=init,
            stats=stats,
            compute=compute,
        )
        state_dict = weights["all"] if conditional else weights
        meta.update(
            {**_ddpm_meta(ddpm, image_size, conditional, stats), "guidance_scale": guidance}
        )
        meta["fine_tuned_from_base"] = base_weights is not None
    else:
        wgan = generators["wgan"]
        state_dict = train_wgan(
            images,
            kl_grades,
            wgan,
            image_size,
            seed,
            state_dir,
            device=device,
            settings=settings,
            compute=compute,
        )
        meta.update(
            {"wgan": {**wgan_settings(wgan, image_size), "latent_dim": int(wgan["latent_dim"])}}
        )
    save_weights(output, state_dict, meta)
    shutil.rmtree(state_dir, ignore_errors=True)  # the weights are safe: drop the resume state


def _unet_from(settings: Mapping[str, Any], weights: Mapping[str, torch.Tensor], device):
    unet = build_unet(dict(settings))
    unet.load_state_dict(weights)
    return unet.to(device).eval()


def sample_generator(
    weights_path: str | os.PathLike[str],
    kl_grades: Sequence[int],
    seeds: Sequence[int],
    sampling: Mapping[str, Any],
    device: torch.device | str = "cpu",
) -> np.ndarray:
    """Draw image i of KL grade ``kl_grades[i]`` from seed ``seeds[i]``: uint8 (n, H, W).

    ``sampling`` keys: sampler (ancestral | ddim | dpmsolver++; DDPMs only), inference_steps,
    batch_size. The unconditional single DDPMs (the shared base, the memorisation probe) draw
    from seed ``seeds[i]`` whatever ``kl_grades[i]`` says.
    """
    state_dict, meta = load_weights(weights_path)
    name = meta.get("generator")
    if name not in GENERATORS + UNCONDITIONAL_DDPMS:
        raise InputError(weights_path, f"not a study B generator (meta generator={name!r})")
    kl_grades = np.asarray(kl_grades, dtype=int)
    seeds = np.asarray(seeds, dtype=np.int64)
    if kl_grades.shape != seeds.shape:
        raise ValueError("kl_grades and seeds must have the same length")
    device = torch.device(device)
    size = int(meta["image_size"])
    out = np.empty((len(seeds), size, size), dtype=np.uint8)
    batch_size = int(sampling["batch_size"])
    if name == "wgan":
        net = WganGenerator(**meta["wgan"])
        net.load_state_dict(state_dict)
        net = net.to(device)
        for start in range(0, len(seeds), batch_size):
            part = slice(start, start + batch_size)
            out[part] = to_uint8(sample_wgan(net, seeds[part], kl_grades[part], device))
        return out
    sampler, steps = str(sampling["sampler"]), int(sampling["inference_steps"])
    stats = meta.get("standardise")
    if name == "ddpm_cond":
        unet = _unet_from(meta["unet"], state_dict, device)
        for start in range(0, len(seeds), batch_size):
            part = slice(start, start + batch_size)
            images = sample_ddpm(
                unet,
                meta["scheduler"],
                sampler,
                steps,
                seeds[part],
                kl_grades[part],
                float(meta.get("guidance_scale", 0.0)),
                device,
            )
            out[part] = to_uint8(destandardise(images, stats))
        return out
    if name in UNCONDITIONAL_DDPMS:
        models = {"all": np.arange(len(seeds))}
    else:  # ddpm_uncond: the model of each grade
        models = {
            f"kl{grade}": np.flatnonzero(kl_grades == grade) for grade in np.unique(kl_grades)
        }
    for key, where in models.items():
        unet = _unet_from(meta["unet"], state_dict if key == "all" else state_dict[key], device)
        for start in range(0, len(where), batch_size):
            part = where[start : start + batch_size]
            images = sample_ddpm(
                unet, meta["scheduler"], sampler, steps, seeds[part], None, 0.0, device
            )
            out[part] = to_uint8(destandardise(images, stats))
    return out


def generator_path_name(path: str | os.PathLike[str]) -> str:
    """``results/models/study_b/wgan.pt`` -> ``wgan``."""
    return Path(path).stem
