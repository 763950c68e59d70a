"""The one call, ``initialize(model, example_input, steps=T)``: the recipe it picks, what it reaches, its
overrides and its all-or-nothing write. Rates are counted here with our own hooks on the framework's neurons."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn

import snn_initplug as sip
from conftest import HAS_SNNTORCH, HAS_SPIKINGJELLY
from snn_initplug.errors import InitError
from snn_initplug.options import DEFAULT_TARGET_RATE
from snn_initplug.recipes import COPY_ABOVE, RELAY_FROM

requires_snntorch = pytest.mark.skipif(not HAS_SNNTORCH, reason="snnTorch not installed")
requires_spikingjelly = pytest.mark.skipif(not HAS_SPIKINGJELLY, reason="SpikingJelly not installed")
TARGET = DEFAULT_TARGET_RATE  # 1 − Φ(1), the default target


def stack(depth: int, width: int = 48, inputs: int = 32, output: bool = False) -> nn.Sequential:
    import snntorch as snn

    torch.manual_seed(0)
    layers: list[nn.Module] = []
    for i in range(depth):
        layers += [nn.Linear(inputs if i == 0 else width, width),
                   snn.Leaky(beta=0.9, init_hidden=True, output=output and i == depth - 1)]
    return nn.Sequential(*layers)


def counted_rates(model: nn.Sequential, x: torch.Tensor, steps: int) -> list[float]:
    """Spikes per neuron per step of every Leaky, over ``steps`` calls from rest (snnTorch's own forward)."""
    import snntorch as snn

    neurons = [m for m in model if isinstance(m, snn.Leaky)]
    totals = [0.0] * len(neurons)
    hooks = [n.register_forward_hook(lambda m, a, out, i=i: totals.__setitem__(
        i, totals[i] + float((out[0] if isinstance(out, tuple) else out).mean()))) for i, n in enumerate(neurons)]
    for n in neurons:
        n.reset_mem()
    with torch.no_grad():
        for _ in range(steps):
            model(x)
    for h in hooks:
        h.remove()
    return [t / steps for t in totals]


def state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@pytest.mark.snntorch
@requires_snntorch
def test_sixty_layer_stack_fires_in_every_layer_on_a_fresh_batch():
    net = stack(60)
    report = sip.initialize(net, torch.rand(64, 32), steps=4)
    assert report.recipe.startswith("60-layer plain chain: calibrated, copy relay (relay 1)"), report.recipe
    rates = counted_rates(net, torch.rand(128, 32, generator=torch.Generator().manual_seed(7)), 4)
    assert len(rates) == 60 and min(rates) > 0.05, rates  # every layer fires, near the 0.159 target
    # the default leaves the deep layers silent on the same batch (what the one call is for)
    assert min(counted_rates(stack(60), torch.rand(128, 32), 4)) == 0.0


@pytest.mark.snntorch
@requires_snntorch
@pytest.mark.parametrize("depth, first_line", [
    (1, "1-layer plain chain: calibrated"),
    (3, "3-layer plain chain: calibrated, relay 0.9, membrane ×0.5"),
    (20, "20-layer plain chain: calibrated, relay 0.9, membrane ×0.5"),
    (COPY_ABOVE + 1, f"{COPY_ABOVE + 1}-layer plain chain: calibrated, copy relay (relay 1)"),
])
def test_the_report_first_line_names_the_recipe(depth, first_line):
    net = stack(depth)
    thresholds = 1.0
    report = sip.initialize(net, torch.rand(64, 32), steps=4)
    assert str(report).splitlines()[0] == first_line == report.recipe
    relays = [row.relay for row in report.layers]
    if depth >= RELAY_FROM:  # every layer reading spikes gets the relay weight, the first (data) none
        assert relays[0] == 0 and all(r > 0 for r in relays[1:]), relays
    else:
        assert not any(relays)
    scaled = "membrane ×0.5" in first_line
    thresholds = [float(m.threshold) for m in net if hasattr(m, "threshold")]
    assert thresholds == [0.5 if scaled else 1.0] * depth
    assert report.membrane == (0.5 if scaled else None)


@pytest.mark.snntorch
@requires_snntorch
def test_the_membrane_scaling_keeps_every_spike_of_the_calibrated_network():
    """The one call equals calibrated + relay 0.9 and then scale_membrane(0.5), done by hand, bit for bit."""
    x = torch.rand(64, 32)
    one = stack(20)
    sip.initialize(one, x, steps=4, generator=torch.Generator().manual_seed(3))
    by_hand = stack(20)
    sip.initialize(by_hand, x, "calibrated", steps=4, relay=0.9, generator=torch.Generator().manual_seed(3))
    sip.scale_membrane(by_hand, 0.5, x, steps=4)
    assert all(torch.equal(a, b) for a, b in zip(state(one).values(), state(by_hand).values()))
    rates = counted_rates(one, x, 4)
    assert all(abs(r / TARGET - 1) <= 0.05 + 1e-9 for r in rates), rates


@pytest.mark.snntorch
@requires_snntorch
def test_every_choice_can_be_overridden():
    x = torch.rand(64, 32)
    net = stack(12)
    report = sip.initialize(net, x, steps=4, relay=0, membrane=1)
    assert report.recipe == "12-layer plain chain: calibrated (relay, membrane as given)"
    assert not any(row.relay for row in report.layers)
    assert [float(m.threshold) for m in net if hasattr(m, "threshold")] == [1.0] * 12
    report = sip.initialize(stack(12), x, steps=4, relay=1)
    assert report.recipe == "12-layer plain chain: calibrated, copy relay (relay 1), membrane ×0.5 (relay as given)"
    assert all(row.relay > 0 for row in report.layers[1:]) and report.layers[1].assumed["relay"] == 1.0
    report = sip.initialize(stack(12), x, "ikun")  # a method named: no recipe, that method alone
    assert report.recipe is None and {row.method for row in report.layers} == {"ikun"}
    report = sip.initialize(stack(12), "ikun", x)  # the older order still works
    assert report.recipe is None and {row.method for row in report.layers} == {"ikun"}
    net = stack(3)
    report = sip.initialize(net, x, "ikun", membrane=0.5, steps=4)  # the membrane after any method
    assert report.membrane == 0.5 and [float(m.threshold) for m in net if hasattr(m, "threshold")] == [0.5] * 3


@pytest.mark.snntorch
@requires_snntorch
def test_a_failure_leaves_weights_and_thresholds_as_they_were():
    """The last Leaky returns its membrane (output=True): scaling the membrane changes the output, so
    ``membrane=0.5`` given fails after the calibration wrote its weights; everything is put back."""
    net = stack(12, output=True)
    before = state(net)
    with pytest.raises(InitError, match="output changed"):
        sip.initialize(net, torch.rand(64, 32), steps=4, membrane=0.5)
    after = state(net)
    assert all(torch.equal(before[k], after[k]) for k in before if "mem" not in k)
    # chosen by the recipe (not given), the membrane scaling is dropped instead, and said so
    report = sip.initialize(net, torch.rand(64, 32), steps=4)
    assert report.recipe.endswith("membrane ×0.5 not applied (see the notes)"), report.recipe
    assert any("output changed" in note for note in report.notes)
    assert [float(m.threshold) for m in net if hasattr(m, "threshold")] == [1.0] * 12


def test_the_one_call_needs_a_batch():
    net = nn.Sequential(nn.Linear(4, 4))
    with pytest.raises(InitError, match="one call .* needs example_input"):
        sip.initialize(net)


@pytest.mark.spikingjelly
@requires_spikingjelly
def test_spikformer_every_neuron_layer_within_ten_percent():
    pytest.importorskip("spikingjelly.activation_based.model.spikformer")
    from spikingjelly.activation_based import functional
    from spikingjelly.activation_based.model.spikformer import Spikformer
    from spikingjelly.activation_based.neuron import BaseNode

    torch.manual_seed(0)
    model = Spikformer(T=2, in_channels=1, img_size_h=16, img_size_w=16, patch_size=4, num_classes=10,
                       embed_dims=32, num_heads=2, mlp_ratio=2.0, depths=1)
    x = torch.rand(8, 1, 16, 16, generator=torch.Generator().manual_seed(1))
    report = sip.initialize(model, x)
    assert "weight-less neurons through their threshold" in report.recipe and "plain chain" not in report.recipe
    neurons = {name: m for name, m in model.named_modules() if isinstance(m, BaseNode)}
    rates: dict[str, list[float]] = {name: [] for name in neurons}
    hooks = [m.register_forward_hook(lambda mod, a, out, name=name: rates[name].append(float(out.mean())))
             for name, m in neurons.items()]
    functional.reset_net(model)
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    measured = {name: sum(r) / len(r) for name, r in rates.items()}
    assert "blocks.0.attn.attn_lif" in measured and len(measured) >= 10
    assert all(abs(r / TARGET - 1) <= 0.10 for r in measured.values()), measured


@pytest.mark.snntorch
@requires_snntorch
def test_the_one_call_replays_bit_for_bit(tmp_path):
    """A saved report of the one call replays its recipe (recorded as given, not chosen again) on a fresh
    model: weights, biases and thresholds identical."""
    x = torch.rand(64, 32)
    net = stack(12)
    report = sip.initialize(net, x, steps=4)
    path = tmp_path / "one_call.json"
    report.save(path)
    loaded = sip.Report.load(path)
    assert loaded.recipe == report.recipe and loaded.membrane == 0.5
    twin = stack(12)
    again = sip.reinitialize(twin, path, x)
    assert all(torch.equal(a, b) for a, b in zip(state(net).values(), state(twin).values()))
    assert again.membrane == 0.5 and again.settings["method"] == "auto"
