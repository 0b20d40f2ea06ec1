"""The papers' values of the checks (study C, Akbar et al.; the reader study of Smits Serena et
al.), read by the check tables and the scorecard: standard library only."""

#: Smits Serena et al.: share of synthetic images the readers called synthetic, per generator
PAPER_DETECTION_RATE = {"ddpm_uncond": 0.167, "wgan": 0.625}

#: Akbar et al.: Dice of networks trained on synthetic images is 80-90 % of real-trained Dice
PAPER_DICE_RATIO = (0.80, 0.90)
PAPER_DICE_NOTE = (
    "Akbar et al.: 80-90 % of the Dice of real-trained networks (brain tumour MRI, U-Net/Swin)"
)
