"""The small public API and the old names that keep working for one release (each with a DeprecationWarning
naming the new one)."""
from __future__ import annotations

import importlib
import math
import warnings

import pytest
import torch
import torch.nn as nn

import snn_initplug as sip
from snn_initplug.errors import OptionError


def test_the_top_level_api_is_small():
    names = [n for n in sip.__all__ if n != "__version__" and not n.endswith("Error")]
    assert len(names) <= 25, names
    for name in sip.__all__:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # a public name never warns
            getattr(sip, name)


@pytest.mark.parametrize("name, module", sorted(sip._MOVED.items()))
def test_a_moved_name_warns_and_is_the_submodule_object(name, module):
    with pytest.warns(DeprecationWarning, match=rf"snn_initplug\.{name} .*snn_initplug\.{module} import {name}"):
        value = getattr(sip, name)
    assert value is getattr(importlib.import_module(f"snn_initplug.{module}"), name)
    assert name not in sip.__all__ and name not in dir(sip)


def test_from_import_of_a_moved_name_warns():
    with pytest.warns(DeprecationWarning, match="snn_initplug.options"):
        from snn_initplug import IkunOptions  # noqa: F401


def test_an_unknown_name_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no_such_name"):
        sip.no_such_name  # noqa: B018


def test_old_option_names_warn_and_work():
    from snn_initplug.options import FluctuationOptions, IkunOptions, SpikeAwareOptions

    with pytest.warns(DeprecationWarning, match="mode= is deprecated .* use fan_mode="):
        assert IkunOptions(mode="fan_out") == IkunOptions(fan_mode="fan_out")
    with pytest.warns(DeprecationWarning, match="rate= is deprecated .* use target_rate="):
        record = SpikeAwareOptions(rate=0.1)
    assert record.target_rate == 0.1
    with pytest.warns(DeprecationWarning, match="horizon= is deprecated .* use steps="):
        assert FluctuationOptions(horizon=4).steps == 4
    with pytest.raises(OptionError, match="give steps= .* or horizon= .* not both"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        FluctuationOptions(horizon=4, steps=3)


def test_old_argument_names_warn_and_work():
    # spike-aware at target rate r: σ_u = θ / Φ⁻¹(1 − r), input spikes at r, gain σ_u² / r (closed form)
    r = 0.1
    sigma = 1.0 / 1.2815515655446004
    with pytest.warns(DeprecationWarning, match="calculate_spike_aware_gain: rate="):
        assert sip.calculate_spike_aware_gain(1.0, rate=r) == pytest.approx(sigma**2 / r, rel=1e-9)
    with pytest.warns(DeprecationWarning, match="membrane_target: rate="):
        assert sip.laws.membrane_target(1.0, rate=r) == pytest.approx(sigma, rel=1e-9)
    with pytest.warns(DeprecationWarning, match="ikun_law: mode="):
        assert sip.laws.ikun_law(784, 256, 2.0, mode="fan_out").std == pytest.approx(math.sqrt(2.0 / 256))
    w = torch.empty(400, 100)
    with pytest.warns(DeprecationWarning, match="ikun_: mode="):
        sip.ikun_(w, None, variant="reference", mode="fan_out", generator=torch.Generator().manual_seed(0))
    assert w.std().item() == pytest.approx(math.sqrt(1.2737 / 400), rel=0.05)  # fan_out = 400 rows
    with pytest.raises(OptionError, match="not both"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sip.spike_aware_(w, rate=0.1, target_rate=0.1)


@pytest.mark.snntorch
def test_old_option_names_through_initialize():
    snn = pytest.importorskip("snntorch")

    def make():
        torch.manual_seed(0)
        return nn.Sequential(nn.Linear(20, 30), snn.Leaky(beta=0.9, init_hidden=True))

    x = torch.rand(16, 20)
    old, new = make(), make()
    with pytest.warns(DeprecationWarning, match="spike_aware: horizon= is deprecated"):
        sip.initialize(old, x, "spike_aware", horizon=4, generator=torch.Generator().manual_seed(1))
    report = sip.initialize(new, x, "spike_aware", steps=4, generator=torch.Generator().manual_seed(1))
    assert torch.equal(old[0].weight, new[0].weight)
    # steps=4 is the kernel over 4 steps of snnTorch's Leaky (K[k] = β^k, simulated in float32): ΣK² = Σ_{k<4} 0.81^k
    assert report.layers[0].assumed["sum_K2"] == pytest.approx(sum(0.81**k for k in range(4)), rel=1e-6)
