"""Phantom CT volumes like SMIR's, from the knee model of :mod:`kneesynth.data.phantom`.

:func:`write_phantom_ct`: CT volumes ``<folder>/<name>.nii`` (HU, int16, like SMIR) named
  ``SMIR.Body.<age:03d>Y.<M|F>.CT.<id>``; the names are known at parse time from the config
  (:func:`phantom_volume_names`) without generating anything.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from kneesynth.data.phantom import (
    CHEN_GRADE_COUNTS,
    HU_MAX,
    HU_MIN,
    KneeAnatomy,
    _grade_probabilities,
    draw_anatomy,
    knee_tissues,
    severity_for_grade,
)
from kneesynth.io import atomic_path, write_tsv
from kneesynth.seeding import derive_seed

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------------
# CT volumes like SMIR's
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PhantomVolume:
    """One phantom CT volume: its SMIR-like name, demographics and anatomy."""

    name: str
    age: int
    sex: str
    seed: int
    anatomy: KneeAnatomy

    @property
    def kl_grade(self) -> int:
        return self.anatomy.kl_grade


def phantom_volumes(cfg: Mapping[str, Any], seed: int) -> list[PhantomVolume]:
    """The phantom CT volumes of a ``phantom`` config section, cheap (nothing is rendered).

    ``seed`` is the workflow's base seed. Keys used: ``volumes`` (count), ``kl_grade_weights``
    (5 numbers). Volume ``i`` depends only on ``seed`` and ``i``: adding volumes keeps the
    first ones (names included).
    """
    base = int(seed)
    count = int(cfg["volumes"])
    weights = _grade_probabilities(cfg.get("kl_grade_weights", CHEN_GRADE_COUNTS))
    volumes, used_ids = [], set()
    for index in range(count):
        volume_seed = derive_seed(base, "phantom_ct", index)
        rng = np.random.default_rng(volume_seed)
        smir_id = int(rng.integers(10000, 100000))
        while smir_id in used_ids:  # unique, and the first volumes keep their names as count grows
            smir_id = 10000 + (smir_id - 10000 + 7919) % 90000
        used_ids.add(smir_id)
        age = int(rng.integers(18, 86))
        sex = "M" if rng.random() < 0.5 else "F"
        side = "R" if rng.random() < 0.5 else "L"
        grade = int(rng.choice(5, p=weights))
        anatomy = draw_anatomy(rng, side, sex, severity_for_grade(rng, grade))
        name = f"SMIR.Body.{age:03d}Y.{sex}.CT.{smir_id}"
        volumes.append(PhantomVolume(name, age, sex, volume_seed, anatomy))
    return volumes


def phantom_volume_names(cfg: Mapping[str, Any], seed: int) -> list[str]:
    """Names (``SMIR.Body.<age>Y.<M|F>.CT.<id>``) of the phantom volumes; no rendering.

    Safe to call at Snakemake parse time.
    """
    return [volume.name for volume in phantom_volumes(cfg, seed)]


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, ...], sigma: float) -> np.ndarray:
    """Unit-variance Gaussian-smoothed white noise (scipy does the filtering)."""
    from scipy.ndimage import gaussian_filter  # heavy (scipy): imported on use

    noise = gaussian_filter(rng.standard_normal(shape).astype(np.float32), sigma, mode="wrap")
    return noise / max(float(noise.std()), 1e-6)


def render_ct(
    volume: PhantomVolume, shape_xyz: Sequence[int], spacing_mm: Sequence[float], noise_hu: float
) -> np.ndarray:
    """Render one phantom CT: int16 HU array of shape ``(nz, ny, nx)`` (index order z, y, x).

    The volume is centred on the knee; ``spacing_mm`` is (sx, sy, sz); z is the leg's axis.
    """
    nx, ny, nz = (int(n) for n in shape_xyz)
    sx, sy, sz = (float(v) for v in spacing_mm)
    rng = np.random.default_rng(derive_seed(volume.seed, "render"))
    z = ((np.arange(nz, dtype=np.float32) - (nz - 1) / 2) * sz)[:, None, None]
    y = ((np.arange(ny, dtype=np.float32) - (ny - 1) / 2) * sy)[None, :, None]
    x = ((np.arange(nx, dtype=np.float32) - (nx - 1) / 2) * sx)[None, None, :]
    x, y, z = np.broadcast_arrays(x, y, z)
    texture = _smooth_noise(rng, (nz, ny, nx), sigma=0.8)
    hu = knee_tissues(volume.anatomy, x, y, z, edge_mm=max(sx, sy, sz), texture=texture)
    if noise_hu > 0:
        hu += rng.normal(0.0, noise_hu, size=hu.shape).astype(np.float32)
    return np.clip(np.rint(hu), HU_MIN, HU_MAX).astype(np.int16)


def write_nifti(
    array_zyx: np.ndarray, spacing_mm: Sequence[float], path: str | os.PathLike
) -> None:
    """Write an array indexed ``[z, y, x]`` as NIfTI with LPS identity direction, atomically."""
    import SimpleITK as sitk  # heavy (SimpleITK): imported on use

    image = sitk.GetImageFromArray(array_zyx)
    image.SetSpacing(tuple(float(v) for v in spacing_mm))
    size = np.array(array_zyx.shape[::-1], dtype=float)
    image.SetOrigin(tuple(float(v) for v in -(size - 1) / 2 * np.asarray(spacing_mm, float)))
    with atomic_path(path) as tmp:
        sitk.WriteImage(image, str(tmp))


def write_phantom_ct(
    cfg: Mapping[str, Any],
    seed: int,
    out_dir: str | os.PathLike,
    parameters_tsv: str | os.PathLike | None = None,
) -> list[Path]:
    """Render every phantom volume of ``cfg`` to ``<out_dir>/<name>.nii`` (int16 HU).

    Keys used: ``volumes``, ``kl_grade_weights``, ``shape`` (nx, ny, nz),
    ``spacing_mm`` (sx, sy, sz), ``noise_hu``. Also writes the ground truth (name, age, sex,
    side, kl_grade, oa_severity, ...) to ``parameters_tsv`` if given. Returns the paths.
    """
    import pandas as pd  # heavy (pandas): imported on use

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths, rows = [], []
    for volume in phantom_volumes(cfg, seed):
        array = render_ct(volume, cfg["shape"], cfg["spacing_mm"], float(cfg.get("noise_hu", 0.0)))
        path = out_dir / f"{volume.name}.nii"
        write_nifti(array, cfg["spacing_mm"], path)
        log.info(
            "phantom CT %s: KL %d, %s leg, shape %s",
            volume.name,
            volume.kl_grade,
            volume.anatomy.side,
            array.shape,
        )
        paths.append(path)
        rows.append(
            {
                "volume": volume.name,
                "age": volume.age,
                "sex": volume.sex,
                "side": volume.anatomy.side,
                "kl_grade": volume.kl_grade,
                "oa_severity": round(volume.anatomy.oa_severity, 4),
                "scale": round(volume.anatomy.scale, 4),
            }
        )
    if parameters_tsv is not None:
        write_tsv(parameters_tsv, pd.DataFrame(rows))
    return paths
