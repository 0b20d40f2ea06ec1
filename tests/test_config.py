"""The config files: valid against the schema, every key documented, one-line errors."""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from kneesynth.config import validate_config
from kneesynth.errors import InputError

REPO = Path(__file__).resolve().parents[1]
SCHEMA = REPO / "workflow" / "schemas" / "config.schema.yaml"
CONFIGS = ["config/config.yaml", "config/paper.yaml"]


def _load(name):
    return yaml.safe_load((REPO / name).read_text())


def _leaf_keys(mapping, prefix=""):
    for key, value in mapping.items():
        if isinstance(value, dict) and value:
            yield from _leaf_keys(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}"


@pytest.mark.parametrize("name", CONFIGS)
def test_shipped_configs_are_valid(name):
    validate_config(_load(name), SCHEMA, [name])


@pytest.mark.parametrize("name", CONFIGS)
def test_every_key_is_documented(name):
    documented = (REPO / "config" / "README.md").read_text()

    def named(key):  # a table row names the key by a dotted tail: `n_views`, `oai.visits`
        parts = key.split(".")
        return any(f"`{'.'.join(parts[i:])}`" in documented for i in range(len(parts)))

    missing = [key for key in _leaf_keys(_load(name)) if not named(key)]
    assert not missing, f"keys of {name} missing from config/README.md: {missing}"


def test_both_configs_have_the_same_keys():
    assert set(_leaf_keys(_load("config/config.yaml"))) == set(
        _leaf_keys(_load("config/paper.yaml"))
    )


def test_unknown_key_is_one_line_naming_the_file_and_key():
    config = copy.deepcopy(_load("config/config.yaml"))
    config["study_a"]["sigma_maxx"] = 10
    with pytest.raises(InputError) as error:
        validate_config(config, SCHEMA, ["config/config.yaml"])
    message = str(error.value)
    assert "\n" not in message
    assert message.startswith("config/config.yaml: study_a: unknown key")
    assert "sigma_maxx" in message


def test_wrong_type_is_one_line_naming_the_key():
    config = copy.deepcopy(_load("config/config.yaml"))
    config["projection"]["n_views"] = "sixty"
    with pytest.raises(
        InputError, match=r"^config/config.yaml: projection.n_views: 'sixty' is not"
    ):
        validate_config(config, SCHEMA, ["config/config.yaml"])


@pytest.mark.slow
def test_snakemake_stops_with_one_line_on_a_bad_config(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("seed: -3\n")
    run = subprocess.run(
        [sys.executable, "-m", "snakemake", "-n", "--cores", "1", "--configfile", str(bad)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode != 0
    errors = [line for line in run.stderr.splitlines() if line.startswith("kneesynth: error:")]
    assert len(errors) == 1, run.stderr
    assert "seed: -3 is less than the minimum of 0" in errors[0]
    assert not (REPO / "results" / "bad").exists()


def test_memorization_probe_needs_the_shared_base():
    config = copy.deepcopy(_load("config/config.yaml"))
    config["study_b"]["generators"]["ddpm"]["base_steps"] = 0
    with pytest.raises(InputError, match="memorization_probe.enabled needs .*base_steps > 0"):
        validate_config(config, SCHEMA, ["config/config.yaml"])
    config["checks"]["memorization_probe"]["enabled"] = False
    validate_config(config, SCHEMA, ["config/config.yaml"])
