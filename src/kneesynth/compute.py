"""Where and how tensors are computed: device, bf16 autocast, channels_last, torch.compile."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Mapping
from typing import Any

import torch

logger = logging.getLogger(__name__)

DEFAULT_COMPUTE: dict[str, Any] = {
    "device": "auto",
    "bf16": False,
    "channels_last": False,
    "compile": False,
    "deterministic": True,
}


def settings(compute: Mapping[str, Any] | None) -> dict[str, Any]:
    """The ``compute`` config section with defaults filled in."""
    merged = dict(DEFAULT_COMPUTE)
    merged.update(compute or {})
    return merged


def device_for(compute: Mapping[str, Any] | None = None) -> torch.device:
    """``cuda`` when asked for (or ``auto``) and present, else ``cpu``."""
    choice = settings(compute)["device"]
    if choice == "cpu":
        device = torch.device("cpu")
    elif choice in ("auto", "cuda"):
        if torch.cuda.is_available():
            device = torch.device("cuda")
        elif choice == "cuda":
            raise RuntimeError("compute.device is 'cuda' but no CUDA device is available")
        else:
            device = torch.device("cpu")
    else:
        device = torch.device(choice)
    if settings(compute)["deterministic"]:
        torch.use_deterministic_algorithms(True, warn_only=True)
        if device.type == "cuda":
            torch.backends.cudnn.benchmark = False
    logger.info("compute device: %s", device)
    return device


def autocast(device: torch.device, compute: Mapping[str, Any] | None = None):
    """bf16 autocast on ``device`` when ``compute.bf16`` is set, else a no-op context."""
    if settings(compute)["bf16"]:
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def prepare_input(images: torch.Tensor, compute: Mapping[str, Any] | None = None) -> torch.Tensor:
    """Images ``(n, C, H, W)`` in channels-last memory format when ``compute.channels_last`` is
    set (the layout :func:`prepare_model` gives the network), else ``images`` itself."""
    if settings(compute)["channels_last"] and images.dim() == 4:
        return images.contiguous(memory_format=torch.channels_last)
    return images


def prepare_model(
    model: torch.nn.Module, device: torch.device, compute: Mapping[str, Any] | None = None
) -> torch.nn.Module:
    """Move ``model`` to ``device``; apply channels_last and torch.compile when configured.

    Returns the module to call (compiled or not); its parameters are shared with ``model`` so
    ``model.state_dict()`` stays the one to save.
    """
    options = settings(compute)
    model = model.to(device)
    if options["channels_last"]:
        model = model.to(memory_format=torch.channels_last)
    if options["compile"]:
        return torch.compile(model)
    return model
