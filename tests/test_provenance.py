from kneesynth.report.provenance import config_hash, provenance_rows


def test_config_hash_ignores_key_order_but_not_values():
    assert config_hash({"a": 1, "b": {"c": 2}}) == config_hash({"b": {"c": 2}, "a": 1})
    assert config_hash({"a": 1}) != config_hash({"a": 2})


def test_provenance_lists_seeds_and_versions():
    rows = provenance_rows({"seed": 3, "study_b": {"classifiers": {"seeds": [0, 1]}}}, ["c.yaml"])
    table = {(r["category"], r["key"]): r["value"] for r in rows}
    assert table[("seed", "seed")] == "3"
    assert table[("seed", "study_b.classifiers.seeds")] == "[0, 1]"
    assert table[("library", "torch")].startswith("2.")
    assert table[("config", "config_files")] == "c.yaml"
