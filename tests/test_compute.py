"""kneesynth.compute: the switches every training honours (bf16 autocast, channels_last,
torch.compile). Each training's own test checks that it honours them and stays deterministic."""

from __future__ import annotations

import torch

from kneesynth import compute

torch.set_num_threads(1)

SWITCHES = {"bf16": True, "channels_last": True, "compile": False}


def test_defaults_change_nothing():
    net = torch.nn.Conv2d(2, 4, 3)
    x = torch.randn(1, 2, 8, 8)
    assert compute.prepare_model(net, torch.device("cpu")) is net
    assert compute.prepare_input(x) is x
    assert net.weight.is_contiguous()
    with compute.autocast(torch.device("cpu")):
        assert net(x).dtype == torch.float32


def test_switches_on_cpu():
    net = torch.nn.Conv2d(2, 4, 3)
    prepared = compute.prepare_model(net, torch.device("cpu"), SWITCHES)
    assert prepared is net  # not compiled: the module itself, weights now channels-last
    assert net.weight.is_contiguous(memory_format=torch.channels_last)
    x = compute.prepare_input(torch.randn(2, 2, 8, 8), SWITCHES)
    assert x.is_contiguous(memory_format=torch.channels_last)
    flat = torch.randn(2, 5)
    assert compute.prepare_input(flat, SWITCHES) is flat  # only (n, C, H, W) images
    with compute.autocast(torch.device("cpu"), SWITCHES):
        assert net(x).dtype == torch.bfloat16


def test_compile_returns_a_compiled_module_sharing_the_parameters():
    net = torch.nn.Linear(3, 2)
    compiled = compute.prepare_model(net, torch.device("cpu"), {"compile": True})
    assert compiled is not net
    assert next(compiled.parameters()) is net.weight  # state_dict of ``net`` is what training saves
