"""The checks' vocabulary and the papers' values of the checks (study C, Akbar et al.; the reader
study of Smits Serena et al.): read by the rules at parse time (wildcard values), the check
tables and the scorecard, so standard library only."""

#: the controls every check runs on: training images, real images nobody trained on, noise
CONTROLS = ("control_copy", "control_holdout", "control_noise")
#: the DDPM trained until it copies (and its twin trained on the full training split)
PROBE = "memorization_probe"
PROBE_FULL = "memorization_probe_full"

#: Smits Serena et al.: share of synthetic images the readers called synthetic, per generator
PAPER_DETECTION_RATE = {"ddpm_uncond": 0.167, "wgan": 0.625}

#: Akbar et al.: Dice of networks trained on synthetic images is 80-90 % of real-trained Dice
PAPER_DICE_RATIO = (0.80, 0.90)
PAPER_DICE_NOTE = (
    "Akbar et al.: 80-90 % of the Dice of real-trained networks (brain tumour MRI, U-Net/Swin)"
)


def study_a_model_condition(stem: str) -> tuple[str, str]:
    """``csm_contour`` -> (csm, contour); a control ``control_copy`` -> (control_copy, all)."""
    if stem in CONTROLS:
        return stem, "all"
    model, _, condition = stem.partition("_")
    return model, condition
