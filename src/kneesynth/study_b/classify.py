"""Study B classifiers: KL-grade CNNs trained on real, real + synthetic, or synthetic images.

Arms (what the training split holds; validation and test are always the REAL val/test splits):

- ``real``: the real training split;
- ``real+<generator>``: the real training split plus every image of the generator's
  synthetic set (``results/samples/study_b/<generator>/manifest.tsv``);
- ``syn-<generator>``: the synthetic set only (study C's "train on synthetic, test on real"
  utility). ``synthetic:<generator>`` is accepted as a spelling of it in the library; the
  file-safe ``syn-<generator>`` is the one used in paths.

Tasks: ``kl5`` (KL grade 0-4, 5 classes) and ``kl_binary`` (KL >= 2, radiographic OA).

Networks (MONAI, from scratch, spatial_dims=2, in_channels=1): ``densenet121``,
``resnet18``, ``efficientnet-b0`` and ``small_cnn`` (MONAI's ``Classifier``: strided
convolutions, for the CPU demo). Training: AdamW + cross-entropy, random horizontal flips;
after every epoch the model is evaluated on the real validation split and the best epoch
(``selection_metric``: val accuracy, ties broken by the lower val loss; or val loss) is kept
and used for the test predictions. Training resumes after a kill
(:class:`kneesynth.training.ResumableTrainer`); all randomness comes from the seed, so CPU
runs are bit-identical.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import math
import os
import re
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from kneesynth.compute import autocast, prepare_input, prepare_model
from kneesynth.data.images import read_radiograph
from kneesynth.data.manifest import read_oai_manifest, read_sample_manifest, resolve_image
from kneesynth.data.splits import SPLITS
from kneesynth.io import write_tsv
from kneesynth.seeding import derive_seed
from kneesynth.study_b.kl_metrics import task_target
from kneesynth.study_b.settings import TASK_CLASSES
from kneesynth.training import ResumableTrainer, step_generator

logger = logging.getLogger(__name__)

BACKBONES = ("densenet121", "resnet18", "efficientnet-b0", "small_cnn")
SYNTHETIC_ONLY_PREFIX = "syn-"
ARM_PATTERN = re.compile(
    r"^(real|real\+(?P<added>[A-Za-z0-9_]+)|(syn-|synthetic:)(?P<only>[A-Za-z0-9_]+))$"
)


# ---------------------------------------------------------------------------------- arms
@dataclass(frozen=True)
class Arm:
    """What an arm trains on: the real training split or not, and which synthetic set."""

    name: str
    use_real: bool
    generator: str | None


def parse_arm(name: str) -> Arm:
    """``real`` | ``real+<generator>`` | ``syn-<generator>`` (or ``synthetic:<generator>``).

    The returned ``name`` is the file-safe spelling used in result paths.
    """
    match = ARM_PATTERN.match(name)
    if not match:
        raise ValueError(
            f"unknown classifier arm {name!r}; expected real, real+<generator> or syn-<generator>"
        )
    if match["added"]:
        return Arm(name, True, match["added"])
    if match["only"]:
        return Arm(SYNTHETIC_ONLY_PREFIX + match["only"], False, match["only"])
    return Arm("real", True, None)


# ------------------------------------------------------------------------------- images
@dataclass
class ImageSet:
    """Images held in memory with their labels.

    images: (n, 1, H, W) float32 in [0, 1]; kl_grade: (n,) int64; image: n image ids (the
    manifest's path strings); participant: n participant ids ("" for synthetic images).
    """

    images: torch.Tensor
    kl_grade: np.ndarray
    image: list[str]
    participant: list[str]

    def __len__(self) -> int:
        return len(self.image)

    def concat(self, other: ImageSet) -> ImageSet:
        return ImageSet(
            torch.cat([self.images, other.images]),
            np.concatenate([self.kl_grade, other.kl_grade]),
            self.image + other.image,
            self.participant + other.participant,
        )


def load_image_set(
    table: pd.DataFrame, manifest: str | os.PathLike[str], image_size: int
) -> ImageSet:
    """Load the images of manifest rows into memory (see :class:`ImageSet`)."""
    manifest = Path(manifest)
    arrays = [
        read_radiograph(resolve_image(image, manifest), image_size) for image in table["image"]
    ]
    images = (
        torch.from_numpy(np.stack(arrays)[:, None])
        if arrays
        else torch.empty(0, 1, image_size, image_size)
    )
    participant = (
        table["participant"].astype(str).tolist() if "participant" in table else [""] * len(table)
    )
    return ImageSet(
        images, table["kl_grade"].to_numpy(np.int64), table["image"].tolist(), participant
    )


@dataclass
class ArmData:
    """Train (arm-specific), val and test (real) image sets of one arm."""

    train: ImageSet
    val: ImageSet
    test: ImageSet


def load_arm_data(
    arm: str,
    real_manifest: str | os.PathLike[str],
    synthetic_manifests: Mapping[str, str | os.PathLike[str]],
    image_size: int,
) -> ArmData:
    """Images of one arm: its training set, and the real val and test splits.

    synthetic_manifests: generator -> manifest path (only the arm's generator is read).
    """
    spec = parse_arm(arm)
    real = read_oai_manifest(real_manifest, every_split=True)
    splits = {
        split: load_image_set(real[real["split"] == split], real_manifest, image_size)
        for split in SPLITS
    }
    train = splits["train"] if spec.use_real else None
    if spec.generator is not None:
        if spec.generator not in synthetic_manifests:
            raise ValueError(f"arm {arm}: no synthetic manifest given for {spec.generator}")
        manifest = synthetic_manifests[spec.generator]
        synthetic = load_image_set(read_sample_manifest(manifest), manifest, image_size)
        train = synthetic if train is None else train.concat(synthetic)
    return ArmData(train=train, val=splits["val"], test=splits["test"])


# ------------------------------------------------------------------------------ networks
def build_classifier(backbone: str, num_classes: int, image_size: int) -> torch.nn.Module:
    """A 2-D, 1-channel MONAI classifier, randomly initialised (no pretrained weights).

    Input (batch, 1, image_size, image_size), output (batch, num_classes) logits.
    """
    from monai.networks import nets  # heavy (monai): imported on use

    if backbone == "densenet121":
        return nets.DenseNet121(spatial_dims=2, in_channels=1, out_channels=num_classes)
    if backbone == "resnet18":
        return nets.resnet18(spatial_dims=2, n_input_channels=1, num_classes=num_classes)
    if backbone == "efficientnet-b0":
        return nets.EfficientNetBN(
            "efficientnet-b0",
            pretrained=False,
            spatial_dims=2,
            in_channels=1,
            num_classes=num_classes,
        )
    if backbone == "small_cnn":
        # MONAI's Classifier: strided conv blocks + a linear head; tiny enough for the CPU demo
        return nets.Classifier(
            in_shape=(1, image_size, image_size),
            classes=num_classes,
            channels=(8, 16, 32, 64),
            strides=(2, 2, 2, 2),
            num_res_units=0,
            norm="batch",
        )
    raise ValueError(f"unknown classifier backbone {backbone!r}; expected one of {BACKBONES}")


# ------------------------------------------------------------------------------ training
class BestEpoch:
    """The selected model so far (weights + its validation scores) and the val history.

    Stateful (state_dict/load_state_dict) so that ResumableTrainer checkpoints it.
    """

    def __init__(self, selection_metric: str):
        if selection_metric not in ("accuracy", "loss"):
            raise ValueError(f"selection_metric must be accuracy or loss, got {selection_metric!r}")
        self.selection_metric = selection_metric
        self.weights: dict[str, torch.Tensor] | None = None
        self.epoch = -1
        self.val_accuracy = -math.inf
        self.val_loss = math.inf
        self.history: list[dict[str, float]] = []

    def better(self, val_accuracy: float, val_loss: float) -> bool:
        if self.selection_metric == "loss":
            return val_loss < self.val_loss
        return val_accuracy > self.val_accuracy or (
            val_accuracy == self.val_accuracy and val_loss < self.val_loss
        )

    def update(
        self,
        epoch: int,
        model: torch.nn.Module,
        val_accuracy: float,
        val_loss: float,
        train_loss: float,
    ) -> None:
        selected = self.better(val_accuracy, val_loss)
        if selected:
            self.weights = copy.deepcopy(
                {k: v.detach().cpu() for k, v in model.state_dict().items()}
            )
            self.epoch, self.val_accuracy, self.val_loss = epoch, val_accuracy, val_loss
        self.history.append(
            {
                "epoch": epoch,
                "train_loss": train_loss,
                "val_loss": val_loss,
                "val_accuracy": val_accuracy,
            }
        )

    def state_dict(self) -> dict[str, Any]:
        return {
            "weights": self.weights or {},
            "epoch": self.epoch,
            "val_accuracy": self.val_accuracy,
            "val_loss": self.val_loss,
            "history": self.history,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.weights = dict(state["weights"]) or None
        self.epoch = int(state["epoch"])
        self.val_accuracy = float(state["val_accuracy"])
        self.val_loss = float(state["val_loss"])
        self.history = [dict(entry) for entry in state["history"]]


def _normalise(images: torch.Tensor) -> torch.Tensor:
    """[0, 1] -> [-1, 1]."""
    return images * 2.0 - 1.0


@torch.no_grad()
def predict_probabilities(
    model: torch.nn.Module, images: torch.Tensor, device: torch.device, batch_size: int = 256
) -> torch.Tensor:
    """Softmax probabilities (n, num_classes) float32 on the CPU for images (n, 1, H, W)."""
    model.eval()
    chunks = []
    for start in range(0, len(images), batch_size):
        batch = _normalise(images[start : start + batch_size].to(device))
        chunks.append(torch.softmax(model(batch).float(), dim=1).cpu())
    return torch.cat(chunks)


def class_weights(target: np.ndarray, num_classes: int, mode: str) -> torch.Tensor | None:
    """Cross-entropy class weights: ``none`` -> None; ``balanced`` -> n / (k * count_c)
    (scikit-learn's "balanced"; a class absent from training gets weight 0)."""
    if mode == "none":
        return None
    if mode != "balanced":
        raise ValueError(f"class_weighting must be none or balanced, got {mode!r}")
    counts = np.bincount(target, minlength=num_classes).astype(np.float64)
    weights = np.where(counts > 0, counts.sum() / (num_classes * np.maximum(counts, 1)), 0.0)
    return torch.tensor(weights, dtype=torch.float32)


@dataclass
class TrainedClassifier:
    model: torch.nn.Module
    best: BestEpoch


def train_classifier(
    data: ArmData,
    task: str,
    seed: int,
    settings: Mapping[str, Any],
    state_dir: str | os.PathLike[str],
    device: torch.device | None = None,
    compute: Mapping[str, Any] | None = None,
) -> TrainedClassifier:
    """Train one classifier of ``task`` on ``data.train``; select the epoch on ``data.val``.

    settings: the ``study_b.classifiers`` config section (backbone, image_size, epochs,
    batch_size, learning_rate, weight_decay, class_weighting, augment_flip,
    selection_metric, checkpoint_every); compute: the ``compute`` config section (bf16
    autocast of the training forward pass, channels_last, torch.compile, as in study A).
    Returns the model loaded with the selected epoch's weights, and the selection record
    (validation history per epoch).
    """

    device = device or torch.device("cpu")
    num_classes = len(TASK_CLASSES[task])
    train_target = torch.from_numpy(task_target(data.train.kl_grade, task))
    val_target = torch.from_numpy(task_target(data.val.kl_grade, task))
    n_train, batch_size = len(data.train), int(settings["batch_size"])
    if n_train == 0:
        raise ValueError("the training set of this arm is empty")
    steps_per_epoch = math.ceil(n_train / batch_size)
    epochs = int(settings["epochs"])
    training_seed = derive_seed(seed, "classifier", task)

    torch.manual_seed(training_seed)
    model = build_classifier(settings["backbone"], num_classes, int(settings["image_size"]))
    model = model.to(device)
    forward = prepare_model(model, device, compute)
    optimizer = torch.optim.AdamW(
        model.parameters(),
        lr=float(settings["learning_rate"]),
        weight_decay=float(settings["weight_decay"]),
    )
    weight = class_weights(train_target.numpy(), num_classes, settings["class_weighting"])
    loss_fn = torch.nn.CrossEntropyLoss(weight=None if weight is None else weight.to(device))
    best = BestEpoch(settings["selection_metric"])
    trainer = ResumableTrainer(
        state_dir,
        {"model": model, "optimizer": optimizer, "best": best},
        total_steps=epochs * steps_per_epoch,
        checkpoint_every=int(settings["checkpoint_every"]),
        settings={
            "settings": dict(settings),
            "task": task,
            "seed": seed,
            "train": [data.train.image, data.train.kl_grade.tolist()],
            "val": data.val.image,
        },
    )
    permutation: tuple[int, torch.Tensor] | None = None
    epoch_losses: list[float] = []  # for the log (after a mid-epoch resume: the rest only)
    for step in trainer.steps():
        epoch, position = divmod(step, steps_per_epoch)
        if permutation is None or permutation[0] != epoch:
            # the epoch's order depends on (seed, epoch) only, so a resumed run sees the same
            permutation = (
                epoch,
                torch.randperm(
                    n_train, generator=step_generator(training_seed, epoch * steps_per_epoch)
                ),
            )
            epoch_losses = []
        index = permutation[1][position * batch_size : (position + 1) * batch_size]
        images = data.train.images[index]
        if settings["augment_flip"]:
            generator = step_generator(training_seed, step)
            flip = torch.rand(len(index), generator=generator) < 0.5
            images = torch.where(flip[:, None, None, None], images.flip(-1), images)
        model.train()
        with autocast(device, compute):
            logits = forward(prepare_input(_normalise(images.to(device)), compute))
        loss = loss_fn(logits.float(), train_target[index].to(device))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        loss_value = float(loss.detach())
        epoch_losses.append(loss_value)
        trainer.record(step, loss=loss_value)
        if position == steps_per_epoch - 1:
            epoch_loss = float(np.mean(epoch_losses))
            probabilities = predict_probabilities(model, data.val.images, device)
            val_loss = float(
                torch.nn.functional.nll_loss(torch.log(probabilities.clamp_min(1e-12)), val_target)
            )
            val_accuracy = float((probabilities.argmax(1) == val_target).float().mean())
            best.update(epoch, model, val_accuracy, val_loss, epoch_loss)
            logger.info(
                "task %s seed %d epoch %d: train loss %.4f, val loss %.4f, val accuracy %.4f%s",
                task,
                seed,
                epoch,
                epoch_loss,
                val_loss,
                val_accuracy,
                " (selected)" if best.epoch == epoch else "",
            )
    trainer.finish()
    if best.weights is None:
        raise ValueError("no epoch was completed; set epochs >= 1")
    model.load_state_dict(best.weights)
    return TrainedClassifier(model=model, best=best)


def prediction_table(
    model: torch.nn.Module, test: ImageSet, task: str, device: torch.device | None = None
) -> pd.DataFrame:
    """One row per test image: image, participant, kl_grade, target, prediction, prob_<c>."""
    device = device or torch.device("cpu")
    probabilities = predict_probabilities(model, test.images, device).numpy()
    table = pd.DataFrame(
        {
            "image": test.image,
            "participant": test.participant,
            "kl_grade": test.kl_grade,
            "target": task_target(test.kl_grade, task),
            "prediction": probabilities.argmax(axis=1),
        }
    )
    for cls in TASK_CLASSES[task]:
        table[f"prob_{cls}"] = probabilities[:, cls].round(6)
    return table


def run_arm(
    arm: str,
    tasks: Sequence[str],
    seeds: Sequence[int],
    real_manifest: str | os.PathLike[str],
    synthetic_manifests: Mapping[str, str | os.PathLike[str]],
    settings: Mapping[str, Any],
    prediction_paths: Mapping[tuple[str, int], str | os.PathLike[str]],
    history_paths: Mapping[str, str | os.PathLike[str]],
    state_root: str | os.PathLike[str],
    device: torch.device | None = None,
    compute: Mapping[str, Any] | None = None,
) -> None:
    """Train every (task, seed) classifier of one arm and write its test predictions.

    prediction_paths: (task, seed) -> TSV path; history_paths: task -> TSV of the
    validation history (seed, epoch, train_loss, val_loss, val_accuracy, selected).
    state_root: resume state, one folder per task and seed, removed when all is written.
    """
    data = load_arm_data(arm, real_manifest, synthetic_manifests, int(settings["image_size"]))
    logger.info(
        "arm %s: %d training, %d validation, %d test images",
        arm,
        len(data.train),
        len(data.val),
        len(data.test),
    )
    state_dirs = []
    for task in tasks:
        history_rows = []
        for seed in seeds:
            state_dir = Path(state_root) / task / f"seed{seed}"
            state_dirs.append(state_dir)
            trained = train_classifier(data, task, seed, settings, state_dir, device, compute)
            write_tsv(
                prediction_paths[(task, seed)],
                prediction_table(trained.model, data.test, task, device),
            )
            for entry in trained.best.history:
                history_rows.append(
                    {"seed": seed, **entry, "selected": entry["epoch"] == trained.best.epoch}
                )
        write_tsv(history_paths[task], pd.DataFrame(history_rows))
    for state_dir in state_dirs:
        shutil.rmtree(state_dir, ignore_errors=True)
    for folder in [Path(state_root, task) for task in tasks] + [Path(state_root)]:
        with contextlib.suppress(OSError):  # only if empty: nothing else lives there
            folder.rmdir()
