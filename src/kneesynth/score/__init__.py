"""Score-based generative models of study A: NCSN++ (diffusers), VE SDE, DSM loss, samplers.

The names below load on first use (PEP 562), so that importing one submodule, such as
``kneesynth.score.sde``, does not import the others (diffusers, tqdm).
"""

from __future__ import annotations

import importlib
from typing import Any

_HOMES = {
    "dsm_loss": "losses",
    "l1_loss": "losses",
    "NCSNpp": "ncsnpp",
    "build_ncsnpp": "ncsnpp",
    "SAMPLERS": "sampling",
    "CountingScoreFn": "sampling",
    "get_sampler": "sampling",
    "initial_sample": "sampling",
    "VESDE": "sde",
    "UNetBaseline": "unet_baseline",
    "build_unet_baseline": "unet_baseline",
}

__all__ = sorted(_HOMES)


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_HOMES[name]}"), name)


def __dir__() -> list[str]:
    return sorted([*globals(), *_HOMES])
