"""snn-initplug: principled weight initialization for existing snnTorch and SpikingJelly networks.

The public names are loaded on first use (PEP 562), so ``import snn_initplug`` costs almost nothing and
never imports snnTorch, SpikingJelly or torchvision; only ``snn_initplug.adapters`` touches the frameworks.
No submodule shares its name with a public function (``plan`` lives in ``planning``, ``calibrate`` in
``calibration``): importing a submodule binds its name on the package, which would shadow the function.
"""
from __future__ import annotations

import importlib
import warnings
from typing import TYPE_CHECKING, Any

from .version import __version__

# public name -> submodule that defines it: the entry points, the tensor functions and their calculate_*
# companions, the neuron registry, the report, and the exceptions
_PUBLIC: dict[str, str] = {
    "initialize": "apply",
    "reinitialize": "apply",
    "Report": "apply",
    "calibrate": "calibration",
    "diagnose": "diagnostics",
    "plan": "planning",
    "scale_membrane": "membrane",
    "balance_gradients": "balance",
    "ikun_": "init",
    "spike_aware_": "init",
    "fluctuation_": "init",
    "baseline_": "init",
    "relay_pattern": "init",
    "calculate_ikun_gain": "init",
    "calculate_spike_aware_gain": "init",
    "calculate_fluctuation": "init",
    "calculate_spikeinit": "spikeinit",
    "spikeinit_": "spikeinit",
    "calculate_relay": "laws",
    "surrogate_moments": "surrogate",
    "NeuronSpec": "neuron",
    "register_neuron": "adapters",
    "unregister_neuron": "adapters",
    # exceptions
    "SnnInitError": "errors",
    "OptionError": "errors",
    "ArgumentTypeError": "errors",
    "SurrogateError": "errors",
    "StochasticSurrogateError": "errors",
    "NeuronSpecError": "errors",
    "UnsupportedNeuronError": "errors",
    "PlanError": "errors",
    "InitError": "errors",
    "DiagnoseError": "errors",
    "ConcurrentUseError": "errors",
    "DistributedError": "errors",
}

# former top-level names -> the submodule they live in now; they still work for one release, with a
# DeprecationWarning naming the new place (module __getattr__ below)
_MOVED: dict[str, str] = {
    "Uniform": "surrogate",
    "Normal": "surrogate",
    "SurrogateMoments": "surrogate",
    "describe_surrogate": "surrogate",
    "surrogate_derivative": "surrogate",
    "clear_moment_cache": "surrogate",
    "moment_cache_info": "surrogate",
    "kernel_sums_from_response": "neuron",
    "simulate_impulse_response": "neuron",
    "neuron_spec": "adapters",
    "InternalWeight": "adapters",
    "Plan": "planning",
    "METHODS": "apply",
    "copy_window": "theory",
    "copy_gain": "theory",
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
    "MembraneScaling": "membrane",
    "GradientBalance": "balance",
    "gradient_slope": "balance",
    "CalibrationReport": "calibration",
    "Diagnosis": "diagnostics",
    "LayerDiagnosis": "diagnostics",
    "compare": "diagnostics",
    "compare_methods": "diagnostics",
    "plot_comparison": "diagnostics",
}

__all__ = sorted(_PUBLIC) + ["__version__"]

# the submodules where everything else lives, documented there (docs/api.rst)
_SUBMODULES = frozenset({"adapters", "apply", "balance", "calibration", "deprecation", "diagnostics", "distributed",
                         "errors", "init", "laws", "membrane", "neuron", "options", "planning", "recipes", "replay",
                         "reports", "selection", "spikeinit", "surrogate", "tables", "theory", "transaction"})

if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs only
    from .adapters import register_neuron, unregister_neuron
    from .apply import Report, initialize, reinitialize
    from .balance import balance_gradients
    from .calibration import calibrate
    from .diagnostics import diagnose
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
        fluctuation_,
        ikun_,
        relay_pattern,
        spike_aware_,
    )
    from .laws import calculate_relay
    from .membrane import scale_membrane
    from .neuron import NeuronSpec
    from .planning import plan
    from .spikeinit import calculate_spikeinit, spikeinit_
    from .surrogate import surrogate_moments


def __getattr__(name: str) -> Any:
    module = _PUBLIC.get(name)
    if module is not None:
        value = getattr(importlib.import_module(f".{module}", __name__), name)
        globals()[name] = value  # later lookups skip this function
        return value
    if name in _SUBMODULES:  # sip.surrogate.Uniform works without importing the submodule first
        return importlib.import_module(f".{name}", __name__)
    module = _MOVED.get(name)
    if module is None:
        raise AttributeError(f"module 'snn_initplug' has no attribute {name!r}")
    warnings.warn(f"snn_initplug.{name} is deprecated as a top-level name and will be removed in the next release; "
                  f"import it from snn_initplug.{module} (from snn_initplug.{module} import {name})",
                  DeprecationWarning, stacklevel=2)
    return getattr(importlib.import_module(f".{module}", __name__), name)  # not cached: every use warns


def __dir__():
    return sorted(set(globals()) | set(_PUBLIC))
