"""kneesynth: synthetic knee radiograph studies, reproduced end to end."""

__version__ = "0.1.0"
