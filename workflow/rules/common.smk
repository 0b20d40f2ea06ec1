# Config validation, the lists of volumes, and the input functions of every stage.
import sys

from kneesynth.config import validate_config
from kneesynth.errors import InputError

try:
    validate_config(
        config, workflow.source_path("../schemas/config.schema.yaml"), workflow.configfiles
    )
except InputError as error:
    sys.exit(f"kneesynth: error: {error}")


wildcard_constraints:
    volume=r"[^/]+",
    condition=r"contour|contour_bone",


STAGES = [
    "DATA",
    "DRR",
    "SEGMENTATION",
    "GENERATORS",
    "SAMPLES",
    "CLASSIFIERS",
    "CHECKS",
    "STATS",
    "FIGURES",
]


def stage_targets(stage):
    """Every path listed by a stage file in a variable named <STUDY>_<STAGE> (e.g. DRR_DRR)."""
    targets = []
    for name, value in list(globals().items()):
        if name.isupper() and name.endswith("_" + stage) and isinstance(value, list):
            targets.extend(value)
    return targets


def all_targets(wildcards):
    return [path for stage in STAGES for path in stage_targets(stage)]
