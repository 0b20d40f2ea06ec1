"""Study A (workflow/rules/study_a.smk): DRR dataset, score models and U-Net training, sampling,
MAE/PSNR evaluation, Table I, the paired tests and Fig. 3.

Empty on purpose: table and figure jobs import only the submodules they use (no torch)."""
