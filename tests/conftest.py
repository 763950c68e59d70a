"""Shared test helpers: which frameworks are importable, and in which version."""
import importlib.util

import pytest


def _available(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


HAS_SNNTORCH = _available("snntorch")
HAS_SPIKINGJELLY = _available("spikingjelly")

requires_snntorch = pytest.mark.skipif(not HAS_SNNTORCH, reason="snnTorch not installed")
requires_spikingjelly = pytest.mark.skipif(not HAS_SPIKINGJELLY, reason="SpikingJelly not installed")


def spikingjelly_is_legacy() -> bool:
    """True for SpikingJelly 0.0.0.0.14 (no unified _sg_params, PiecewiseLeakyReLU slope 1/w)."""
    from spikingjelly.activation_based import surrogate

    return not hasattr(surrogate.SurrogateFunctionBase, "_sg_params")
