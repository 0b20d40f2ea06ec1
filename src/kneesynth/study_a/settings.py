"""Study A's vocabulary, settings and the paper's Table I: read at parse time by the rules
(wildcard values) and by the scorecard, so standard library only."""

# the rules' {model} and {condition} wildcards take these values
CONDITIONS = ("contour", "contour_bone")
MODELS = ("unet", "csm", "ctm")  # the column order of Table I and Fig. 3
MODEL_LABELS = {"unet": "U-Net", "csm": "CSM", "ctm": "CTM"}
CONDITION_LABELS = {"contour": "contour", "contour_bone": "contour + bone"}

# config keys a trained model depends on: a checkpoint made with others is not resumed, and
# the training rules get only these (so a sampler setting does not retrain the models)
TRAINING_KEYS = (
    "seed",
    "image_size",
    "network",
    "sigma_min",
    "sigma_max",
    "batch_size",
    "lr",
    "epochs",
    "steps",
    "ema_decay",
    "grad_clip",
)

# Table I of Mei et al.: (model, condition, metric) -> (mean, std)
PAPER_TABLE1: dict[tuple[str, str, str], tuple[float, float]] = {
    ("unet", "contour", "mae"): (0.0209, 0.007),
    ("unet", "contour_bone", "mae"): (0.0188, 0.006),
    ("unet", "contour", "psnr"): (29.188, 2.22),
    ("unet", "contour_bone", "psnr"): (30.304, 2.45),
    ("csm", "contour", "mae"): (0.0395, 0.010),
    ("csm", "contour_bone", "mae"): (0.0507, 0.010),
    ("csm", "contour", "psnr"): (22.911, 1.89),
    ("csm", "contour_bone", "psnr"): (21.350, 1.49),
    ("ctm", "contour", "mae"): (0.0193, 0.005),
    ("ctm", "contour_bone", "mae"): (0.0152, 0.007),
    ("ctm", "contour", "psnr"): (29.498, 1.91),
    ("ctm", "contour_bone", "psnr"): (31.680, 1.76),
}
