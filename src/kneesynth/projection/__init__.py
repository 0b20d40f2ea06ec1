"""Projection stage (workflow/rules/drr.smk, segmentation.smk): digitally reconstructed
radiographs from CT volumes, and their contour and bone segmentations."""
