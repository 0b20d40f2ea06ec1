"""Provenance of a run: config hash, code version, seeds and library versions."""

from __future__ import annotations

import hashlib
import json
import platform
import subprocess
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

LIBRARIES = (
    "kneesynth",
    "torch",
    "diffusers",
    "monai",
    "astra-toolbox",
    "snakemake",
    "snakemake-executor-plugin-slurm",
    "numpy",
    "scipy",
    "pandas",
    "scikit-learn",
    "statsmodels",
    "pydicom",
    "SimpleITK",
    "nibabel",
    "matplotlib",
)


def config_hash(config: Mapping[str, Any]) -> str:
    """SHA-256 of the config as canonical JSON (key order does not matter)."""
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()


def code_version(repo: str | Path = ".") -> str:
    """``git describe`` of the repo (``-dirty`` when it has uncommitted changes), else the package version."""
    try:
        described = subprocess.run(
            ["git", "describe", "--always", "--dirty", "--tags"],
            cwd=repo,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        if described:
            return described
    except (OSError, subprocess.SubprocessError):
        pass
    return f"kneesynth {library_version('kneesynth')} (no git)"


def library_version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def _seeds(config: Mapping[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    """Every key named like a seed anywhere in the config, with its dotted path."""
    found = []
    for key, value in config.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping):
            found.extend(_seeds(value, path + "."))
        elif "seed" in str(key).lower():
            found.append((path, value))
    return found


def gpu_name() -> str:
    """The first GPU's name as ``nvidia-smi`` reports it, else ``not available`` (asked of the
    driver: importing torch would make this table job slower than its work)."""
    try:
        listing = subprocess.run(
            ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return "not available"
    names = [line.strip() for line in listing.splitlines() if line.strip()]
    return names[0] if names else "not available"


def provenance_rows(
    config: Mapping[str, Any], config_files: list[str], repo: str | Path = "."
) -> list[dict[str, str]]:
    """Rows (category, key, value) describing how the results were made."""
    rows = [
        {"category": "config", "key": "config_sha256", "value": config_hash(config)},
        {"category": "config", "key": "config_files", "value": ", ".join(config_files) or "(none)"},
        {"category": "code", "key": "code_version", "value": code_version(repo)},
        {"category": "platform", "key": "python", "value": platform.python_version()},
        {
            "category": "platform",
            "key": "machine",
            "value": f"{platform.system()} {platform.machine()}",
        },
        {
            "category": "platform",
            "key": "cuda",
            "value": gpu_name(),
        },
    ]
    rows += [{"category": "seed", "key": key, "value": str(value)} for key, value in _seeds(config)]
    rows += [
        {"category": "library", "key": name, "value": library_version(name)} for name in LIBRARIES
    ]
    return rows
