"""Reader study: a blinded kit of real and synthetic images, and the scoring of filled sheets.

The DKOU 2025 abstract of Smits Serena et al. had two radiologists and an orthopaedic surgeon look at real and
synthetic knee radiographs: they spotted 16.7 % of the DDPM (unconditional) images and 62.5 % of
the WGAN images as synthetic. This module makes the kit for such a study and scores it.

Kit, per generator: ``n_real`` real held-out and ``n_synthetic`` synthetic images, all written as
8-bit PNG of one size, named by random ids and listed in shuffled order (so neither the name,
the size nor the order gives the answer), an answer sheet ``answer_sheet.csv`` (``image_id``,
``answer`` empty) and, kept apart, the key (``image_id``, ``truth``, ``source``, ``generator``).

Scoring: a reader fills ``answer`` with ``real`` or ``synthetic`` (``r``/``s`` accepted; blank
= not answered) and puts the sheet as ``<reader>_<generator>.csv`` in the responses folder.
Per reader and pooled over readers: detection rate of synthetic images (= sensitivity: synthetic
images called synthetic), specificity (real images called real), accuracy, and a two-sided
binomial test of the number of correct answers against chance (p = 0.5; the kit is balanced, so
chance accuracy is 0.5 whatever a reader's bias). Between generators: Fisher's exact test of
detected vs missed synthetic images, pooled over readers. Pooled tests treat answers as
independent, which they are not quite (readers differ); say so when quoting them.
"""

from __future__ import annotations

import csv
import itertools
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from kneesynth.data.images import ImageFiles
from kneesynth.data.manifest import read_oai_manifest, read_sample_manifest, resolve_image
from kneesynth.errors import InputError
from kneesynth.io import atomic_path, staged_directory
from kneesynth.seeding import derive_seed
from kneesynth.stats import Statistic
from kneesynth.tables import TABLE_COLUMNS, table_row

logger = logging.getLogger(__name__)

#: the DKOU abstract: share of each generator's images the 3 experts spotted as synthetic
ANSWERS = {
    "real": "real",
    "r": "real",
    "synthetic": "synthetic",
    "s": "synthetic",
    "fake": "synthetic",
}
READER_INSTRUCTIONS = """Reader study: real or synthetic?

Each image in images/ is either a real radiograph or one made by a generative model.
For every image_id in answer_sheet.csv write, in the column "answer", either
    real        or        synthetic
Leave the answer empty if you cannot decide (it is then not counted).
Save the sheet as <your name>_{generator}.csv (for example reader1_{generator}.csv) in the
responses folder of the workflow (config: checks.reader_study.responses_dir).
"""


# --------------------------------------------------------------------------------------------
# The kit
# --------------------------------------------------------------------------------------------


def random_ids(count: int, rng: np.random.Generator, length: int = 8) -> list[str]:
    """``count`` distinct random hexadecimal ids of ``length`` characters."""
    ids: list[str] = []
    seen: set[str] = set()
    while len(ids) < count:
        value = "".join(rng.choice(list("0123456789abcdef"), size=length))
        if value not in seen:
            seen.add(value)
            ids.append(value)
    return ids


def to_png8(image: np.ndarray) -> np.ndarray:
    """``(H, W)`` float in [0, 1] -> uint8 (rounded, clipped)."""
    return np.clip(np.rint(np.asarray(image, dtype=np.float64) * 255.0), 0, 255).astype(np.uint8)


def make_reader_kit(
    real: np.ndarray,
    synthetic: np.ndarray,
    *,
    generator: str,
    kit_dir: str | os.PathLike[str],
    key_path: str | os.PathLike[str],
    seed: int,
    real_sources: Sequence[str] | None = None,
    synthetic_sources: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Write the blinded kit of one generator and its key.

    Args:
        real: ``(n_r, H, W)`` real images in [0, 1] (already chosen and of the kit's size).
        synthetic: ``(n_s, H, W)`` synthetic images, same size.
        kit_dir: folder to create with ``images/<image_id>.png``, ``answer_sheet.csv`` and
            ``README.txt``; written in a temporary folder and renamed, so it is complete or absent.
        key_path: CSV ``image_id, truth, source, generator`` (kept out of ``kit_dir``).
        real_sources / synthetic_sources: where each image came from (file or index), for the key.

    Returns:
        The key as a DataFrame, in the shuffled order of the answer sheet.
    """
    from PIL import Image  # heavy (PIL): imported on use

    real, synthetic = np.asarray(real), np.asarray(synthetic)
    if real.shape[1:] != synthetic.shape[1:]:
        raise ValueError(
            f"reader kit {generator}: real and synthetic images differ in size ({real.shape[1:]} vs {synthetic.shape[1:]})"
        )
    rng = np.random.default_rng(seed)
    images = np.concatenate([real, synthetic])
    truth = ["real"] * len(real) + ["synthetic"] * len(synthetic)
    sources = list(real_sources or [f"real[{i}]" for i in range(len(real))]) + list(
        synthetic_sources or [f"synthetic[{i}]" for i in range(len(synthetic))]
    )
    ids = random_ids(len(images), rng)
    order = rng.permutation(len(images))
    key = pd.DataFrame(
        {
            "image_id": [ids[i] for i in order],
            "truth": [truth[i] for i in order],
            "source": [sources[i] for i in order],
            "generator": generator,
        }
    )

    kit_dir = Path(kit_dir)
    with staged_directory(kit_dir) as staging:  # modes follow the umask; full disk: one line
        (staging / "images").mkdir()
        for i in sorted(
            range(len(images)), key=lambda j: ids[j]
        ):  # written in id order, not truth order
            Image.fromarray(to_png8(images[i]), mode="L").save(staging / "images" / f"{ids[i]}.png")
        key[["image_id"]].assign(answer="").to_csv(staging / "answer_sheet.csv", index=False)
        (staging / "README.txt").write_text(READER_INSTRUCTIONS.format(generator=generator))
    with atomic_path(key_path) as tmp:
        key.to_csv(tmp, index=False)
    logger.info(
        "reader kit %s: %d real + %d synthetic images in %s",
        generator,
        len(real),
        len(synthetic),
        kit_dir,
    )
    return key


# --------------------------------------------------------------------------------------------
# Scoring
# --------------------------------------------------------------------------------------------


def read_key(path: str | os.PathLike[str]) -> pd.DataFrame:
    """A kit's key (``image_id, truth, ...``); truth in {real, synthetic}."""
    try:
        key = pd.read_csv(path, dtype={"image_id": str})
    except FileNotFoundError:
        raise InputError(path, "key file not found") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as error:
        raise InputError(path, f"cannot read CSV ({error})") from None
    for column in ("image_id", "truth"):
        if column not in key.columns:
            raise InputError(path, f"missing column {column}")
    bad = sorted(set(key["truth"]) - {"real", "synthetic"})
    if bad:
        raise InputError(path, f"truth must be real or synthetic, found {bad[:3]}")
    return key


def read_answers(path: str | os.PathLike[str], key: pd.DataFrame) -> pd.DataFrame:
    """A filled answer sheet joined to the key: ``image_id, truth, answer`` (answer NaN if blank).

    An id that is not in the key, a duplicated id, or an answer other than real/synthetic
    (r/s) is an :class:`InputError` naming the sheet.
    """
    try:
        sheet = pd.read_csv(path, dtype=str, keep_default_na=False, quoting=csv.QUOTE_MINIMAL)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        raise InputError(path, f"cannot read answer sheet ({error})") from None
    sheet.columns = [str(c).strip().lower() for c in sheet.columns]
    for column in ("image_id", "answer"):
        if column not in sheet.columns:
            raise InputError(path, f"missing column {column}")
    sheet["image_id"] = sheet["image_id"].str.strip()
    duplicated = sheet["image_id"][sheet["image_id"].duplicated()].tolist()
    if duplicated:
        raise InputError(path, f"image_id listed twice: {duplicated[0]}")
    unknown = sorted(set(sheet["image_id"]) - set(key["image_id"]))
    if unknown:
        raise InputError(path, f"image_id not in this generator's kit: {unknown[0]}")
    raw = sheet["answer"].str.strip().str.lower()
    bad = sorted(set(raw[raw != ""]) - set(ANSWERS))
    if bad:
        raise InputError(path, f"answer must be real or synthetic (or empty), found {bad[0]!r}")
    sheet["answer"] = raw.map(lambda a: ANSWERS.get(a, np.nan))
    return key[["image_id", "truth"]].merge(
        sheet[["image_id", "answer"]], on="image_id", how="left"
    )


def reader_scores(answers: pd.DataFrame) -> dict[str, float]:
    """Detection rate, sensitivity, specificity, accuracy and binomial test of one answer set.

    ``answers``: ``truth`` and ``answer`` columns (answer NaN = not answered, left out).
    Detection rate = sensitivity = synthetic images called synthetic / synthetic answered.
    ``binomial_p``: two-sided ``scipy.stats.binomtest`` of correct answers vs p = 0.5.
    """
    from scipy.stats import binomtest  # heavy (scipy): imported on use

    answered = answers.dropna(subset=["answer"])
    synthetic = answered[answered["truth"] == "synthetic"]
    real = answered[answered["truth"] == "real"]
    detected = int((synthetic["answer"] == "synthetic").sum())
    real_correct = int((real["answer"] == "real").sum())
    correct = detected + real_correct
    n = len(answered)
    return {
        "detection_rate": detected / len(synthetic) if len(synthetic) else float("nan"),
        "sensitivity": detected / len(synthetic) if len(synthetic) else float("nan"),
        "specificity": real_correct / len(real) if len(real) else float("nan"),
        "accuracy": correct / n if n else float("nan"),
        "binomial_p": float(binomtest(correct, n, 0.5).pvalue) if n else float("nan"),
        "n_detected": float(detected),
        "n_synthetic": float(len(synthetic)),
        "n_real": float(len(real)),
        "n_unanswered": float(len(answers) - n),
    }


def parse_response_name(path: str | os.PathLike[str], generators: Sequence[str]) -> tuple[str, str]:
    """``<reader>_<generator>.csv`` -> (reader, generator); the longest matching generator wins
    (generator names hold underscores). An unmatched name is an :class:`InputError`."""
    stem = Path(path).stem
    for generator in sorted(generators, key=len, reverse=True):
        if stem.endswith(f"_{generator}") and len(stem) > len(generator) + 1:
            return stem[: -len(generator) - 1], generator
    raise InputError(
        path,
        f"answer sheet name must be <reader>_<generator>.csv with generator one of {', '.join(generators)}",
    )


def list_responses(responses_dir: str | os.PathLike[str] | None) -> list[Path]:
    """The filled sheets (``*.csv``) in the responses folder, sorted; none if it does not exist."""
    if not responses_dir or not Path(responses_dir).is_dir():
        return []
    return sorted(Path(responses_dir).glob("*.csv"))


def score_reader_study(
    responses: Sequence[str | os.PathLike[str]],
    keys: Mapping[str, str | os.PathLike[str]],
    *,
    paper_detection_rate: Mapping[str, float] | None = None,
    study: str = "B",
    responses_dir: str = "",
) -> pd.DataFrame:
    """The ``reader_study.tsv`` table from filled sheets.

    Args:
        responses: sheet paths ``<reader>_<generator>.csv``.
        keys: generator -> key CSV of its kit.
        paper_detection_rate: generator -> the abstract's detection rate (fraction).

    Returns:
        Rows ``study, model, condition, metric, value, paper_value, note``: model = generator
        (or ``a_vs_b`` for Fisher's test), condition = reader or ``pooled``. With no sheets,
        one row that says so.
    """
    from scipy.stats import fisher_exact  # heavy (scipy): imported on use

    paper = dict(paper_detection_rate or {})
    if not responses:
        note = f"no filled answer sheets (<reader>_<generator>.csv) in {responses_dir or 'the responses folder'}; reader kits are in results/reader_kit/"
        return pd.DataFrame(
            [table_row(study, "all", "pooled", "detection_rate", float("nan"), float("nan"), note)],
            columns=TABLE_COLUMNS,
        )

    key_tables = {generator: read_key(path) for generator, path in keys.items()}
    per_generator: dict[str, list[pd.DataFrame]] = {}
    rows = []
    for path in responses:
        reader, generator = parse_response_name(path, list(key_tables))
        answers = read_answers(path, key_tables[generator])
        per_generator.setdefault(generator, []).append(answers)
        for metric, value in reader_scores(answers).items():
            rows.append(table_row(study, generator, reader, metric, value, float("nan"), ""))
    pooled_counts = {}
    for generator, answer_sets in per_generator.items():
        pooled = pd.concat(answer_sets, ignore_index=True)
        scores = reader_scores(pooled)
        pooled_counts[generator] = (
            int(scores["n_detected"]),
            int(scores["n_synthetic"] - scores["n_detected"]),
        )
        # every reader sees the same kit: the image is the unit of the detection rate's CI
        synthetic = pooled[(pooled["truth"] == "synthetic") & pooled["answer"].notna()]
        estimate = Statistic.mean((synthetic["answer"] == "synthetic").to_numpy(float)).estimate(
            synthetic["image_id"].astype(str).to_numpy()
        ) if len(synthetic) else None  # fmt: skip
        low, high = estimate.interval() if estimate is not None else (float("nan"),) * 2
        scores["detection_rate_ci_low"], scores["detection_rate_ci_high"] = low, high
        for metric, value in scores.items():
            paper_value = (
                paper.get(generator, float("nan")) if metric == "detection_rate" else float("nan")
            )
            note = (
                f"pooled over {len(answer_sets)} reader(s); paper: 3 readers (2 radiologists, 1 orthopaedic surgeon)"
                if metric == "detection_rate"
                else "95 % t interval over the kit's synthetic images (readers rate the same images)"
                if metric.startswith("detection_rate_ci")
                else ""
            )
            rows.append(table_row(study, generator, "pooled", metric, value, paper_value, note))
    for first, second in itertools.combinations(sorted(pooled_counts), 2):
        table = [list(pooled_counts[first]), list(pooled_counts[second])]
        result = fisher_exact(table)
        paper_note = (
            "answers of all readers pooled as if independent (readers rate the same images): "
            "indicative only, the scorecard compares the detection rates' CIs"
        )
        if first in paper and second in paper:
            paper_note += f"; paper detection rates {first} {100 * paper[first]:.1f} % vs {second} {100 * paper[second]:.1f} % (no test given)"
        for metric, value in (("fisher_odds_ratio", result.statistic), ("fisher_p", result.pvalue)):
            rows.append(
                table_row(
                    study,
                    f"{first}_vs_{second}",
                    "pooled",
                    metric,
                    float(value),
                    float("nan"),
                    paper_note,
                )
            )
    return pd.DataFrame(rows, columns=TABLE_COLUMNS)


def make_study_b_kits(
    real_manifest: str | os.PathLike[str],
    sample_manifests: Mapping[str, str | os.PathLike[str]],
    kit_dirs: Mapping[str, str | os.PathLike[str]],
    key_paths: Mapping[str, str | os.PathLike[str]],
    settings: Mapping[str, Any],
) -> None:
    """One kit per study B generator: ``n_real`` real held-out images (``held_out_split``) and
    ``n_synthetic`` of the generator's images, drawn at random (seeded), real ones read at the
    synthetic images' size so that size gives nothing away.

    ``sample_manifests``, ``kit_dirs``, ``key_paths``: generator -> path.
    """

    held = read_oai_manifest(real_manifest, split=settings["held_out_split"])
    for generator, manifest in sample_manifests.items():
        frame = read_sample_manifest(manifest)
        synthetic = ImageFiles([resolve_image(p, manifest) for p in frame["image"].astype(str)])
        real = ImageFiles(
            [resolve_image(p, real_manifest) for p in held["image"].astype(str)],
            synthetic.size,
        )
        n_real, n_synthetic = int(settings["n_real"]), int(settings["n_synthetic"])
        if len(real) < n_real:
            raise InputError(
                real_manifest,
                f"reader kit needs {n_real} real {settings['held_out_split']} images, found {len(real)}",
            )
        if len(synthetic) < n_synthetic:
            raise InputError(
                manifest, f"reader kit needs {n_synthetic} synthetic images, found {len(synthetic)}"
            )
        rng = np.random.default_rng(derive_seed(int(settings["seed"]), "reader_kit", generator))
        real_pick = np.sort(rng.choice(len(real), n_real, replace=False))
        synthetic_pick = np.sort(rng.choice(len(synthetic), n_synthetic, replace=False))
        make_reader_kit(
            np.stack([real[int(i)] for i in real_pick]),
            np.stack([synthetic[int(i)] for i in synthetic_pick]),
            generator=generator,
            kit_dir=kit_dirs[generator],
            key_path=key_paths[generator],
            seed=derive_seed(int(settings["seed"]), "reader_kit_ids", generator),
            real_sources=[str(real.paths[i]) for i in real_pick],
            synthetic_sources=[str(synthetic.paths[i]) for i in synthetic_pick],
        )
