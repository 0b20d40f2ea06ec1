"""Frechet distance (FID) between real test images and synthetic images, overall and per KL grade.

No pretrained network can be downloaded at run time, so by default the features are the pooled
features of a small MONAI DenseNet that the pipeline trains itself on the real training split to
grade KL (5 classes): the "FID" is then a Frechet distance in a knee-radiograph feature space,
not in Inception space, and the table says so in its ``features`` column. When the user supplies
an Inception-v3 feature extractor (``study_b.fid.inception_weights``), its 2048-d pool features
are used instead, as in Heusel et al. 2017.

The distance is the Frechet distance between Gaussians fitted to the two feature sets, as in
MONAI's ``FIDMetric``, with the trace of the matrix square root taken from eigenvalues in float64
(:func:`trace_sqrt_product`). Shapes: images uint8 (n, H, W); features float64 (n, d).
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from kneesynth.errors import InputError
from kneesynth.oai_generators import KL_GRADES, load_images, read_oai_manifest, to_model_range
from kneesynth.seeding import derive_seed
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
def build_feature_net(classifier: Mapping[str, Any]) -> nn.Module:
    """A 2D 1-channel MONAI DenseNet grading KL 0-4 (``study_b.fid.classifier`` keys:
    init_features, growth_rate, block_config)."""
    from monai.networks.nets import DenseNet

    return DenseNet(
        spatial_dims=2,
        in_channels=1,
        out_channels=len(KL_GRADES),
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
    steps (resumable). The validation accuracy is logged and saved in the weights' meta.
    ``compute``: bf16 autocast, channels_last and torch.compile of the training steps, as in
    study A.
    """
    from kneesynth import compute as compute_lib

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
    net.train()
    for step in trainer.steps():
        generator = step_generator(seed, step)
        index = torch.randint(0, len(labels), (batch_size,), generator=generator)
        batch = images[index]
        flip = torch.rand(batch_size, generator=generator) < 0.5
        batch = torch.where(flip.view(-1, 1, 1, 1).to(device), batch.flip(-1), batch)
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
            predicted = torch.cat([net(part).argmax(1) for part in val_images.split(batch_size)])
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
    description = f"densenet_kl_trained_on_real_train_split_pool{dim}"
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


def fid_rows(
    real_features: np.ndarray,
    real_grades: np.ndarray,
    synthetic: Mapping[str, tuple[np.ndarray, np.ndarray]],
    features: str,
) -> list[dict[str, Any]]:
    """Rows of fid.tsv: per generator, condition ``overall`` and ``kl0``..``kl4``.

    ``synthetic``: generator -> (features (m, d), kl_grades (m,)).
    """
    rows = []
    for generator, (synth_features, synth_grades) in synthetic.items():
        conditions = [
            ("overall", np.ones(len(real_grades), bool), np.ones(len(synth_grades), bool))
        ]
        conditions += [(f"kl{g}", real_grades == g, synth_grades == g) for g in KL_GRADES]
        for condition, real_mask, synth_mask in conditions:
            rows.append(
                {
                    "study": "B",
                    "model": generator,
                    "condition": condition,
                    "metric": "fid",
                    "value": frechet_distance(real_features[real_mask], synth_features[synth_mask]),
                    "features": features,
                    "n_real": int(real_mask.sum()),
                    "n_synthetic": int(synth_mask.sum()),
                    "paper_value": "",
                    "note": "",
                }
            )
    overall = {r["model"]: r["value"] for r in rows if r["condition"] == "overall"}
    for row in rows:
        note = PAPER_NOTE
        if min(row["n_real"], row["n_synthetic"]) < 2:
            note += "; no value: fewer than 2 images on one side"
        if row["condition"] == "overall" and row["model"].startswith("ddpm") and "wgan" in overall:
            lower = row["value"] < overall["wgan"]
            note += (
                f"; here {row['model']} {row['value']:.4g} "
                f"{'<' if lower else '>='} wgan {overall['wgan']:.4g}: "
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
) -> pd.DataFrame:
    """FID of every synthetic set against the real TEST split (rows as in :func:`fid_rows`)."""
    from kneesynth.synthetic import read_sample_manifest

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
        logger.info("%s: %d synthetic images", generator, len(frame))
    return pd.DataFrame(fid_rows(real_features, test["kl_grade"].to_numpy(), synthetic, features))
