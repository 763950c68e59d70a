"""snn-initplug: principled weight initialization for existing snnTorch and SpikingJelly networks.

The public names are loaded on first use (PEP 562), so ``import snn_initplug`` costs almost nothing and
never imports snnTorch, SpikingJelly or torchvision; only ``snn_initplug.adapters`` touches the frameworks.
No submodule shares its name with a public function (``plan`` lives in ``planning``, ``calibrate`` in
``calibration``): importing a submodule binds its name on the package, which would shadow the function.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .version import __version__

# public name -> submodule that defines it
_PUBLIC: dict[str, str] = {
    "SnnInitError": "errors",
    "OptionError": "errors",
    "ArgumentTypeError": "errors",
    "SurrogateError": "errors",
    "StochasticSurrogateError": "errors",
    "Uniform": "surrogate",
    "Normal": "surrogate",
    "SurrogateMoments": "surrogate",
    "describe_surrogate": "surrogate",
    "surrogate_derivative": "surrogate",
    "surrogate_moments": "surrogate",
    "clear_moment_cache": "surrogate",
    "moment_cache_info": "surrogate",
    "calculate_spikeinit": "init",
    "spikeinit_": "init",
    "NeuronSpec": "neuron",
    "NeuronSpecError": "errors",
    "kernel_sums_from_response": "neuron",
    "simulate_impulse_response": "neuron",
    "register_neuron": "adapters",
    "unregister_neuron": "adapters",
    "neuron_spec": "adapters",
    "InternalWeight": "adapters",
    "UnsupportedNeuronError": "errors",
    "plan": "planning",
    "Plan": "planning",
    "PlanError": "errors",
    "initialize": "apply",
    "reinitialize": "apply",
    "Report": "apply",
    "METHODS": "apply",
    "InitError": "errors",
    "ikun_": "init",
    "spike_aware_": "init",
    "fluctuation_": "init",
    "baseline_": "init",
    "calculate_ikun_gain": "init",
    "calculate_spike_aware_gain": "init",
    "calculate_fluctuation": "init",
    "calculate_relay": "laws",
    "copy_window": "theory",
    "copy_gain": "theory",
    "relay_pattern": "init",
    "baseline_law": "laws",
    "Law": "laws",
    "RelayDynamics": "laws",
    "membrane_target": "laws",
    "ikun_law": "laws",
    "spike_aware_law": "laws",
    "fluctuation_law": "laws",
    "IkunOptions": "options",
    "SpikeAwareOptions": "options",
    "FluctuationOptions": "options",
    "BaselineOptions": "options",
    "CalibrationOptions": "options",
    "calibrate": "calibration",
    "scale_membrane": "membrane",
    "MembraneScaling": "membrane",
    "balance_gradients": "membrane",
    "GradientBalance": "membrane",
    "gradient_slope": "membrane",
    "CalibrationReport": "calibration",
    "diagnose": "diagnostics",
    "Diagnosis": "diagnostics",
    "LayerDiagnosis": "diagnostics",
    "DiagnoseError": "errors",
    "ConcurrentUseError": "errors",
    "DistributedError": "errors",
    "compare": "diagnostics",
    "compare_methods": "diagnostics",
    "plot_comparison": "diagnostics",
}

__all__ = sorted(_PUBLIC) + ["__version__"]

if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs only
    from .adapters import InternalWeight, neuron_spec, register_neuron, unregister_neuron
    from .apply import METHODS, Report, initialize, reinitialize
    from .calibration import CalibrationReport, calibrate
    from .diagnostics import Diagnosis, LayerDiagnosis, compare, compare_methods, diagnose, plot_comparison
    from .errors import (
        ArgumentTypeError,
        ConcurrentUseError,
        DiagnoseError,
        DistributedError,
        InitError,
        NeuronSpecError,
        OptionError,
        PlanError,
        SnnInitError,
        StochasticSurrogateError,
        SurrogateError,
        UnsupportedNeuronError,
    )
    from .init import (
        baseline_,
        calculate_fluctuation,
        calculate_ikun_gain,
        calculate_spike_aware_gain,
        calculate_spikeinit,
        fluctuation_,
        ikun_,
        relay_pattern,
        spike_aware_,
        spikeinit_,
    )
    from .laws import (
        Law,
        RelayDynamics,
        baseline_law,
        calculate_relay,
        fluctuation_law,
        ikun_law,
        membrane_target,
        spike_aware_law,
    )
    from .membrane import GradientBalance, MembraneScaling, balance_gradients, gradient_slope, scale_membrane
    from .neuron import NeuronSpec, kernel_sums_from_response, simulate_impulse_response
    from .options import BaselineOptions, CalibrationOptions, FluctuationOptions, IkunOptions, SpikeAwareOptions
    from .planning import Plan, plan
    from .surrogate import (
        Normal,
        SurrogateMoments,
        Uniform,
        clear_moment_cache,
        describe_surrogate,
        moment_cache_info,
        surrogate_derivative,
        surrogate_moments,
    )
    from .theory import copy_gain, copy_window


def __getattr__(name: str) -> Any:
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module 'snn_initplug' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__():
    return sorted(set(globals()) | set(_PUBLIC))
