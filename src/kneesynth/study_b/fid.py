"""FID and KID between real test images and synthetic images, overall and per KL grade.

No pretrained network can be downloaded at run time, so by default the features are the pooled
features of a small MONAI DenseNet that the pipeline trains itself on the real training split to
grade KL (5 classes) and, with ``classifier.rotation``, to tell how an image was rotated (which
makes it see the knee's layout): the "FID" is then a Frechet distance in a knee-radiograph
feature space, not in Inception space, and the table says so in its ``features`` column. When
the user supplies an Inception-v3 feature extractor (``study_b.fid.inception_weights``), its
2048-d pool features are used instead, as in Heusel et al. 2017.

The Frechet distance is the one between Gaussians fitted to the two feature sets, as in MONAI's
``FIDMetric``, with the trace of the matrix square root taken from eigenvalues in float64
(:func:`trace_sqrt_product`); KID (Binkowski et al. 2018, unbiased at small n) is torchmetrics'
``KernelInceptionDistance`` on the same features; both come with a standard error from random
half-subsets. The sets compared are evaluation sets drawn to the real test split's KL grade
mix, and the controls (:mod:`kneesynth.checks.controls`) are scored beside the generators. Shapes:
images uint8 (n, H, W); features float64 (n, d).
"""

from __future__ import annotations

import logging
import os
import shutil
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from kneesynth import compute as compute_lib
from kneesynth.data.images import load_images
from kneesynth.data.manifest import KL_GRADES, read_oai_manifest, read_sample_manifest
from kneesynth.errors import InputError
from kneesynth.seeding import derive_seed
from kneesynth.study_b.ddpm import to_model_range
from kneesynth.tables import table_row
from kneesynth.training import ResumableTrainer, load_weights, save_weights, step_generator

logger = logging.getLogger(__name__)

INCEPTION_FORMAT = (
    "expected a TorchScript archive (torch.jit.save) of an Inception-v3 feature extractor: "
    "forward(x) with x float32 (n, 3, 299, 299) in [0, 1] returning (n, 2048) pooled features "
    "(a plain state dict cannot be used: building Inception-v3 needs torchvision, which has no "
    "CPU build here)"
)
PAPER_NOTE = "abstract: FID lower for the DDPMs than for the GAN (no values given)"


# --------------------------------------------------------------------------------------------
# Feature network (MONAI DenseNet trained on the real training split)
# --------------------------------------------------------------------------------------------
ROTATIONS = 4  # quarter turns of the rotation task (RotNet, Gidaris et al. 2018)


def build_feature_net(classifier: Mapping[str, Any]) -> nn.Module:
    """A 2D 1-channel MONAI DenseNet grading KL 0-4 (``study_b.fid.classifier`` keys:
    init_features, growth_rate, block_config); with ``rotation`` it has 4 more outputs that
    tell by how many quarter turns an image was rotated."""
    from monai.networks.nets import DenseNet  # heavy (monai): imported on use

    return DenseNet(
        spatial_dims=2,
        in_channels=1,
        out_channels=len(KL_GRADES) + (ROTATIONS if classifier.get("rotation") else 0),
        init_features=int(classifier["init_features"]),
        growth_rate=int(classifier["growth_rate"]),
        block_config=tuple(int(b) for b in classifier["block_config"]),
    )


def pooled_features(net: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """Global-average-pooled features of a MONAI DenseNet: (n, 1, H, W) -> (n, d), before the
    final linear layer."""
    head = net.class_layers
    return head.flatten(head.pool(head.relu(net.features(images))))


def train_feature_net(
    manifest: str | os.PathLike[str],
    fid: Mapping[str, Any],
    image_size: int,
    output: str | os.PathLike[str],
    state_dir: str | os.PathLike[str],
    seed: int,
    device: torch.device | str = "cpu",
    compute: Mapping[str, Any] | None = None,
) -> None:
    """Train the KL classifier whose pooled features define our FID; write its weights.

    Cross-entropy on random flips of the real training split, Adam, ``classifier.steps``
    steps (resumable). With ``classifier.rotation`` the same net also learns to tell by how
    many quarter turns a copy of each batch image was rotated (RotNet, Gidaris et al. 2018),
    a task that needs the knee's layout (femur above the joint, tibia below): grading KL alone
    looks at the joint space and texture, and leaves the features nearly blind to images that
    have the texture of a radiograph but no knee (see ``control_noise`` in controls.tsv).
    The validation accuracy (KL) is logged and saved in the weights' meta. ``compute``: bf16
    autocast, channels_last and torch.compile of the training steps, as in study A.
    """

    classifier = fid["classifier"]
    device = torch.device(device)
    seed = derive_seed(int(seed), "study_b", "fid_features")
    train = read_oai_manifest(manifest, split="train")
    images = to_model_range(load_images(train["image"].tolist(), image_size)).to(device)
    labels = torch.tensor(train["kl_grade"].to_numpy(), dtype=torch.long, device=device)
    torch.manual_seed(derive_seed(seed, "init"))
    net = build_feature_net(classifier).to(device)
    forward = compute_lib.prepare_model(net, device, compute)
    optimizer = torch.optim.Adam(net.parameters(), lr=float(classifier["learning_rate"]))
    settings = {"fid": dict(fid), "image_size": image_size, "images": train["image"].tolist()}
    trainer = ResumableTrainer(
        state_dir,
        {"model": net, "optimizer": optimizer},
        total_steps=int(classifier["steps"]),
        checkpoint_every=int(classifier["checkpoint_every"]),
        settings=settings,
    )
    batch_size = int(classifier["batch_size"])
    rotation = bool(classifier.get("rotation", False))
    net.train()
    for step in trainer.steps():
        generator = step_generator(seed, step)
        index = torch.randint(0, len(labels), (batch_size,), generator=generator)
        batch = images[index]
        flip = torch.rand(batch_size, generator=generator) < 0.5
        batch = torch.where(flip.view(-1, 1, 1, 1).to(device), batch.flip(-1), batch)
        if rotation:
            turns = torch.randint(0, ROTATIONS, (batch_size,), generator=generator).to(device)
            rotated = torch.stack(
                [
                    torch.rot90(image, int(k), dims=(1, 2))
                    for image, k in zip(batch, turns, strict=True)
                ]
            )
            with compute_lib.autocast(device, compute):
                logits = forward(compute_lib.prepare_input(torch.cat([batch, rotated]), compute))
            logits = logits.float()
            loss = F.cross_entropy(
                logits[:batch_size, : len(KL_GRADES)], labels[index]
            ) + F.cross_entropy(logits[batch_size:, len(KL_GRADES) :], turns)
        else:
            with compute_lib.autocast(device, compute):
                logits = forward(compute_lib.prepare_input(batch, compute))
            loss = F.cross_entropy(logits.float(), labels[index])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        trainer.record(step, loss=loss.item())
    trainer.finish()
    net.eval()
    meta: dict[str, Any] = {
        "classifier": {
            k: (list(v) if isinstance(v, (list, tuple)) else v) for k, v in classifier.items()
        },
        "image_size": int(image_size),
        "n_train": len(train),
    }
    val = read_oai_manifest(manifest)
    val = val[val["split"] == "val"]
    if len(val):
        val_images = to_model_range(load_images(val["image"].tolist(), image_size)).to(device)
        with torch.no_grad():
            predicted = torch.cat(
                [net(part)[:, : len(KL_GRADES)].argmax(1) for part in val_images.split(batch_size)]
            )
        accuracy = float((predicted.cpu().numpy() == val["kl_grade"].to_numpy()).mean())
        meta["val_accuracy"] = accuracy
        logger.info("feature net: validation accuracy %.3f on %d images", accuracy, len(val))
    save_weights(output, {k: v.detach().cpu() for k, v in net.state_dict().items()}, meta)
    shutil.rmtree(state_dir, ignore_errors=True)  # the weights are safe: drop the resume state


# --------------------------------------------------------------------------------------------
# Feature extractors
# --------------------------------------------------------------------------------------------
def classifier_extractor(
    weights: str | os.PathLike[str], device: torch.device | str = "cpu"
) -> tuple[Callable[[np.ndarray], np.ndarray], str, int]:
    """(extract, description, image_size) for the trained feature net at ``weights``."""
    state_dict, meta = load_weights(weights)
    if "classifier" not in meta:
        raise InputError(weights, "not a feature-net weights file (no 'classifier' in meta)")
    net = build_feature_net(meta["classifier"])
    net.load_state_dict(state_dict)
    net = net.to(device).eval()

    @torch.no_grad()
    def extract(images: np.ndarray) -> np.ndarray:
        parts = [
            pooled_features(net, to_model_range(chunk).to(device)).double().cpu()
            for chunk in np.array_split(images, max(1, int(np.ceil(len(images) / 64))))
        ]
        return torch.cat(parts).numpy()

    dim = int(net.class_layers.out.in_features)
    tasks = "kl_rotation" if meta["classifier"].get("rotation") else "kl"
    description = (
        f"densenet_{tasks}_trained_on_real_train_split_pool{dim}_{int(meta['image_size'])}px"
    )
    return extract, description, int(meta["image_size"])


def inception_extractor(
    weights: str | os.PathLike[str], device: torch.device | str = "cpu"
) -> tuple[Callable[[np.ndarray], np.ndarray], str]:
    """(extract, description) for a user-supplied TorchScript Inception-v3 (see INCEPTION_FORMAT)."""
    if not os.path.exists(weights):
        raise InputError(weights, "Inception weights file not found")
    try:
        net = torch.jit.load(str(weights), map_location=device).eval()
    except Exception:
        raise InputError(weights, INCEPTION_FORMAT) from None

    @torch.no_grad()
    def extract(images: np.ndarray) -> np.ndarray:
        parts = []
        for chunk in np.array_split(images, max(1, int(np.ceil(len(images) / 32)))):
            x = torch.from_numpy(chunk).float().div(255.0).unsqueeze(1).to(device)
            x = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False).repeat(
                1, 3, 1, 1
            )
            features = net(x)
            if features.ndim != 2:
                raise InputError(
                    weights, f"{INCEPTION_FORMAT}; got output shape {tuple(features.shape)}"
                )
            parts.append(features.double().cpu())
        return torch.cat(parts).numpy()

    return extract, "inception_v3_pool"


# --------------------------------------------------------------------------------------------
# Distance and table
# --------------------------------------------------------------------------------------------
def trace_sqrt_product(a: np.ndarray, b: np.ndarray) -> float:
    """``tr sqrtm(A^T A B^T B)`` for float64 matrices a (n, d) and b (m, d).

    With ``a``, ``b`` the centred features divided by sqrt(n - 1), sqrt(m - 1), ``A^T A`` and
    ``B^T B`` are the two covariance matrices and this is the cross term of the Frechet distance.
    Their product is similar to a symmetric positive semi-definite matrix, so its eigenvalues are
    real and >= 0 and the trace of its square root is the sum of their square roots. Taken from a
    symmetric matrix with the same non-zero eigenvalues:

    * ``min(n, m) <= d``: the eigenvalues are the squared singular values of ``a b^T`` (n, m), so
      the trace is its nuclear norm (no d x d matrix at all);
    * else ``L^T (B^T B) L`` with ``A^T A = L L^T`` (Cholesky; when ``A^T A`` is singular, for
      example a feature that never varies, ``L = V sqrt(w)`` from its eigen-decomposition).

    Hand-written because MONAI's ``FIDMetric`` (like pytorch-fid and torch-fidelity) takes
    ``scipy.linalg.sqrtm`` of the non-symmetric product, several times slower at 2000 x 1024
    features for the same value to about 1e-12 (bench/fid.py; tests/test_fid.py checks it against
    ``sqrtm``).
    """
    n, d = a.shape
    if min(n, len(b)) <= d:
        return float(np.linalg.norm(a @ b.T, ord="nuc"))
    cov_a, cov_b = a.T @ a, b.T @ b
    try:
        root = np.linalg.cholesky(cov_a)
    except np.linalg.LinAlgError:
        values, vectors = np.linalg.eigh(cov_a)
        root = vectors * np.sqrt(np.clip(values, 0.0, None))
    eigenvalues = np.linalg.eigvalsh(root.T @ cov_b @ root)
    return float(np.sqrt(np.clip(eigenvalues, 0.0, None)).sum())


def frechet_distance(real: np.ndarray, synthetic: np.ndarray) -> float:
    """Frechet distance between Gaussians fitted to feature sets real (n, d) and synthetic
    (m, d): ``|mu_r - mu_s|^2 + tr(C_r) + tr(C_s) - 2 tr sqrtm(C_r C_s)`` with unbiased
    covariances, in float64; NaN if n or m < 2."""
    if len(real) < 2 or len(synthetic) < 2:
        return float("nan")
    real = np.asarray(real, dtype=np.float64)
    synthetic = np.asarray(synthetic, dtype=np.float64)
    mean_real, mean_synthetic = real.mean(axis=0), synthetic.mean(axis=0)
    a = (real - mean_real) / np.sqrt(len(real) - 1)  # C_r = a^T a
    b = (synthetic - mean_synthetic) / np.sqrt(len(synthetic) - 1)
    difference = mean_real - mean_synthetic
    return float(
        difference @ difference + np.sum(a * a) + np.sum(b * b) - 2.0 * trace_sqrt_product(a, b)
    )


def half_subsets(n_real: int, n_synthetic: int, subsets: int, seed: int):
    """``subsets`` random pairs of index sets (real, synthetic), each half of the smaller set.

    The spread of a statistic over such half-subsets is its delete-half jackknife standard
    error: with d = n/2 left out, the jackknife variance factor (n - d) / d is 1, so the SE is
    the plain standard deviation over the half-subsets (Shao & Wu 1989). For KID it errs on the
    safe side: when the two distributions are equal, MMD^2 is a degenerate U-statistic whose
    variance falls as 1/n^2, and the half-subsets overstate it (about twice the SD; tested).
    """
    size = min(n_real, n_synthetic) // 2
    rng = np.random.default_rng(seed)
    for _ in range(int(subsets)):
        yield (
            rng.choice(n_real, size, replace=False),
            rng.choice(n_synthetic, size, replace=False),
        )


def kernel_inception_distance(
    real: np.ndarray, synthetic: np.ndarray, subsets: int = 100, seed: int = 0
) -> tuple[float, float]:
    """KID (Binkowski et al. 2018) between feature sets real (n, d) and synthetic (m, d) and
    its standard error; (NaN, NaN) if n or m < 4.

    torchmetrics' ``KernelInceptionDistance`` with our features (an identity feature module
    fed the features): the unbiased MMD^2 with the cubic polynomial kernel
    ``k(x, y) = (x.y / d + 1)^3``, averaged over ``subsets`` random subsets that each hold
    half of the smaller set. Unbiased at any n (FID is not: two samples of one distribution
    have FID > 0, the more so the smaller n). The SE is the standard deviation over the
    half-subsets (delete-half jackknife, see :func:`half_subsets`).
    """

    # heavy (torchmetrics): imported on use
    from torchmetrics.image.kid import KernelInceptionDistance

    size = min(len(real), len(synthetic)) // 2
    if size < 2:
        return float("nan"), float("nan")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "will save all extracted features in buffer"
        metric = KernelInceptionDistance(
            feature=nn.Identity(), subsets=int(subsets), subset_size=size
        )
        metric.update(torch.as_tensor(real, dtype=torch.float64), real=True)
        metric.update(torch.as_tensor(synthetic, dtype=torch.float64), real=False)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(seed) % 2**63)
            mean, std = metric.compute()
    return float(mean), float(std)


def frechet_distance_se(
    real: np.ndarray, synthetic: np.ndarray, subsets: int = 100, seed: int = 0
) -> float:
    """Standard error of :func:`frechet_distance`: its standard deviation over random
    half-subsets (delete-half jackknife, :func:`half_subsets`); NaN if n or m < 6."""
    if min(len(real), len(synthetic)) < 6:
        return float("nan")
    values = [
        frechet_distance(real[r], synthetic[s])
        for r, s in half_subsets(len(real), len(synthetic), subsets, seed)
    ]
    return float(np.std(values))


METRIC_NOTES = {
    "fid": "Frechet distance (biased upwards at small n: compare values at equal n only)",
    "fid_se": "standard error of fid: SD over random half-subsets (delete-half jackknife)",
    "kid": "kernel inception distance (Binkowski et al. 2018; torchmetrics): unbiased MMD^2, "
    "cubic polynomial kernel, mean over random half-subsets",
    "kid_se": "standard error of kid: SD over the half-subsets (delete-half jackknife)",
}


def fid_rows(
    real_features: np.ndarray,
    real_grades: np.ndarray,
    synthetic: Mapping[str, tuple[np.ndarray, np.ndarray]],
    features: str,
    subsets: int = 100,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """Rows of fid.tsv: per set (generator or control), condition ``overall`` and
    ``kl0``..``kl4``, metrics fid, fid_se, kid, kid_se.

    ``synthetic``: name -> (features (m, d), kl_grades (m,)). The sets are drawn to the real
    set's grade mix (the evaluation sets), so ``overall`` compares images, not label mixes, and
    every set has the same count per grade, so per-grade values compare at equal n.
    """
    rows = []
    for name, (synth_features, synth_grades) in synthetic.items():
        conditions = [
            ("overall", np.ones(len(real_grades), bool), np.ones(len(synth_grades), bool))
        ]
        conditions += [(f"kl{g}", real_grades == g, synth_grades == g) for g in KL_GRADES]
        for condition, real_mask, synth_mask in conditions:
            real_part, synth_part = real_features[real_mask], synth_features[synth_mask]
            part_seed = derive_seed(int(seed), "fid", name, condition)
            kid, kid_se = kernel_inception_distance(real_part, synth_part, subsets, part_seed)
            values = {
                "fid": frechet_distance(real_part, synth_part),
                "fid_se": frechet_distance_se(real_part, synth_part, subsets, part_seed),
                "kid": kid,
                "kid_se": kid_se,
            }
            for metric, value in values.items():
                rows.append(
                    table_row(
                        "B",
                        name,
                        condition,
                        metric,
                        value,
                        "",
                        METRIC_NOTES[metric],
                        features=features,
                        n_real=int(real_mask.sum()),
                        n_synthetic=int(synth_mask.sum()),
                    )
                )
    overall = {(r["model"], r["metric"]): r["value"] for r in rows if r["condition"] == "overall"}
    for row in rows:
        note = row["note"]
        if row["metric"] in ("fid", "kid"):
            note += "; " + PAPER_NOTE
        if np.isnan(row["value"]):
            note += "; no value: too few images on one side"
        wgan = overall.get(("wgan", row["metric"]))
        if (
            row["condition"] == "overall"
            and row["metric"] in ("fid", "kid")
            and row["model"].startswith("ddpm")
            and wgan is not None
        ):
            lower = row["value"] < wgan
            note += (
                f"; here {row['model']} {row['value']:.4g} "
                f"{'<' if lower else '>='} wgan {wgan:.4g}: "
                f"{'same direction' if lower else 'opposite direction'}"
            )
        row["note"] = note
    return rows


def fid_table(
    real_manifest: str | os.PathLike[str],
    sample_manifests: Sequence[str | os.PathLike[str]],
    feature_weights: str | os.PathLike[str],
    fid: Mapping[str, Any],
    device: torch.device | str = "cpu",
    seed: int = 0,
) -> pd.DataFrame:
    """FID and KID of every evaluation set (generators and controls) against the real TEST
    split (rows as in :func:`fid_rows`; ``fid.subsets`` half-subsets for KID and the SEs)."""

    extract, features, image_size = classifier_extractor(feature_weights, device)
    if fid.get("features", "classifier") == "inception":
        if not fid.get("inception_weights"):
            raise InputError(
                "config",
                "study_b.fid.features is 'inception' but study_b.fid.inception_weights is not set",
            )
        extract, features = inception_extractor(fid["inception_weights"], device)
    test = read_oai_manifest(real_manifest, split="test")
    real_features = extract(load_images(test["image"].tolist(), image_size))
    synthetic = {}
    for path in sample_manifests:
        frame = read_sample_manifest(path)
        generator = str(frame["generator"].iloc[0])
        synthetic[generator] = (
            extract(load_images(frame["image"].tolist(), image_size)),
            frame["kl_grade"].to_numpy(),
        )
        logger.info("%s: %d images", generator, len(frame))
    rows = fid_rows(
        real_features,
        test["kl_grade"].to_numpy(),
        synthetic,
        features,
        subsets=int(fid.get("subsets", 100)),
        seed=seed,
    )
    return pd.DataFrame(rows)
