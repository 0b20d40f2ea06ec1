"""U-Net baseline of study A: the NCSN++ backbone without the noise embedding, mask -> DRR."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from kneesynth.score.ncsnpp import build_ncsnpp

__all__ = ["UNetBaseline", "build_unet_baseline"]


class UNetBaseline(nn.Module):
    """Image-to-image U-Net: ``forward(condition (B, C, H, W)) -> drr (B, 1, H, W)``.

    Same diffusers NCSN++ backbone as the score models; the noise embedding is removed by
    feeding one constant noise level (sigma = 1, so log sigma = 0 and diffusers' output division
    by sigma is the identity): the Fourier features become a constant the network absorbs into
    its biases, so no noise information enters. (diffusers' UNet2DModel cannot be built without
    a time embedding, hence the constant.)
    """

    def __init__(self, backbone: nn.Module):
        super().__init__()
        self.backbone = backbone

    def forward(self, condition: torch.Tensor) -> torch.Tensor:
        sigma = torch.ones(condition.shape[0], device=condition.device)
        return self.backbone.unet(condition, sigma, return_dict=False)[0]


def build_unet_baseline(
    image_size: int,
    block_out_channels: Sequence[int],
    attention_levels: Sequence[bool],
    layers_per_block: int = 2,
    condition_channels: int = 1,
    norm_num_groups: int = 32,
    dropout: float = 0.0,
    seed: int | None = None,
) -> UNetBaseline:
    """U-Net taking a ``condition_channels`` mask (its only input) to a 1-channel DRR."""
    # build_ncsnpp adds 1 input channel for the noisy image; the baseline has none.
    backbone = build_ncsnpp(
        image_size,
        block_out_channels,
        attention_levels,
        layers_per_block=layers_per_block,
        condition_channels=condition_channels - 1,
        norm_num_groups=norm_num_groups,
        dropout=dropout,
        seed=seed,
    )
    return UNetBaseline(backbone)
