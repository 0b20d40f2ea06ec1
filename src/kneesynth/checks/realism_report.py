"""The realism check (classifier two-sample test, :mod:`kneesynth.checks.realism`) run on each
study, and its rows of ``realism.tsv`` (one number per row).
"""

from __future__ import annotations

import logging

import numpy as np
import torch

from kneesynth.checks.realism import RealismResult, balanced_subsample, classifier_two_sample_test
from kneesynth.checks.settings import study_a_model_condition
from kneesynth.data.images import ImageFiles
from kneesynth.data.manifest import read_oai_manifest, read_sample_manifest, resolve_image
from kneesynth.errors import InputError
from kneesynth.io import load_npz
from kneesynth.seeding import derive_seed
from kneesynth.tables import TABLE_COLUMNS, table_row

logger = logging.getLogger(__name__)

# --------------------------------------------------------------------------------------------
# Per study
# --------------------------------------------------------------------------------------------

NOTE = (
    "classifier two-sample test: CNN real vs synthetic, cross-fitted over folds grouped by unit; "
    "mean per-fold AUC with a unit bootstrap CI (0.5 = indistinguishable); p from exact "
    "per-fold rank tests, Bonferroni over folds. No paper value: the automatic stand-in for "
    "the reader study (readers detected 16.7 % of DDPM and 62.5 % of GAN images)"
)


def _test_kwargs(settings: dict) -> dict:
    return {
        key: settings[key]
        for key in (
            "folds", "epochs", "batch_size", "learning_rate", "channels", "confidence",
            "bootstrap_resamples",
        )
    }  # fmt: skip


def _enough_units(path, per_class: int, settings: dict, unit: str = "images") -> None:

    if per_class < 2 * int(settings["folds"]):
        raise InputError(
            path,
            f"the C2ST with {settings['folds']} folds needs at least {2 * int(settings['folds'])} "
            f"real and synthetic {unit}, found {per_class} of one of them",
        )


def realism_rows(study: str, model: str, condition: str, result: RealismResult) -> list[dict]:
    """Rows of ``realism.tsv`` for one generator."""
    return [
        table_row(
            study,
            model,
            condition,
            metric,
            value,
            "",
            NOTE if metric == "c2st_auc" else result.note if metric == "c2st_p_value" else "",
        )
        for metric, value in result.summary().items()
    ]


def study_a_realism(sample_paths, settings: dict, device: torch.device | str = "cpu"):
    """Study A: each sample set's generated DRRs vs their real targets (the test DRRs whose
    masks they were generated from). Returns the rows as a DataFrame."""
    import pandas as pd  # heavy (pandas): imported on use

    rows = []
    for path in sample_paths:
        stem = str(path).rsplit("/", 1)[-1].removesuffix(".npz")
        model, condition = study_a_model_condition(stem)
        sample = load_npz(path)
        for key in ("generated", "target"):
            if key not in sample:
                raise InputError(path, f"no {key!r} array")
        if len(sample["target"]) != len(sample["generated"]):
            raise InputError(path, "generated and target differ in number of images")
        # pairs: target i and its reconstruction share a unit (they sit in one fold)
        pairs, _ = balanced_subsample(
            len(sample["target"]),
            len(sample["generated"]),
            settings.get("max_images_per_class"),
            derive_seed(int(settings["seed"]), "A", stem),
        )
        _enough_units(path, len(pairs), settings, "images (target pairs)")
        result = classifier_two_sample_test(
            sample["target"][pairs], sample["generated"][pairs], paired=True,
            seed=derive_seed(int(settings["seed"]), "c2st", "A", stem), device=device,
            **_test_kwargs(settings),
        )  # fmt: skip
        logger.info(
            "A %s: C2ST AUC %.3f [%.3f, %.3f]", stem, result.auc, result.auc_low, result.auc_high
        )
        rows += realism_rows("A", model, condition, result)
    return pd.DataFrame(rows, columns=TABLE_COLUMNS)


def study_b_realism(
    real_manifest, sample_manifests, settings: dict, device: torch.device | str = "cpu"
):
    """Study B: each generator's images vs real held-out images (``held_out_split``), read at
    the synthetic images' size. Returns the rows as a DataFrame."""
    import pandas as pd  # heavy (pandas): imported on use

    held = read_oai_manifest(real_manifest, split=settings["held_out_split"])
    rows = []
    for manifest in sample_manifests:
        frame = read_sample_manifest(manifest)
        generator = str(frame["generator"].iloc[0])
        synthetic = ImageFiles([resolve_image(p, manifest) for p in frame["image"].astype(str)])
        real = ImageFiles(
            [resolve_image(p, real_manifest) for p in held["image"].astype(str)],
            synthetic.size,
        )
        real_index, synthetic_index = balanced_subsample(
            len(real),
            len(synthetic),
            settings.get("max_images_per_class"),
            derive_seed(int(settings["seed"]), "B", generator),
        )
        participants = held["participant"].astype(str).to_numpy()[real_index]
        _enough_units(manifest, len(set(participants)), settings, "units (participants)")
        real_images = np.stack([real[int(i)] for i in real_index])
        synthetic_images = np.stack([synthetic[int(i)] for i in synthetic_index])
        result = classifier_two_sample_test(
            real_images,
            synthetic_images,
            real_units=participants,
            seed=derive_seed(int(settings["seed"]), "c2st", "B", generator),
            device=device,
            **_test_kwargs(settings),
        )
        logger.info(
            "B %s: C2ST AUC %.3f [%.3f, %.3f]",
            generator,
            result.auc,
            result.auc_low,
            result.auc_high,
        )
        rows += realism_rows("B", generator, "all", result)
    return pd.DataFrame(rows, columns=TABLE_COLUMNS)
