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


# --- command-line overrides (snakemake --config) --------------------------------------------
def test_valid_override_keeps_numbers_numbers_and_the_other_keys():
    config = copy.deepcopy(_load("config/config.yaml"))
    config["projection"]["n_views"] = "60"  # what Snakemake's nested parsing leaves
    validate_config(
        config,
        SCHEMA,
        ["config/config.yaml"],
        ["projection={n_views: 60, mu_water_per_mm: 2e-2}", "seed=3"],
    )
    assert config["projection"]["n_views"] == 60 and isinstance(
        config["projection"]["n_views"], int
    )
    assert config["projection"]["mu_water_per_mm"] == 0.02
    assert (
        config["projection"]["detector_rows"]
        == _load("config/config.yaml")["projection"]["detector_rows"]
    )
    assert config["seed"] == 3


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (
            "projection={n_views: sixty}",
            "--config projection={n_views: sixty}: projection.n_views: 'sixty' is not of type "
            "'integer'",
        ),
        (
            "projection={n_veiws: 60}",
            "--config projection={n_veiws: 60}: projection: unknown key (Additional properties "
            "are not allowed ('n_veiws' was unexpected))",
        ),
        (
            "projection=sixty",
            "--config projection=sixty: projection: 'sixty' is not of type 'object'",
        ),
        (
            "projection={n_views: 60",
            "--config projection={n_views: 60: not valid YAML (expected ',' or '}', but got "
            "'<stream end>' at character 13)",
        ),
    ],
)
def test_bad_override_is_one_line_naming_the_override(override, message):
    config = copy.deepcopy(_load("config/config.yaml"))
    with pytest.raises(InputError) as error:
        validate_config(config, SCHEMA, ["config/config.yaml"], [override])
    assert str(error.value) == message
    assert "config/config.yaml" not in str(error.value)


def test_error_in_the_file_still_names_the_file_beside_an_override():
    config = copy.deepcopy(_load("config/config.yaml"))
    config["study_a"]["batch_size"] = "sixteen"
    with pytest.raises(InputError, match=r"^config/config.yaml: study_a.batch_size: 'sixteen'"):
        validate_config(config, SCHEMA, ["config/config.yaml"], ["projection={n_views: 60}"])


@pytest.mark.slow
def test_snakemake_accepts_a_nested_override_and_names_a_bad_one(tmp_path):
    def dry_run(override):
        return subprocess.run(
            [sys.executable, "-m", "snakemake", "-n", "--cores", "1", "--config", override],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=300,
        )

    good = dry_run("projection={n_views: 60}")
    assert good.returncode == 0, good.stderr
    bad = dry_run("projection={n_views: sixty}")
    assert bad.returncode != 0
    errors = [line for line in bad.stderr.splitlines() if line.startswith("kneesynth: error:")]
    assert errors == [
        "kneesynth: error: --config projection={n_views: sixty}: projection.n_views: 'sixty' "
        "is not of type 'integer'"
    ], bad.stderr


def test_memorization_probe_needs_the_shared_base():
    config = copy.deepcopy(_load("config/config.yaml"))
    config["study_b"]["generators"]["ddpm"]["base_steps"] = 0
    with pytest.raises(InputError, match="memorization_probe.enabled needs .*base_steps > 0"):
        validate_config(config, SCHEMA, ["config/config.yaml"])
    config["checks"]["memorization_probe"]["enabled"] = False
    validate_config(config, SCHEMA, ["config/config.yaml"])
