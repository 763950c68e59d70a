"""The package's exceptions: one base, :class:`SnnInitError`, so ``except snn_initplug.SnnInitError`` catches
every mistake the package reports and nothing else (a bug still shows its traceback).

Each class also derives from the built-in exception a user would expect for that kind of mistake
(``ValueError`` for a bad value, ``TypeError`` for a wrong type), so code written against those keeps
working. The same mistake raises the same class from every entry point:

==============================  ==============================================================================
``SnnInitError``                the base
``InitError``                   a law cannot be computed (negative variance, missing statistics, bad option)
``OptionError``                 an option of an initializer or of the calibration: unknown name, wrong type or
                                value (also an ``InitError`` and a ``TypeError``)
``ArgumentTypeError``           an argument of the wrong type: a model that is not an ``nn.Module``, a tensor that
                                is not a ``torch.Tensor``, a class that is not an ``nn.Module`` subclass, ...
``PlanError``                   the model cannot be planned (no neurons, does not run on the example input, ...)
``NeuronSpecError``             invalid neuron parameters
``UnsupportedNeuronError``      a framework neuron no adapter supports (also a ``TypeError``)
``SurrogateError``              a spike function whose surrogate derivative cannot be used
``StochasticSurrogateError``    a random surrogate derivative (snnTorch ``SSO``)
``DiagnoseError``               the diagnostics cannot be computed
``ConcurrentUseError``          a model already in use by another thread (also a ``RuntimeError``)
``DistributedError``            the ranks of a process group disagree or one failed; no rank wrote anything
                                (also a ``RuntimeError``)
==============================  ==============================================================================
"""
from __future__ import annotations

__all__ = [
    "SnnInitError",
    "InitError",
    "OptionError",
    "ArgumentTypeError",
    "PlanError",
    "NeuronSpecError",
    "UnsupportedNeuronError",
    "SurrogateError",
    "StochasticSurrogateError",
    "DiagnoseError",
    "ConcurrentUseError",
    "DistributedError",
]


class SnnInitError(Exception):
    """Base of every error snn_initplug raises on purpose."""


class InitError(SnnInitError, ValueError):
    """An initializer cannot produce valid weights (negative or infinite variance, missing statistics, ...)."""


class OptionError(InitError, TypeError):
    """An option of an initializer or of the calibration is unknown, of the wrong type or out of range."""


class ArgumentTypeError(SnnInitError, TypeError):
    """An argument of the wrong type (a model that is not an ``nn.Module``, a tensor that is not a tensor, ...)."""


class PlanError(SnnInitError, ValueError):
    """The model cannot be planned (no neurons, needs an example input, does not run, ...)."""


class NeuronSpecError(SnnInitError, ValueError):
    """Invalid neuron parameters."""


class UnsupportedNeuronError(SnnInitError, TypeError):
    """A module that is a spiking neuron of a known framework, of a class no adapter supports yet."""


class SurrogateError(SnnInitError, ValueError):
    """A spike function whose surrogate derivative cannot be used (raises, has no gradient, NaN, ...)."""


class StochasticSurrogateError(SurrogateError):
    """The surrogate derivative is random (for example snnTorch ``SSO``); see ``stochastic=`` options."""


class DiagnoseError(SnnInitError, ValueError):
    """The diagnostics cannot be computed (no input, a loss that does not fit the output, ...)."""


class ConcurrentUseError(SnnInitError, RuntimeError):
    """The model is already being planned, initialized, calibrated or diagnosed by another thread: the walks
    install hooks and write weights, so two at once would corrupt it."""


class DistributedError(SnnInitError, RuntimeError):
    """Under ``torch.distributed``, a rank failed or the ranks disagree (architecture, method, options); raised
    on every rank before any rank writes, so every model is left unchanged."""
