"""NCSN++ score network (Song et al. 2021) built from diffusers' ``UNet2DModel``.

diffusers' NCSN++ skip blocks (``SkipDownBlock2D``, ``AttnSkipDownBlock2D``, ``SkipUpBlock2D``,
``AttnSkipUpBlock2D``) hard-code 3 image channels in their progressive input/output skip
convolutions. :func:`build_ncsnpp` builds the diffusers model and rebuilds exactly those
convolutions for ``in_channels`` input (1: CSM, 2: CTM = noisy DRR + mask) and ``out_channels``
output (1: a DRR score), so every other weight and the forward pass stay diffusers'.

Score parameterisation: with ``time_embedding_type="fourier"`` diffusers feeds ``log(sigma)`` to
Gaussian Fourier features and divides the network output by ``sigma`` (Song et al.'s
``scale_by_sigma``), so ``model(x, sigma) = s(x, sigma) ~ -z / sigma`` for ``x = x0 + sigma z``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
from torch import nn

if TYPE_CHECKING:
    from diffusers import UNet2DModel

__all__ = ["NCSNpp", "build_ncsnpp", "block_types"]


def block_types(attention_levels: Sequence[bool]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Down and up block names for NCSN++ levels (finest first); attention where True."""
    down = tuple("AttnSkipDownBlock2D" if a else "SkipDownBlock2D" for a in attention_levels)
    up = tuple("AttnSkipUpBlock2D" if a else "SkipUpBlock2D" for a in reversed(attention_levels))
    return down, up


def _rebuild_skip_convolutions(model: UNet2DModel, in_channels: int, out_channels: int) -> None:
    """Replace diffusers' 3-channel progressive skip convolutions by ones of the right width."""
    for block in model.down_blocks:
        conv = getattr(block, "skip_conv", None)
        if conv is not None:
            block.skip_conv = nn.Conv2d(in_channels, conv.out_channels, kernel_size=1)
    for block in model.up_blocks:
        conv = getattr(block, "skip_conv", None)
        if conv is not None:
            block.skip_conv = nn.Conv2d(conv.in_channels, out_channels, kernel_size=3, padding=1)


class NCSNpp(nn.Module):
    """Score network ``s(x, sigma)``.

    ``forward(x, sigma, condition=None)``: x (B, 1, H, W) noisy DRR, sigma (B,) noise levels > 0,
    condition (B, C, H, W) segmentation mask or None -> score (B, 1, H, W).
    The mask is concatenated to the noisy image along the channels (CTM).
    """

    def __init__(self, unet: UNet2DModel, condition_channels: int = 0):
        super().__init__()
        self.unet = unet
        self.condition_channels = condition_channels

    def forward(
        self, x: torch.Tensor, sigma: torch.Tensor, condition: torch.Tensor | None = None
    ) -> torch.Tensor:
        if self.condition_channels:
            if condition is None:
                raise ValueError("this score model is conditional: pass the segmentation mask")
            x = torch.cat([x, condition.to(x.dtype)], dim=1)
        elif condition is not None:
            raise ValueError("this score model is unconditional: condition must be None")
        sigma = torch.as_tensor(sigma, dtype=torch.float32, device=x.device).reshape(-1)
        if sigma.numel() == 1:
            sigma = sigma.expand(x.shape[0])
        return self.unet(x, sigma, return_dict=False)[0]


def build_ncsnpp(
    image_size: int,
    block_out_channels: Sequence[int],
    attention_levels: Sequence[bool],
    layers_per_block: int = 2,
    condition_channels: int = 0,
    norm_num_groups: int = 32,
    dropout: float = 0.0,
    seed: int | None = None,
) -> NCSNpp:
    """NCSN++ for 1-channel DRRs (+ ``condition_channels`` mask channels at the input).

    ``block_out_channels``: one entry per resolution level, finest first (paper: six levels
    256..8 with (64, 128, 128, 128, 128, 256)). ``attention_levels``: self-attention per level
    (paper / score_sde: at 16 x 16). Attention layers need channels divisible by 32
    (diffusers' fixed GroupNorm of 32 groups there). ``seed`` makes the initialisation
    reproducible.
    """
    if len(attention_levels) != len(block_out_channels):
        raise ValueError("attention_levels needs one entry per level of block_out_channels")
    # imported here, not with the module: diffusers costs seconds that the jobs which only
    # read study A's data do not need to pay (the submodule spares its lazy-module lookup)
    from diffusers.models.unets.unet_2d import UNet2DModel

    down, up = block_types(attention_levels)
    in_channels = 1 + condition_channels
    if seed is not None:
        torch.manual_seed(seed)
    unet = UNet2DModel(
        sample_size=image_size,
        in_channels=in_channels,
        out_channels=1,
        time_embedding_type="fourier",
        down_block_types=down,
        up_block_types=up,
        block_out_channels=tuple(block_out_channels),
        layers_per_block=layers_per_block,
        mid_block_scale_factor=2**0.5,
        norm_num_groups=norm_num_groups,
        norm_eps=1e-6,
        attention_head_dim=None,
        dropout=dropout,
        act_fn="silu",
        downsample_padding=1,
    )
    _rebuild_skip_convolutions(unet, in_channels, 1)
    return NCSNpp(unet, condition_channels)
