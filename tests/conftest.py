"""Shared test helpers: which frameworks are importable (and in which version), the skips that follow from the
``snntorch`` / ``spikingjelly`` / ``core_suite`` markers, and a firing-rate count by our own hooks."""
import importlib.util
import os

import pytest
import torch


def _available(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


HAS_SNNTORCH = _available("snntorch")
HAS_SPIKINGJELLY = _available("spikingjelly")


# CI runs the framework-free suite in an environment without the frameworks first; in the next environment
# (with them) the long framework-free tests, which no framework changes, need not run twice
CORE_SUITE_PASSED = os.environ.get("SNN_INITPLUG_CORE_SUITE_PASSED") == "1"


def pytest_collection_modifyitems(config, items):
    """A test marked ``snntorch`` or ``spikingjelly`` is skipped where that framework is not installed; one
    marked ``core_suite`` (long, framework-free) where ``SNN_INITPLUG_CORE_SUITE_PASSED=1`` says it passed."""
    missing = {"snntorch": not HAS_SNNTORCH, "spikingjelly": not HAS_SPIKINGJELLY}
    for item in items:
        if CORE_SUITE_PASSED and item.get_closest_marker("core_suite") is not None:
            item.add_marker(pytest.mark.skip(reason="framework-free: passed in the core environment of this run"))
        for framework, absent in missing.items():
            if absent and item.get_closest_marker(framework) is not None:
                item.add_marker(pytest.mark.skip(reason=f"{framework} not installed"))


def spikingjelly_is_legacy() -> bool:
    """True for SpikingJelly 0.0.0.0.14 (no unified _sg_params, PiecewiseLeakyReLU slope 1/w)."""
    from spikingjelly.activation_based import surrogate

    return not hasattr(surrogate.SurrogateFunctionBase, "_sg_params")


def counted_rates(neurons, run) -> list:
    """The firing rate of each module in ``neurons`` over the forward pass ``run`` (without gradients): its
    non-zero outputs over its outputs, the first output of a tuple, counted by our own forward hooks."""
    counts = {id(m): [0, 0] for m in neurons}

    def hook(m, args, out):
        spikes = out[0] if isinstance(out, tuple) else out
        counts[id(m)][0] += int(torch.count_nonzero(spikes))
        counts[id(m)][1] += spikes.numel()

    handles = [m.register_forward_hook(hook) for m in neurons]
    try:
        with torch.no_grad():
            run()
    finally:
        for h in handles:
            h.remove()
    return [counts[id(m)][0] / counts[id(m)][1] for m in neurons]


def counted_rate(module, run) -> float:
    """:func:`counted_rates` of one module."""
    return counted_rates([module], run)[0]
