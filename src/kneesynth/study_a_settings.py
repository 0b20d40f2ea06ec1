"""Study A settings that the workflow reads at parse time (no torch import here)."""

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
