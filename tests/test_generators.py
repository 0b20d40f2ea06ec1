"""Study B generators: manifest reading, DDPM (uncond/cond) and WGAN-GP training and sampling,
resume after a kill."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pandas as pd
import pytest
import torch

from kneesynth.data.images import load_images
from kneesynth.data.manifest import read_oai_manifest
from kneesynth.errors import InputError
from kneesynth.study_b.ddpm import build_unet, sample_ddpm, scheduler_settings, unet_settings
from kneesynth.study_b.generators import sample_generator, train_generator
from kneesynth.study_b.wgan import WganCritic, WganGenerator
from kneesynth.training import load_weights

torch.set_num_threads(1)
SIZE = 16


@pytest.fixture
def tiny_oai(tiny_oai):
    """The shared tiny OAI set: grade g has a joint gap of 6 - g pixels."""

    def write(folder, per_grade=(3, 3, 3, 3, 3), participant="P-9000001", size=SIZE):
        def draw(rng, grade):
            image = rng.integers(0, 40, (size, size)).astype(np.uint8)
            gap = 6 - grade
            image[: size // 2 - gap // 2] += 150
            image[size // 2 + (gap + 1) // 2 :] += 150
            return image

        return tiny_oai(
            folder,
            draw,
            per_grade=per_grade,
            path=f"oai/{{split}}/{{grade}}/{participant}_{{grade}}_{{i}}.png",
            participant=f"{participant}{{split}}{{i}}",
        )

    return write


def tiny_config(steps=3):
    return {
        "image_size": SIZE,
        "ddpm": {
            "num_train_timesteps": 50,
            "beta_schedule": "linear",
            "block_out_channels": [8, 16],
            "layers_per_block": 1,
            "attention": False,
            "norm_num_groups": 4,
            "batch_size": 4,
            "learning_rate": 1e-3,
            "ema_decay": 0.9,
            "checkpoint_every": 2,
        },
        "ddpm_uncond": {"steps": steps},
        "ddpm_cond": {"steps": steps, "guidance_scale": 0.0, "label_dropout": 0.1},
        "wgan": {
            "latent_dim": 8,
            "channels": 8,
            "max_channels": 32,
            "steps": steps,
            "batch_size": 4,
            "n_critic": 2,
            "gradient_penalty": 10.0,
            "learning_rate": 1e-4,
            "betas": [0.0, 0.9],
            "checkpoint_every": 2,
        },
    }


SAMPLING = {"sampler": "ddim", "inference_steps": 4, "batch_size": 8}


def test_read_manifest_rejects_bad_grade(tiny_oai, tmp_path):
    manifest = tiny_oai(tmp_path)
    frame = pd.read_csv(manifest, sep="\t")
    frame.loc[2, "kl_grade"] = 7
    frame.to_csv(manifest, sep="\t", index=False)
    with pytest.raises(InputError, match=f"{manifest}: kl_grade must be an integer 0-4"):
        read_oai_manifest(manifest)


def test_read_manifest_missing_column(tmp_path):
    manifest = tmp_path / "m.tsv"
    pd.DataFrame({"image": ["a.png"], "kl_grade": [1]}).to_csv(manifest, sep="\t", index=False)
    with pytest.raises(InputError, match="missing column"):
        read_oai_manifest(manifest)


def test_load_images_names_missing_file(tmp_path):
    missing = tmp_path / "nope.png"
    with pytest.raises(InputError, match=f"{missing}: image file not found"):
        load_images([missing], SIZE)


def test_load_images_resizes(tiny_oai, tmp_path):
    manifest = tiny_oai(tmp_path)
    frame = read_oai_manifest(manifest, split="train")
    images = load_images(frame["image"][:2], 8)
    assert images.shape == (2, 8, 8) and images.dtype == np.uint8


def test_conditional_unet_has_null_class():
    ddpm = tiny_config()["ddpm"]
    assert unet_settings(ddpm, SIZE, conditional=True)["num_class_embeds"] == 6
    assert "num_class_embeds" not in unet_settings(ddpm, SIZE, conditional=False)
    with pytest.raises(ValueError, match="not divisible"):
        unet_settings({**ddpm, "block_out_channels": [8, 8, 8, 8, 8]}, 20, conditional=False)


@pytest.mark.parametrize("sampler", ["ancestral", "ddim", "dpmsolver++"])
def test_sample_ddpm_per_image_seed(sampler):
    torch.manual_seed(0)
    ddpm = tiny_config()["ddpm"]
    unet = build_unet(unet_settings(ddpm, SIZE, conditional=True)).eval()
    scheduler = scheduler_settings(ddpm)
    together = sample_ddpm(unet, scheduler, sampler, 5, [11, 12, 13], [0, 2, 4], 1.5)
    alone = sample_ddpm(unet, scheduler, sampler, 5, [12], [2], 1.5)
    assert together.shape == (3, 1, SIZE, SIZE)
    assert together.abs().max() <= 1
    torch.testing.assert_close(together[1:2], alone, rtol=1e-4, atol=1e-5)
    assert not torch.allclose(together[0], together[2])
    unguided = sample_ddpm(unet, scheduler, sampler, 5, [12], [2], 0.0)
    assert not torch.allclose(unguided, alone)


def test_wgan_nets_shapes():
    for size, base in ((64, 4), (224, 7)):
        generator = WganGenerator(size, latent_dim=8, channels=4, max_channels=16)
        assert generator.base == base
        images = generator(torch.randn(2, 8), torch.tensor([0, 4]))
        assert images.shape == (2, 1, size, size)
        score = WganCritic(size, channels=4, max_channels=16)(images, torch.tensor([0, 4]))
        assert score.shape == (2,)


@pytest.mark.parametrize("name", ["ddpm_uncond", "ddpm_cond", "wgan"])
def test_train_and_sample_each_generator(tiny_oai, tmp_path, name):
    manifest = tiny_oai(tmp_path)
    weights = tmp_path / "models" / f"{name}.pt"
    train_generator(name, manifest, tiny_config(steps=2), weights, tmp_path / "state" / name, 7)
    state_dict, meta = load_weights(weights)
    assert meta["generator"] == name and meta["train_counts"] == {g: 3 for g in range(5)}
    if name == "ddpm_uncond":
        assert sorted(state_dict) == [f"kl{g}" for g in range(5)]
    grades, seeds = np.array([0, 4, 2, 4]), np.array([1, 2, 3, 2])
    images = sample_generator(weights, grades, seeds, SAMPLING)
    assert images.shape == (4, SIZE, SIZE) and images.dtype == np.uint8
    np.testing.assert_array_equal(images[1], images[3])  # same grade + seed -> same image
    again = sample_generator(weights, grades[:2], seeds[:2], {**SAMPLING, "batch_size": 1})
    np.testing.assert_array_equal(again, images[:2])


def test_ddpm_uncond_needs_every_grade(tiny_oai, tmp_path):
    manifest = tiny_oai(tmp_path, per_grade=(3, 3, 0, 3, 3))
    with pytest.raises(InputError, match=r"no training images of KL grade\(s\) \[2\]"):
        train_generator(
            "ddpm_uncond", manifest, tiny_config(), tmp_path / "u.pt", tmp_path / "s", 7
        )


def test_generators_never_see_validation_or_test_images(tiny_oai, tmp_path):
    manifest = tiny_oai(tmp_path)
    frame = pd.read_csv(manifest, sep="\t")
    frame.loc[frame["split"] != "train", "image"] = str(tmp_path / "missing.png")
    frame.to_csv(manifest, sep="\t", index=False)
    train_generator("wgan", manifest, tiny_config(steps=1), tmp_path / "w.pt", tmp_path / "s", 7)
    assert (tmp_path / "w.pt").exists()


RESUME_SCRIPT = textwrap.dedent(
    """
    import sys, json, torch
    torch.set_num_threads(1)
    from kneesynth.study_b.generators import train_generator
    manifest, config, output, state = sys.argv[1:5]
    train_generator("{name}", manifest, json.loads(config), output, state, 7)
    """
)


@pytest.mark.parametrize("name", ["wgan", "ddpm_cond"])
def test_killed_training_resumes_to_identical_weights(tiny_oai, tmp_path, name):
    import json

    manifest = tiny_oai(tmp_path)
    config = json.dumps(tiny_config(steps=5))
    script = RESUME_SCRIPT.format(name=name)

    def run(output, state, kill_at=None):
        env = {k: v for k, v in os.environ.items() if k != "KNEESYNTH_FAULT_KILL_AT_STEP"}
        if kill_at is not None:
            env["KNEESYNTH_FAULT_KILL_AT_STEP"] = str(kill_at)
        return subprocess.run(
            [sys.executable, "-c", script, str(manifest), config, str(output), str(state)],
            env=env,
            capture_output=True,
            text=True,
        )

    straight = run(tmp_path / "straight.pt", tmp_path / "state_straight")
    assert straight.returncode == 0, straight.stderr
    killed = run(tmp_path / "resumed.pt", tmp_path / "state_resumed", kill_at=4)
    assert killed.returncode == -9 and not (tmp_path / "resumed.pt").exists()
    resumed = run(tmp_path / "resumed.pt", tmp_path / "state_resumed")
    assert resumed.returncode == 0, resumed.stderr
    a, _ = load_weights(tmp_path / "straight.pt")
    b, _ = load_weights(tmp_path / "resumed.pt")
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, msg=key)


def test_prediction_targets_recover_the_clean_image():
    from kneesynth.study_b.ddpm import _target

    clean, noise = torch.randn(3, 1, 4, 4), torch.randn(3, 1, 4, 4)
    a_bar = torch.tensor([0.9, 0.5, 0.1]).view(-1, 1, 1, 1)
    noisy = a_bar.sqrt() * clean + (1 - a_bar).sqrt() * noise
    torch.testing.assert_close(_target("epsilon", clean, noise, a_bar), noise)
    torch.testing.assert_close(_target("sample", clean, noise, a_bar), clean)
    v = _target("v_prediction", clean, noise, a_bar)
    torch.testing.assert_close(a_bar.sqrt() * noisy - (1 - a_bar).sqrt() * v, clean)
    with pytest.raises(ValueError, match="unknown prediction_type"):
        _target("score", clean, noise, a_bar)


@pytest.mark.parametrize("prediction_type", ["v_prediction", "sample"])
def test_other_prediction_types_train_and_sample(tiny_oai, tmp_path, prediction_type):
    manifest = tiny_oai(tmp_path)
    config = tiny_config(steps=1)
    config["ddpm"]["prediction_type"] = prediction_type
    weights = tmp_path / "ddpm_cond.pt"
    train_generator("ddpm_cond", manifest, config, weights, tmp_path / "state", 7)
    assert load_weights(weights)[1]["scheduler"]["prediction_type"] == prediction_type
    for sampler in ("ancestral", "dpmsolver++"):
        images = sample_generator(weights, [1, 3], [5, 6], {**SAMPLING, "sampler": sampler})
        assert images.shape == (2, SIZE, SIZE)


def test_resume_state_is_removed_once_weights_are_written(tiny_oai, tmp_path):
    manifest = tiny_oai(tmp_path)
    state = tmp_path / "state" / "wgan"
    train_generator("wgan", manifest, tiny_config(steps=3), tmp_path / "w.pt", state, 7)
    assert (tmp_path / "w.pt").exists() and not state.exists()


def test_patched_unet_keeps_every_pixel():
    settings = unet_settings({**tiny_config()["ddpm"], "patch_size": 2}, SIZE, conditional=True)
    assert settings["sample_size"] == SIZE // 2 and settings["in_channels"] == 4
    net = build_unet(settings)
    x = torch.randn(3, 1, SIZE, SIZE)
    out = net(x, torch.tensor([1, 2, 3]), class_labels=torch.tensor([0, 1, 5])).sample
    assert out.shape == x.shape and net.config.sample_size == SIZE
    with pytest.raises(ValueError, match="not divisible"):
        unet_settings({**tiny_config()["ddpm"], "patch_size": 3}, SIZE, conditional=False)


def test_standardiser_round_trip_and_spread():
    from kneesynth.study_b.ddpm import destandardise, standardise, standardiser

    images = np.random.default_rng(0).integers(0, 256, (20, SIZE, SIZE)).astype(np.uint8)
    stats = standardiser(images)
    data = torch.from_numpy(images).float().div(127.5).sub(1).unsqueeze(1)
    z = standardise(data, stats)
    assert z.mean().abs() < 1e-5 and float(z.std()) == pytest.approx(0.5, rel=1e-3)
    torch.testing.assert_close(destandardise(z, stats), data)
    assert standardise(data, None) is data


def test_min_snr_weights():
    from kneesynth.study_b.ddpm import loss_weights

    a_bar = torch.tensor([0.999, 0.9, 0.5, 0.01])
    snr = a_bar / (1 - a_bar)
    torch.testing.assert_close(loss_weights(a_bar, "epsilon", None), torch.ones(4))
    eps = loss_weights(a_bar, "epsilon", 5.0)
    torch.testing.assert_close(eps, snr.clamp(max=5.0) / snr)
    assert eps[0] < 1 and eps[-1] == 1  # nearly clean steps weigh less, noisy ones fully
    torch.testing.assert_close(
        loss_weights(a_bar, "v_prediction", 5.0), snr.clamp(max=5.0) / (snr + 1)
    )


def standardised_config(steps=2):
    config = tiny_config(steps)
    config["ddpm"] = {**config["ddpm"], "standardise": True, "min_snr_gamma": 5.0,
                      "patch_size": 2, "base_steps": steps}  # fmt: skip
    return config


def test_generators_fine_tune_from_the_shared_base(tiny_oai, tmp_path):
    from kneesynth.study_b.generators import train_ddpm_base

    manifest = tiny_oai(tmp_path)
    config = standardised_config()
    base = tmp_path / "ddpm_base.pt"
    train_ddpm_base(manifest, config, base, tmp_path / "state_base", 7)
    base_weights, base_meta = load_weights(base)
    assert base_meta["generator"] == "ddpm_base" and "standardise" in base_meta
    assert base_meta["scheduler"]["clip_sample"] is False  # standardised data exceed [-1, 1]
    # zero fine-tuning steps: ddpm_cond is the base with a zero class embedding
    config["ddpm_cond"]["steps"] = 0
    cond = tmp_path / "ddpm_cond.pt"
    train_generator("ddpm_cond", manifest, config, cond, tmp_path / "s", 7, base_weights=base)
    weights, meta = load_weights(cond)
    assert meta["fine_tuned_from_base"]
    torch.testing.assert_close(meta["standardise"]["mean"], base_meta["standardise"]["mean"])
    for key, value in weights.items():
        if "class_embedding" in key:
            assert not value.any()
        else:
            torch.testing.assert_close(value, base_weights[key], msg=key)
    images = sample_generator(cond, [0, 4], [1, 2], SAMPLING)
    assert images.shape == (2, SIZE, SIZE)
    uncond = tmp_path / "ddpm_uncond.pt"
    train_generator("ddpm_uncond", manifest, config, uncond, tmp_path / "u", 7, base_weights=base)
    assert sorted(load_weights(uncond)[0]) == [f"kl{g}" for g in range(5)]
    with pytest.raises(InputError, match="not the shared DDPM base"):
        train_generator("ddpm_cond", manifest, config, cond, tmp_path / "x", 7, base_weights=uncond)


def test_memorization_probe_continues_the_base_on_a_few_images(tiny_oai, tmp_path):
    from kneesynth.study_b.generators import train_ddpm_base, train_memorization_probe

    manifest = tiny_oai(tmp_path)
    config = standardised_config()
    base = tmp_path / "ddpm_base.pt"
    train_ddpm_base(manifest, config, base, tmp_path / "state_base", 7)
    probe = {"train_images": 4, "steps": 2, "batch_size": 4}
    output = tmp_path / "memorization_probe.pt"
    train_memorization_probe(manifest, config, probe, output, tmp_path / "state", 7, base)
    weights, meta = load_weights(output)
    assert meta["generator"] == "memorization_probe" and len(meta["train_images"]) == 4
    train = pd.read_csv(manifest, sep="\t").query("split == 'train'")["image"]
    assert set(meta["train_images"]) <= set(train)
    base_weights = load_weights(base)[0]
    assert any(not torch.equal(weights[k], base_weights[k]) for k in weights)
    images = sample_generator(output, [0, 3], [1, 2], SAMPLING)
    assert images.shape == (2, SIZE, SIZE)
    with pytest.raises(InputError, match="99 training images wanted"):
        train_memorization_probe(
            manifest, config, {**probe, "train_images": 99}, output, tmp_path / "s1", 7, base
        )
    with pytest.raises(InputError, match="not the shared DDPM base"):
        train_memorization_probe(manifest, config, probe, output, tmp_path / "s2", 7, output)


def conv_weights(state_dict):
    return [v for k, v in state_dict.items() if v.dim() == 4]


@pytest.mark.parametrize("name", ["ddpm_cond", "wgan"])
def test_training_honours_the_compute_switches_deterministically(tiny_oai, tmp_path, name):
    """bf16 autocast and channels_last (as study A): two runs give the same weights on CPU,
    other numbers than fp32, channels-last convolution weights."""
    from kneesynth.study_b.ddpm import train_ddpms
    from kneesynth.study_b.wgan import train_wgan

    images = load_images(read_oai_manifest(tiny_oai(tmp_path), split="train")["image"], SIZE)
    grades = np.repeat(np.arange(5), 3)
    config = tiny_config(steps=2)
    switches = {"bf16": True, "channels_last": True, "compile": False}

    def train(state, compute=None):
        if name == "wgan":
            return train_wgan(
                images, grades, config["wgan"], SIZE, 7, tmp_path / state, compute=compute
            )
        ddpm = {**config["ddpm"], "steps": 2}
        weights = train_ddpms(
            {"all": (images, grades)}, ddpm, SIZE, 7, tmp_path / state, True, compute=compute
        )
        return weights["all"]

    first, second, plain = train("a", switches), train("b", switches), train("c")
    assert all(torch.equal(first[k], second[k]) for k in first)
    assert any(not torch.equal(first[k], plain[k]) for k in first)
    assert all(w.is_contiguous(memory_format=torch.channels_last) for w in conv_weights(first))
    assert not all(w.is_contiguous(memory_format=torch.channels_last) for w in conv_weights(plain))
