"""Study B (workflow/rules/study_b.smk, classifiers.smk): the DDPM and WGAN-GP generators,
class-balanced synthetic sets, FID/KID, the KL classifiers and their metrics.

Empty on purpose: table and figure jobs import only the submodules they use (no torch)."""
