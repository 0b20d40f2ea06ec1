"""Config validation with one-line errors that name the config file (or override) and the key.

Values given on the command line (``snakemake --config 'projection={n_views: 60}'``) reach the
workflow as Snakemake parsed them: a top-level value that reads as a number is a number, but
Snakemake reads nested values with YAML's ``BaseLoader``, which keeps every scalar a string
(``'60'``). :func:`validate_config` reads them again as YAML, as in a config file, so numbers
stay numbers; an error in an override names the override, not ``config/config.yaml``.

Snakemake itself refuses a dotted key (``--config projection.n_views=60``) with a traceback
before any workflow code runs; nested keys are written as YAML, as above.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping, MutableMapping
from pathlib import Path
from typing import Any

import yaml

from kneesynth.errors import InputError


def _key_path(path: Iterable[Any]) -> str:
    parts = [str(part) for part in path]
    return ".".join(parts) if parts else "(top level)"


#: Floats that YAML 1.1 (PyYAML) reads as text: ``1e-3`` needs ``1.0e-3`` there.
_SHORT_FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


def _numbers(value: Any) -> Any:
    """``value`` with every string that is a float in exponent form (``1e-3``) made a float."""
    if isinstance(value, Mapping):
        return {key: _numbers(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_numbers(item) for item in value]
    if isinstance(value, str) and _SHORT_FLOAT.fullmatch(value.strip()):
        return float(value)
    return value


def command_line_overrides(config_args: Iterable[str] | None) -> list[tuple[str, str, Any]]:
    """``(top-level key, argument, value)`` of each Snakemake ``--config key=value`` argument.

    Values are read as YAML, as in a config file (``{n_views: 60}`` -> ``{'n_views': 60}``,
    ``'1e-3'`` -> 0.001); an empty value is None, as Snakemake makes it. A value that starts like a YAML mapping or list but is not valid YAML
    raises :class:`InputError` naming the argument.
    """
    overrides: list[tuple[str, str, Any]] = []
    for argument in config_args or ():
        key, separator, text = str(argument).partition("=")
        if not separator:
            continue  # Snakemake has refused it already
        name = f"--config {argument}"
        try:
            value = None if text == "" else _numbers(yaml.safe_load(text))
        except yaml.YAMLError as error:
            if text.strip().startswith(("{", "[")):
                problem = getattr(error, "problem", None) or " ".join(str(error).split())
                mark = getattr(error, "problem_mark", None)
                if mark is not None:
                    problem = f"{problem} at character {mark.column + 1}"
                raise InputError(name, f"not valid YAML ({problem})") from None
            value = text  # plain text, as Snakemake takes it
        overrides.append((key, name, value))
    return overrides


def _merge(target: MutableMapping[str, Any], update: Mapping[str, Any]) -> None:
    """Snakemake's ``update_config``: mappings merge key by key, other values replace."""
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(target.get(key), MutableMapping):
            _merge(target[key], value)
        else:
            target[key] = value


def _overridden(value: Any, path: list[Any]) -> bool:
    """Whether the key at ``path`` (below the override's top-level key) is in ``value``."""
    for part in path:
        if not isinstance(value, Mapping) or part not in value:
            return False
        value = value[part]
    return True


def _blame(error: Any, overrides: list[tuple[str, str, Any]], where: str) -> str:
    """The config file(s) or the ``--config`` argument that holds the offending key."""
    path = list(error.absolute_path)
    candidates = [path]
    if error.validator == "additionalProperties" and isinstance(error.instance, Mapping):
        known = error.schema.get("properties", {})
        candidates = [[*path, key] for key in error.instance if key not in known]
    for key, name, value in reversed(overrides):  # the last one given wins, as in Snakemake
        for candidate in candidates:
            if candidate and candidate[0] == key and _overridden(value, candidate[1:]):
                return name
    return where


def validate_config(
    config: MutableMapping[str, Any],
    schema_path: str | os.PathLike[str],
    config_files: Iterable[str] = (),
    overrides: Iterable[str] | None = (),
) -> None:
    """Validate ``config`` against the JSON schema (YAML) at ``schema_path``.

    ``overrides`` are Snakemake's raw ``--config`` arguments (``workflow.config_settings.
    config_args``): their values are first read again as YAML into ``config`` (in place), so
    that ``--config 'projection={n_views: 60}'`` gives the integer 60. Uses Snakemake's
    ``validate`` (which also fills in schema defaults); on failure raises :class:`InputError`
    naming the config file(s), or the override that holds the key, and the first offending key
    in one line, e.g. ``config/config.yaml: study_a.batch_size: 'sixteen' is not of type
    'integer'`` or ``--config projection={n_views: sixty}: projection.n_views: 'sixty' is not
    of type 'integer'``.
    """
    import jsonschema  # heavy (jsonschema): imported on use
    from snakemake.exceptions import WorkflowError  # heavy (snakemake): imported on use
    from snakemake.utils import validate  # heavy (snakemake): imported on use

    parsed = command_line_overrides(overrides)
    for key, _, value in parsed:
        _merge(config, {key: value})
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
        raise InputError(
            _blame(error, parsed, where), f"{_key_path(error.absolute_path)}: {message}"
        ) from None
    probe = config.get("checks", {}).get("memorization_probe", {})
    ddpm = config.get("study_b", {}).get("generators", {}).get("ddpm", {})
    if probe.get("enabled") and not ddpm.get("base_steps"):
        raise InputError(
            where,
            "checks.memorization_probe.enabled needs study_b.generators.ddpm.base_steps > 0 "
            "(the probe is the shared DDPM base trained further on a few images; the base is "
            "its full-data twin)",
        )
