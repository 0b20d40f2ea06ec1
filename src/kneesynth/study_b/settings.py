"""Study B's vocabulary: the generators, their samplers and the classification tasks. The rules
read these for their wildcard values at parse time, so this module is standard library only."""

#: the generators of the paper (the {generator} wildcard)
GENERATORS = ("ddpm_uncond", "ddpm_cond", "wgan")
#: the paper's names of the generators (figure titles)
GENERATOR_LABELS = {"wgan": "WGAN", "ddpm_uncond": "Diff-Unco", "ddpm_cond": "Diff-Cond"}
# one unconditional DDPM each: the shared base (the probe's full-data twin) and the probe
UNCONDITIONAL_DDPMS = ("ddpm_base", "memorization_probe")
#: diffusers schedulers a DDPM can sample with
SAMPLERS = ("ancestral", "ddim", "dpmsolver++")

#: class labels of each classification task (target values)
TASK_CLASSES: dict[str, tuple[int, ...]] = {"kl5": (0, 1, 2, 3, 4), "kl_binary": (0, 1)}
#: human-readable class names (axis labels of confusion matrices)
TASK_CLASS_NAMES: dict[str, tuple[str, ...]] = {
    "kl5": ("KL0", "KL1", "KL2", "KL3", "KL4"),
    "kl_binary": ("KL<2", "KL>=2"),
}

#: Smits Serena et al. (DKOU 2025 abstract): accuracy of the classifier trained on real
#: images and on real + DDPM images. The abstract does not say 5-class or binary, nor which
#: DDPM (unconditional or conditional) gave 83.0 %; we put the values beside both tasks and
#: both DDPM arms and say so in the table's note.
PAPER_ACCURACY: dict[str, float] = {
    "real": 0.813,
    "real+ddpm_uncond": 0.830,
    "real+ddpm_cond": 0.830,
}
#: the abstract's p-values of the augmented arm against ``real`` (as printed)
PAPER_P_VALUE: dict[str, str] = {
    "real+ddpm_uncond": "<0.01",
    "real+ddpm_cond": "<0.01",
    "real+wgan": "~0.15",
}
