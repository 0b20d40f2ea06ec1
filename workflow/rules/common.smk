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


def study_b_evaluation_settings(wildcards):
    """The checks settings that fix the evaluation sets' counts (reference split, controls)."""
    return {
        "held_out_split": config["checks"]["held_out_split"],
        "controls": config["checks"]["controls"],
    }


# --- study_a ---
def study_a_weights(wildcards):
    """Weights a sample file comes from: CSM is shared by both conditions."""
    if wildcards.model == "csm":
        return "results/models/study_a/csm.pt"
    return f"results/models/study_a/{wildcards.model}_{wildcards.condition}.pt"
