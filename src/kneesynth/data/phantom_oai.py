"""Phantom knee radiographs in Chen et al.'s OAI layout, from the knee model of
:mod:`kneesynth.data.phantom`.

:func:`write_phantom_oai`: a radiograph set in the Chen et al. (2019) layout
  ``{train,val,test}/{0..4}/<participant><L|R>_v<visit>.png`` (8-bit AP views cropped to the
  joint). File names carry the OAI participant ID (7 digits starting with 9), the knee side
  (``R``/``L``) and the OAI visit code (``00`` baseline, ``01`` 12 months, ``03`` 24 months,
  ``05``, ``06``, ``08``, ``10``), e.g. ``9000001L_v00.png``; Chen's own files carry the
  participant ID and side only (``9000001L.png``), which :mod:`kneesynth.data.oai` reads too.
  Each image is the AP line integral of attenuation through a low-resolution 3D knee phantom of
  that knee at that visit, so joint-space narrowing, osteophytes and sclerosis are visible.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from kneesynth.data.phantom import (
    CHEN_GRADE_COUNTS,
    MU_WATER_PER_MM,
    OAI_VISITS,
    KneeAnatomy,
    _grade_probabilities,
    draw_anatomy,
    knee_tissues,
    severity_for_grade,
)
from kneesynth.data.splits import split_participants
from kneesynth.io import staged_directory
from kneesynth.seeding import derive_seed

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------------
# Knee radiographs in Chen et al.'s OAI layout
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PhantomRadiograph:
    """One phantom AP knee radiograph: who, which knee, which visit, its grade and split."""

    participant: str
    side: str
    visit: str
    kl_grade: int
    split: str
    seed: int
    anatomy: KneeAnatomy

    @property
    def file_name(self) -> str:
        return f"{self.participant}{self.side}_v{self.visit}.png"


def phantom_radiographs(
    cfg: Mapping[str, Any], seed: int, split_fractions: Sequence[float]
) -> list[PhantomRadiograph]:
    """The radiographs of a ``phantom.oai`` config section (nothing rendered).

    ``seed`` is the workflow's base seed. Keys used: ``participants``, ``visits`` (1..7),
    ``kl_grade_weights``, ``progression`` (probability a knee's grade rises by one between
    visits), ``cover_grades`` (every split holds every grade: :func:`cover_grades`).
    Participants are split into train/val/test by ``split_fractions`` with the same
    function and seed as :func:`kneesynth.data.oai.ingest_oai` in ``participant`` mode, so the
    folders agree with the manifest's split. Each participant has two knees that share the
    body's proportions; a knee's grade never falls between visits.
    """

    base = int(seed)
    count, visits = int(cfg["participants"]), int(cfg["visits"])
    if not 1 <= visits <= len(OAI_VISITS):
        raise ValueError(f"phantom.oai.visits must be 1..{len(OAI_VISITS)}, got {visits}")
    weights = _grade_probabilities(cfg.get("kl_grade_weights", CHEN_GRADE_COUNTS))
    progression = float(cfg.get("progression", 0.1))
    id_rng = np.random.default_rng(derive_seed(base, "phantom_oai", "participants"))
    ids = [
        str(9000000 + int(i)) for i in id_rng.choice(np.arange(1, 1000000), count, replace=False)
    ]
    split_table = split_participants(
        ids, split_fractions, derive_seed(base, "splits", "participants")
    )
    splits = dict(zip(split_table["participant"], split_table["split"], strict=True))
    starts = {}
    for participant in ids:
        rng = np.random.default_rng(derive_seed(base, "phantom_oai", participant))
        sex = "M" if rng.random() < 0.45 else "F"
        body = draw_anatomy(rng, "R", sex, 0.0)
        starts[participant] = (rng, sex, body, int(rng.choice(5, p=weights)))
    if cfg.get("cover_grades", False):
        first_grades = cover_grades({p: s[3] for p, s in starts.items()}, splits)
        starts = {p: (*s[:3], first_grades[p]) for p, s in starts.items()}
    radiographs = []
    for participant in ids:
        rng, sex, body, first_grade = starts[participant]
        for side in ("R", "L"):
            grade = (
                first_grade if side == "R" or rng.random() < 0.5 else int(rng.choice(5, p=weights))
            )
            knee = draw_anatomy(rng, side, sex, 0.0)
            # The two knees share the body's size and soft tissue; shapes differ a little.
            knee = replace(
                knee,
                scale=body.scale * rng.uniform(0.98, 1.02),
                leg_radius_factor=body.leg_radius_factor,
                fat_thickness_mm=body.fat_thickness_mm,
            )
            for visit in OAI_VISITS[:visits]:
                if visit != OAI_VISITS[0] and rng.random() < progression:
                    grade = min(grade + 1, 4)
                pose = {
                    "rotation_deg": knee.rotation_deg * 0.3 + rng.uniform(-4.0, 4.0),
                    "flexion_deg": rng.uniform(0.0, 10.0),
                    "tilt_deg": (rng.uniform(-2.0, 2.0), rng.uniform(-2.0, 2.0)),
                    "offset_mm": (rng.uniform(-4.0, 4.0), 0.0, rng.uniform(-4.0, 4.0)),
                    "oa_severity": severity_for_grade(rng, grade),
                }
                radiographs.append(
                    PhantomRadiograph(
                        participant,
                        side,
                        visit,
                        grade,
                        splits[participant],
                        int(rng.integers(2**62)),
                        replace(knee, **pose),
                    )
                )
    return radiographs


def cover_grades(first_grades: Mapping[str, int], splits: Mapping[str, str]) -> dict[str, int]:
    """Baseline grades changed so that every split holds every KL grade 0..4, where it can.

    For each split and each grade missing from it (in increasing order), one participant of the
    split's most common grade (the first by ID among those; the grade must keep at least one
    participant) gets the missing grade instead. Splits with fewer than 5 participants keep the
    grades they can. The right knee's baseline image carries the participant's baseline grade,
    so the split then holds every grade at least once; few participants change, so the mix
    stays close to the drawn one.
    """
    grades = dict(first_grades)
    for split in sorted(set(splits.values())):
        members = sorted(p for p in grades if splits[p] == split)
        for missing in range(5):
            counts = np.bincount([grades[p] for p in members], minlength=5)
            if counts[missing] or counts.max() < 2:
                continue
            donor_grade = int(np.argmax(counts))
            donor = next(p for p in members if grades[p] == donor_grade)
            grades[donor] = missing
    return grades


def render_radiograph(
    anatomy: KneeAnatomy,
    image_size: int,
    field_of_view_mm: float,
    depth_samples: int,
    seed: int,
    noise: float = 0.02,
) -> np.ndarray:
    """AP radiograph of one knee, cropped to the joint: uint8 array ``(image_size, image_size)``.

    Renders the knee model on a coarse grid (``image_size`` x ``depth_samples`` x
    ``image_size`` points over ``field_of_view_mm`` square and the leg's depth), converts HU to
    linear attenuation (bone weighted up, as at diagnostic energies), sums along y (the AP line
    integral) and maps it to 8 bits with a per-exposure window, blur and quantum noise.
    Rows run superior (top) to inferior; columns run from the patient's right to left, as a
    radiograph viewed facing the patient.
    """
    rng = np.random.default_rng(seed)
    n, depth = int(image_size), int(depth_samples)
    half = field_of_view_mm / 2.0
    pixel = field_of_view_mm / n
    grid = (np.arange(n, dtype=np.float32) + 0.5) * pixel - half
    centre_z = anatomy.offset_mm[2] + 3.0
    depth_mm = (130.0 * anatomy.leg_radius_factor + 10.0) * anatomy.scale  # the leg's AP extent
    dy = depth_mm / depth
    y_axis = (np.arange(depth, dtype=np.float32) + 0.5) * dy - depth_mm / 2.0 + anatomy.offset_mm[1]
    z = (centre_z - grid)[:, None, None]  # rows: superior at the top
    # Each pixel's ray samples start at a random fraction of a step: coarse depth sampling then
    # gives a little noise instead of banded contours (stratified sampling of the integral).
    jitter = rng.uniform(-0.5, 0.5, size=(n, 1, n)).astype(np.float32) * dy
    y = y_axis[None, :, None] + jitter
    x = grid[None, None, :]
    x, y, z = np.broadcast_arrays(x, y, z)
    hu = knee_tissues(anatomy, x, y, z, edge_mm=pixel)
    # Bone attenuates relatively more than water at radiographic energies than CT numbers say.
    mu = MU_WATER_PER_MM * (1.0 + np.where(hu > 0, 1.8, 1.0) * hu / 1000.0)
    line_integral = np.clip(mu, 0.0, None).sum(axis=1) * dy  # (rows, columns)

    from scipy.ndimage import gaussian_filter  # heavy (scipy): imported on use

    texture = gaussian_filter(rng.standard_normal(line_integral.shape), 0.7)
    line_integral = line_integral + 0.03 * texture * (line_integral > 2.6)
    line_integral = gaussian_filter(line_integral, 0.6)
    low, high = np.percentile(line_integral, [1.0, 99.7])
    low += rng.uniform(-0.1, 0.1)
    high += rng.uniform(-0.1, 0.1)
    image = np.clip((line_integral - low) / max(high - low, 1e-6), 0.0, 1.0)
    image = image ** rng.uniform(0.8, 1.2)
    image = image + rng.normal(0.0, noise, image.shape)
    return np.clip(np.rint(image * 255.0), 0, 255).astype(np.uint8)


def write_phantom_oai(
    cfg: Mapping[str, Any], seed: int, split_fractions: Sequence[float], out_dir: str | os.PathLike
) -> list[PhantomRadiograph]:
    """Write the phantom radiograph set to ``out_dir/{train,val,test}/{0..4}/*.png``.

    Keys used: those of :func:`phantom_radiographs` plus ``image_size``, ``field_of_view_mm``,
    ``depth_samples``. The folder is built beside ``out_dir`` and renamed into place, so it is
    complete or absent. Returns the radiographs written (the ground truth).
    """
    from PIL import Image  # heavy (PIL): imported on use

    out_dir = Path(out_dir)
    radiographs = phantom_radiographs(cfg, seed, split_fractions)
    with staged_directory(out_dir) as staging:
        for split in ("train", "val", "test"):
            for grade in range(5):
                (staging / split / str(grade)).mkdir(parents=True)
        for radiograph in radiographs:
            pixels = render_radiograph(
                radiograph.anatomy,
                cfg["image_size"],
                cfg["field_of_view_mm"],
                cfg["depth_samples"],
                radiograph.seed,
            )
            path = staging / radiograph.split / str(radiograph.kl_grade) / radiograph.file_name
            Image.fromarray(pixels, mode="L").save(path)
    counts = np.bincount([r.kl_grade for r in radiographs], minlength=5)
    log.info(
        "phantom OAI: %d radiographs of %d participants, KL counts %s",
        len(radiographs),
        len({r.participant for r in radiographs}),
        counts.tolist(),
    )
    return radiographs


def radiograph_table(radiographs: Sequence[PhantomRadiograph]):
    """Ground truth of phantom radiographs as a DataFrame (one row per image)."""
    import pandas as pd  # heavy (pandas): imported on use

    rows = []
    for r in radiographs:
        rows.append(
            {
                "image": r.file_name,
                "participant": r.participant,
                "side": r.side,
                "visit": r.visit,
                "kl_grade": r.kl_grade,
                "split": r.split,
                "oa_severity": round(r.anatomy.oa_severity, 4),
            }
        )
    return pd.DataFrame(rows)
