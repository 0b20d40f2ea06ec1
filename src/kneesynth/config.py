"""Config validation with one-line errors that name the config file and the key."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

from kneesynth.errors import InputError


def _key_path(path: Iterable[Any]) -> str:
    parts = [str(part) for part in path]
    return ".".join(parts) if parts else "(top level)"


def validate_config(
    config: Mapping[str, Any], schema_path: str | os.PathLike[str], config_files: Iterable[str] = ()
) -> None:
    """Validate ``config`` against the JSON schema (YAML) at ``schema_path``.

    Uses Snakemake's ``validate`` (which also fills in schema defaults); on failure raises
    :class:`InputError` naming the config file(s) and the first offending key in one line, e.g.
    ``config/config.yaml: study_a.batch_size: 'sixteen' is not of type 'integer'``.
    """
    import jsonschema
    from snakemake.exceptions import WorkflowError
    from snakemake.utils import validate

    where = ", ".join(str(f) for f in config_files) or "config"
    try:
        validate(config, str(schema_path))
    except WorkflowError:
        schema = yaml.safe_load(Path(schema_path).read_text())
        validator = jsonschema.Draft202012Validator(schema)
        error = jsonschema.exceptions.best_match(validator.iter_errors(dict(config)))
        if error is None:  # Snakemake failed for another reason: keep its message on one line
            raise
        message = error.message
        if error.validator == "additionalProperties":
            message = f"unknown key ({message})"
        raise InputError(where, f"{_key_path(error.absolute_path)}: {message}") from None
    probe = config.get("checks", {}).get("memorization_probe", {})
    ddpm = config.get("study_b", {}).get("generators", {}).get("ddpm", {})
    if probe.get("enabled") and not ddpm.get("base_steps"):
        raise InputError(
            where,
            "checks.memorization_probe.enabled needs study_b.generators.ddpm.base_steps > 0 "
            "(the probe is the shared DDPM base trained further on a few images; the base is "
            "its full-data twin)",
        )
