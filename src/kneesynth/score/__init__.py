"""Score-based generative models of study A: NCSN++ (diffusers), VE SDE, DSM loss, samplers."""

from kneesynth.score.losses import dsm_loss, l1_loss
from kneesynth.score.ncsnpp import NCSNpp, build_ncsnpp
from kneesynth.score.sampling import SAMPLERS, CountingScoreFn, get_sampler, initial_sample
from kneesynth.score.sde import VESDE
from kneesynth.score.unet_baseline import UNetBaseline, build_unet_baseline

__all__ = [
    "SAMPLERS",
    "VESDE",
    "CountingScoreFn",
    "NCSNpp",
    "UNetBaseline",
    "build_ncsnpp",
    "build_unet_baseline",
    "dsm_loss",
    "get_sampler",
    "initial_sample",
    "l1_loss",
]
