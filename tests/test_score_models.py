"""NCSN++ (diffusers, rebuilt skip convolutions), U-Net baseline, VE SDE and the DSM loss."""

import math

import pytest
import torch

from kneesynth.score.losses import dsm_loss, l1_loss
from kneesynth.score.ncsnpp import block_types, build_ncsnpp
from kneesynth.score.sde import VESDE
from kneesynth.score.unet_baseline import build_unet_baseline

torch.set_num_threads(1)
TINY = {
    "block_out_channels": (8, 8, 16),
    "attention_levels": (False, False, False),
    "layers_per_block": 1,
    "norm_num_groups": 4,
}


@pytest.mark.parametrize("condition_channels", [0, 1])
def test_ncsnpp_shapes_and_skip_convolutions(condition_channels):
    net = build_ncsnpp(16, condition_channels=condition_channels, seed=0, **TINY)
    in_channels = 1 + condition_channels
    assert net.unet.conv_in.in_channels == in_channels
    downs = [b.skip_conv for b in net.unet.down_blocks if b.skip_conv is not None]
    ups = [b.skip_conv for b in net.unet.up_blocks if getattr(b, "skip_conv", None) is not None]
    assert downs and ups
    assert all(conv.in_channels == in_channels for conv in downs)
    assert all(conv.out_channels == 1 for conv in ups)
    x = torch.randn(3, 1, 16, 16)
    condition = torch.rand(3, 1, 16, 16) if condition_channels else None
    score = net(x, torch.tensor([0.1, 1.0, 10.0]), condition)
    assert score.shape == (3, 1, 16, 16) and torch.isfinite(score).all()


def test_attention_block_types_and_paper_network():
    down, up = block_types((False, False, False, False, True, False))
    assert down[4] == "AttnSkipDownBlock2D" and up[1] == "AttnSkipUpBlock2D"
    assert down[0] == "SkipDownBlock2D" and up[-1] == "SkipUpBlock2D"
    net = build_ncsnpp(
        32, (32, 32), (False, True), layers_per_block=1, condition_channels=1, norm_num_groups=8
    )
    assert net(torch.randn(1, 1, 32, 32), torch.tensor([1.0]), torch.zeros(1, 1, 32, 32)).shape == (
        1,
        1,
        32,
        32,
    )


def test_output_is_divided_by_sigma():
    """diffusers' Fourier UNet2DModel divides by the noise level (Song et al.'s scale_by_sigma):
    with the noise features frozen, sigma * score no longer depends on sigma."""
    net = build_ncsnpp(16, seed=0, **TINY).eval()
    embedding = net.unet.time_proj(torch.ones(2))

    class Frozen(torch.nn.Module):
        def forward(self, timesteps):
            return embedding[: timesteps.shape[0]]

    net.unet.time_proj = Frozen()
    x = torch.randn(2, 1, 16, 16)
    with torch.no_grad():
        at_1 = net(x, torch.tensor([1.0, 1.0]))
        at_4 = net(x, torch.tensor([4.0, 4.0]))
    torch.testing.assert_close(4.0 * at_4, at_1)
    assert not torch.allclose(at_4, at_1)


def test_conditioning_is_checked():
    conditional = build_ncsnpp(16, condition_channels=1, seed=0, **TINY)
    with pytest.raises(ValueError, match="conditional"):
        conditional(torch.randn(1, 1, 16, 16), torch.tensor([1.0]))
    unconditional = build_ncsnpp(16, seed=0, **TINY)
    with pytest.raises(ValueError, match="unconditional"):
        unconditional(torch.randn(1, 1, 16, 16), torch.tensor([1.0]), torch.zeros(1, 1, 16, 16))


def test_same_seed_same_initialisation():
    a = build_ncsnpp(16, seed=3, **TINY).state_dict()
    b = build_ncsnpp(16, seed=3, **TINY).state_dict()
    c = build_ncsnpp(16, seed=4, **TINY).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_vesde_matches_song_et_al():
    sde = VESDE(0.01, 128.0)
    assert float(sde.sigma(0.0)) == pytest.approx(0.01)
    assert float(sde.sigma(1.0)) == pytest.approx(128.0, rel=1e-5)
    assert float(sde.t_of_sigma(sde.sigma(0.3))) == pytest.approx(0.3, rel=1e-5)
    expected_g = float(sde.sigma(0.5)) * math.sqrt(2 * math.log(12800))
    assert float(sde.diffusion(0.5)) == pytest.approx(expected_g, rel=1e-5)
    with pytest.raises(ValueError):
        VESDE(1.0, 0.5)


def test_dsm_loss_of_the_exact_score():
    """For N(mu, s0^2) data the exact score gives E_t[s0^2 / (s0^2 + sigma(t)^2)]."""
    mu, s0 = 0.3, 0.2
    sde = VESDE(0.01, 10.0)

    def exact(x, sigma, condition=None):
        return -(x - mu) / (s0**2 + sigma.view(-1, 1, 1, 1) ** 2)

    generator = torch.Generator().manual_seed(0)
    drr = mu + s0 * torch.randn(4096, 1, 2, 2, generator=generator)
    loss = float(dsm_loss(exact, sde, drr, generator))
    t = torch.linspace(1e-5, 1, 100001)
    expected = float((s0**2 / (s0**2 + sde.sigma(t) ** 2)).mean())
    assert loss == pytest.approx(expected, rel=0.05)
    wrong = float(dsm_loss(lambda x, s, c=None: -exact(x, s), sde, drr, generator))
    assert wrong > 2 * loss


def test_unet_baseline_and_l1():
    unet = build_unet_baseline(16, condition_channels=1, seed=0, **TINY)
    mask = torch.rand(2, 1, 16, 16)
    out = unet(mask)
    assert out.shape == (2, 1, 16, 16)
    loss = l1_loss(unet, mask, torch.zeros(2, 1, 16, 16))
    assert float(loss.detach()) == pytest.approx(float(out.detach().abs().mean()))
    loss.backward()
    assert unet.backbone.unet.conv_in.weight.grad is not None
