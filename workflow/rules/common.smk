# Config validation, the lists of volumes, and the input functions of every stage.
import glob
import os
import sys

from kneesynth.config import validate_config
from kneesynth.errors import InputError
from kneesynth.data.ingest import list_volumes, volume_names
from kneesynth.data.oai_raw import batch_folder, oai_batches
from kneesynth.study_a.settings import CONDITIONS as STUDY_A_CONDITIONS
from kneesynth.study_a.settings import TRAINING_KEYS as STUDY_A_TRAINING_KEYS

try:
    validate_config(
        config,
        workflow.source_path("../schemas/config.schema.yaml"),
        workflow.configfiles,
        workflow.config_settings.config_args,
    )
except InputError as error:
    sys.exit(f"kneesynth: error: {error}")


onstart:
    # before the first job: a read-only or full results/ is one line, not a job's traceback
    from kneesynth.io import check_writable

    try:
        check_writable("results")
    except InputError as error:
        sys.exit(f"kneesynth: error: {error}")


# The {volume} wildcard values, known at parse time: phantom names computed from the config
# (nothing rendered), or the volumes found in data.sicas_dir.
try:
    VOLUMES = volume_names(config)
except InputError as error:  # e.g. an empty or missing data.sicas_dir: one line
    sys.exit(f"kneesynth: error: {error}")


wildcard_constraints:
    volume=r"[^/]+",
    batch=r"[^/]+",
    condition="|".join(STUDY_A_CONDITIONS),


def all_targets(wildcards):
    """Every stage's outputs (STAGE_TARGETS is filled in targets.smk, read at DAG time)."""
    return sorted({path for paths in STAGE_TARGETS.values() for path in paths})


# The per-study tables of paired tests that rule paired_tests joins.
PAIRED_TEST_TABLES = [
    "results/study_a/paired_tests.tsv",
    "results/study_b/paired_tests.tsv",
]


# --- data: phantom or real folders ---
DATA_REAL_CT = bool(config["data"]["sicas_dir"])
DATA_REAL_OAI = bool(config["data"].get("oai_dir"))
DATA_OAI_RAW = DATA_REAL_OAI and config["data"].get("oai_format", "chen") == "raw"


SICAS_VOLUMES = (
    {}
)  # {volume: file or DICOM folder} of data.sicas_dir, listed on first use


def ct_source(wildcards):
    """One raw CT volume: its file or DICOM folder in the SICAS folder, or the phantom NIfTI."""
    if DATA_REAL_CT:
        if not SICAS_VOLUMES:
            SICAS_VOLUMES.update(list_volumes(config["data"]["sicas_dir"]))
        return str(SICAS_VOLUMES[wildcards.volume])
    return f"results/phantom/sicas/{wildcards.volume}.nii"


# Raw OAI is cropped in batches, one job each (its subfolders: OAI's visit folders).
try:
    OAI_BATCHES = oai_batches(config["data"]["oai_dir"]) if DATA_OAI_RAW else []
except InputError as error:
    sys.exit(f"kneesynth: error: {error}")


def oai_batch_folder(wildcards):
    """The raw OAI folder that one crop job reads."""
    return str(batch_folder(config["data"]["oai_dir"], wildcards.batch))


def oai_crop_dirs(wildcards):
    """The crop jobs' folders that the raw OAI manifest is built from (none for Chen)."""
    return expand("results/oai/crops/{batch}", batch=OAI_BATCHES)


def oai_source(wildcards):
    """The OAI folder: real (Chen layout or raw DICOM) or the phantom Chen layout."""
    return config["data"]["oai_dir"] if DATA_REAL_OAI else "results/phantom/oai"


def oai_kl_tables(wildcards):
    """Raw OAI KL tables named in the config (an empty list: ingest searches oai_dir)."""
    return list(config["data"].get("oai_kl_tables", [])) if DATA_OAI_RAW else []


# --- checks ---
def checks_kl_predictions(wildcards):
    """Study B classifier predictions (real and synthetic-only arms, every seed) for utility."""
    utility = config["checks"]["utility"]
    if not utility["kl_arms"]:
        return []
    seeds = config["study_b"]["classifiers"]["seeds"]
    return expand(
        "results/classifiers/{task}/{arm}/seed{seed}.tsv",
        task=utility["kl_task"],
        arm=["real", *utility["kl_arms"]],
        seed=seeds,
    )


def checks_reader_responses(wildcards):
    """Filled answer sheets <reader>_<generator>.csv in the configured folder (may be none)."""
    folder = config["checks"]["reader_study"]["responses_dir"]
    return sorted(glob.glob(os.path.join(folder, "*.csv")))


# --- study_b ---
STUDY_B_DDPM_BASE = config["study_b"]["generators"]["ddpm"]["base_steps"] > 0


def study_b_generator_settings(wildcards):
    """The part of study_b.generators that one generator depends on (so that changing the
    WGAN's settings does not retrain the DDPMs, and the other way round)."""
    generators = config["study_b"]["generators"]
    keep = ["wgan"] if wildcards.generator == "wgan" else ["ddpm", wildcards.generator]
    return {
        "image_size": generators["image_size"],
        **{key: generators[key] for key in keep},
    }


def study_b_ddpm_settings(wildcards):
    """What the shared DDPM base and the memorisation probe depend on: image size and ddpm."""
    generators = config["study_b"]["generators"]
    return {"image_size": generators["image_size"], "ddpm": generators["ddpm"]}


STUDY_B_BASE_WEIGHTS = (
    ["results/models/study_b/ddpm_base.pt"] if STUDY_B_DDPM_BASE else []
)


def study_b_base_weights(wildcards):
    """The shared DDPM base that ddpm_uncond and ddpm_cond are fine-tuned from (none for the
    WGAN, or when study_b.generators.ddpm.base_steps is 0)."""
    return [] if wildcards.generator == "wgan" else STUDY_B_BASE_WEIGHTS


# --- study_a ---
def study_a_weights(wildcards):
    """Weights a sample file comes from: CSM is shared by both conditions."""
    if wildcards.model == "csm":
        return "results/models/study_a/csm.pt"
    return f"results/models/study_a/{wildcards.model}_{wildcards.condition}.pt"


# --- params: each rule gets only the config keys it reads, so that a change reruns exactly
# what depends on it (Snakemake's default rerun trigger compares params) ---
def config_subset(section, keys):
    """``section`` (a mapping) restricted to ``keys``, in that order."""
    return {key: section[key] for key in keys}


# the part of `compute` a job reads: the device alone (evaluations without autocast), bf16 too
# (samplers under autocast), or every switch (trainings: bf16, channels_last, compile)
COMPUTE_DEVICE = config_subset(config["compute"], ("device", "deterministic"))
COMPUTE_SAMPLING = config_subset(config["compute"], ("device", "deterministic", "bf16"))
COMPUTE_TRAINING = config_subset(
    config["compute"], ("device", "deterministic", "bf16", "channels_last", "compile")
)

# ingest: the CT keys for ingest_ct, the oai_* keys for the radiographs
INGEST_CT = {
    key: value for key, value in config["ingest"].items() if not key.startswith("oai_")
}
INGEST_OAI = {
    key: value
    for key, value in config["ingest"].items()
    if key.startswith("oai_") or key == "input_checks"
}
SPLITS_VOLUMES = config_subset(config["splits"], ("mode", "fractions"))
SPLITS_OAI = config_subset(config["splits"], ("oai_mode", "oai_fractions"))
# segment_drr: the thresholds (the figure's counts only choose what segmentation_figure shows)
SEGMENTATION_MASKS = config_subset(
    config["segmentation"], ("contour_threshold", "bone_threshold")
)


def study_a_sampling_settings(wildcards):
    """What one model's test samples depend on: the network it loads, the test images and the
    batches, and for the score models the SDE and the sampler (CSM: also t0). The U-Net runs
    one forward pass: no sampler setting reruns it."""
    study_a = config["study_a"]
    keys = ["seed", "image_size", "network", "sample_batch_size", "max_test_images"]
    if wildcards.model != "unet":
        keys += ["sigma_min", "sigma_max"]
    if wildcards.model == "csm":
        keys.append("t0")
    settings = config_subset(study_a, keys)
    if wildcards.model != "unet":
        settings["sampler"] = study_a_sampler()
    return settings


def study_a_sampler():
    """The configured sampler: its name, eps and its own settings (not the other samplers')."""
    sampler = config["study_a"]["sampler"]
    return config_subset(sampler, ("name", "eps", sampler["name"]))


# utility_ctm_samples: the CTM's sampling settings, as sample_drr's for the CTM
STUDY_A_CTM_SAMPLING = {
    **config_subset(
        config["study_a"],
        ("image_size", "network", "sample_batch_size", "sigma_min", "sigma_max"),
    ),
    "sampler": study_a_sampler(),
}


def checks_settings(check, *drop):
    """One check's section of `checks` (less the keys in ``drop``) with the keys every check
    reads: the held-out split it compares against and the checks' seed."""
    checks = config["checks"]
    return {
        **{key: value for key, value in checks[check].items() if key not in drop},
        "held_out_split": checks["held_out_split"],
        "seed": checks["seed"],
    }


# the controls' settings that make their images (not `z`, which only judges them)
CHECKS_CONTROL_SETTINGS = {
    "held_out_split": config["checks"]["held_out_split"],
    "controls": config_subset(
        config["checks"]["controls"],
        ("holdout_split", "max_images", "noise", "blur_sigma"),
    ),
}
# what the evaluation sets' counts depend on (the generators' and the probe's sets)
STUDY_B_EVALUATION_COUNTS = {
    "held_out_split": config["checks"]["held_out_split"],
    "controls": config_subset(
        config["checks"]["controls"], ("holdout_split", "max_images")
    ),
}
# the utility check: its own section, the memorisation check of the generated pairs, the seed
CHECKS_UTILITY = {
    key: config["checks"][key] for key in ("seed", "utility", "memorization")
}


def study_b_samples_settings(wildcards):
    """What a generator's synthetic set depends on: the balance policy and the batches, and
    for the DDPMs their sampler (the WGAN draws in one pass); not the figure's images per cell.
    """
    unused = {"grid_per_cell"}
    if wildcards.generator == "wgan":
        unused |= {"sampler", "inference_steps"}
    samples = config["study_b"]["samples"]
    return {key: value for key, value in samples.items() if key not in unused}


STUDY_B_EVALUATION_SAMPLER = config_subset(
    config["study_b"]["samples"], ("sampler", "inference_steps", "batch_size")
)
# the FID table reads the trained feature net and these keys; its training the classifier keys
FID_TABLE_SETTINGS = config_subset(
    config["study_b"]["fid"], ("features", "inception_weights", "subsets")
)
FID_FEATURE_TRAINING = config_subset(config["study_b"]["fid"], ("classifier",))
