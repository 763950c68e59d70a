"""Typed options: one frozen dataclass per method and one for the calibration, validated on construction.

A wrong name, type or value is one :class:`~snn_initplug.errors.OptionError` (an ``InitError`` and a
``TypeError``) saying which option and what it accepts, whichever entry point received it: ``initialize``,
the tensor functions, ``calibrate``. :func:`method_options` builds the record of a method from keyword
arguments.

The kernel horizon has one name in every method, ``steps``: ``"single"`` (one step: ΣK = c, ΣK² = c²),
``"stationary"`` (the infinite-horizon sums) or a number of steps T. The target rate is ``target_rate`` and
IKUN's fan ``fan_mode``; the former names (``horizon``, ``rate``, ``mode``) still work for one release, with a
``DeprecationWarning`` (:mod:`snn_initplug.deprecation`).
"""
from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from dataclasses import InitVar, dataclass, fields
from typing import Any, Callable, Optional, Union, overload

from .deprecation import RENAMED_OPTIONS, warn_renamed
from .errors import OptionError
from .laws import BASELINES, check_relay
from .surrogate import Normal, Uniform
from .theory import normal_cdf

__all__ = [
    "IkunOptions",
    "SpikeAwareOptions",
    "FluctuationOptions",
    "BaselineOptions",
    "SpikeInitOptions",
    "CalibrationOptions",
    "MethodOptions",
    "method_options",
    "method_name",
    "non_default_fields",
    "horizon_steps",
    "positive_numbers",
    "FAN_MODES",
    "DEFAULT_TARGET_RATE",
]

FAN_MODES = ("fan_in", "fan_out", "fan_avg", "fan_sum")
DEFAULT_TARGET_RATE = 1.0 - normal_cdf(1.0)  # 0.1587: the spike-aware rule's rate at θ = σ_u
Horizon = Union[str, int]


# ------------------------------------------------------------------------------------------------------
# Checks shared by the records
# ------------------------------------------------------------------------------------------------------
@overload
def _number(owner: str, name: str, value: Any) -> float: ...
@overload
def _number(owner: str, name: str, value: Any, *, optional: bool) -> Optional[float]: ...
def _number(owner: str, name: str, value: Any, *, optional: bool = False) -> Optional[float]:
    """A finite real number (not a bool), as a float; None passes when ``optional``."""
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(float(value)):
        raise OptionError(f"{owner}: {name} must be a finite number, got {value!r}")
    return float(value)


def check_steps(owner: str, steps: Any) -> Optional[int]:
    """The number of time steps T as an int (None passes): an integer >= 1, not a bool, a float or a string."""
    if steps is not None and (isinstance(steps, bool) or not isinstance(steps, numbers.Integral) or steps < 1):
        raise OptionError(f"{owner}: steps must be an integer >= 1 (the number of time steps T), got {steps!r}")
    return None if steps is None else int(steps)


def _positive(owner: str, name: str, value: Any, *, optional: bool = False) -> Optional[float]:
    number = _number(owner, name, value, optional=optional)
    if number is not None and not number > 0:
        raise OptionError(f"{owner}: {name} must be > 0, got {value!r}")
    return number


def _choice(owner: str, name: str, value: Any, choices: tuple[Any, ...]) -> Any:
    if value not in choices:
        raise OptionError(f"{owner}: {name} must be one of {list(choices)}, got {value!r}")
    return value


def _target_rate(owner: str, rate: Any) -> Optional[float]:
    """A target firing rate for a zero-mean membrane target: a number in (0, 0.5)."""
    rate = _number(owner, "target_rate", rate, optional=True)
    if rate is not None and not 0.0 < rate < 0.5:
        raise OptionError(f"{owner}: target rate must lie in (0, 0.5) for a zero-mean membrane, got {rate}")
    return rate


def positive_numbers(owner: str, name: str, value: Any, count: int = 1) -> tuple[float, ...]:
    """``value`` (``count`` > 1: a tuple or list of that many) as finite numbers > 0, else an OptionError."""
    values = value if count > 1 and isinstance(value, (tuple, list)) and len(value) == count else (value,)
    if count > 1 and values is not value:
        raise OptionError(f"{owner}: {name} must be {count} positive numbers, got {value!r}")
    return tuple(float(_positive(owner, name, v)) for v in values)  # type: ignore[arg-type]


def _fraction(owner: str, name: str, value: Any) -> Optional[float]:
    value = _number(owner, name, value, optional=True)
    if value is not None and not 0.0 <= value <= 1.0:
        raise OptionError(f"{owner}: {name} must lie in [0, 1], got {value}")
    return value


def horizon_steps(owner: str, horizon: Any) -> Optional[int]:
    """The number of steps of a kernel horizon: 1 for ``"single"``, None for ``"stationary"``, or T."""
    if horizon == "single":
        return 1
    if horizon == "stationary":
        return None
    if isinstance(horizon, numbers.Integral) and not isinstance(horizon, bool) and int(horizon) >= 1:
        return int(horizon)
    raise OptionError(f"{owner}: steps must be 'single', 'stationary' or a number of steps, got {horizon!r}")


def _set(record: Any, name: str, value: Any) -> None:
    object.__setattr__(record, name, value)  # frozen dataclass: normalise once, in __post_init__


def _renamed(record: Any, owner: str, old_values: dict[str, Any]) -> None:
    """A record built with a former field name (an ``InitVar``): its value moves to the new field, warned."""
    for old, value in old_values.items():
        if value is None:
            continue
        new = RENAMED_OPTIONS[owner][old]
        if getattr(record, new) != getattr(type(record), new):
            raise OptionError(f"{owner}: give {new}= (the new name) or {old}= (deprecated), not both")
        warn_renamed(owner, old, new, stacklevel=5)
        _set(record, new, value)


# ------------------------------------------------------------------------------------------------------
# One record per method
# ------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class IkunOptions:
    """IKUN: ``variant`` ``"surrogate"`` (κ from the neuron's surrogate) or ``"reference"`` (the released
    κ = 1.2737); the fan by ``version`` (``"v1"``: fan_in, ``"v2"``: fan_in + fan_out) or ``fan_mode``; the
    distribution ``D`` of the surrogate's argument (default ``Uniform(-1, 1)``); the moment ``k`` (1 or 2).
    ``mode=``: the former name of ``fan_mode`` (deprecated)."""

    variant: str = "surrogate"
    version: Optional[str] = None
    fan_mode: Optional[str] = None
    distribution: Optional[Union[Uniform, Normal]] = None
    moment: int = 1
    mode: InitVar[Optional[str]] = None

    def __post_init__(self, mode: Optional[str]):
        _renamed(self, "ikun", {"mode": mode})
        _choice("ikun", "variant", self.variant, ("surrogate", "reference"))
        if self.version is not None:
            _choice("ikun", "version", self.version, ("v1", "v2"))
            if self.fan_mode is not None:
                raise OptionError("ikun: give either version= or fan_mode=, not both")
        if self.fan_mode is not None:
            _choice("ikun", "fan_mode", self.fan_mode, FAN_MODES)
        if self.distribution is not None and not isinstance(self.distribution, (Uniform, Normal)):
            raise OptionError(f"ikun: distribution must be snn_initplug.surrogate.Uniform or Normal, got {self.distribution!r}")
        _choice("ikun", "moment", self.moment, (1, 2))

    @property
    def fan(self) -> str:
        """The fan the variance is divided by: ``fan_mode``, or the one ``version`` implies (default fan_in)."""
        if self.fan_mode is not None:
            return self.fan_mode
        return "fan_sum" if self.version == "v2" else "fan_in"


@dataclass(frozen=True)
class SpikeAwareOptions:
    """Spike-aware: the membrane target ``sigma_u`` (default θ) or ``target_rate``; the kernel horizon
    ``steps`` (default ``"single"``, the paper's form); the input's second moment (and mean) when not measured;
    the feed-forward share ``recurrent_fraction`` α when recurrent weights feed the same neuron (default: an
    even split); the ``relay`` fraction ρ ∈ [0, 1] (1: the copy relay, no dense part). ``rate=`` and
    ``horizon=``: the former names of ``target_rate`` and ``steps`` (deprecated)."""

    sigma_u: Optional[float] = None
    target_rate: Optional[float] = None
    steps: Horizon = "single"
    input_second_moment: Optional[float] = None
    input_mean: Optional[float] = None
    recurrent_fraction: Optional[float] = None
    relay: float = 0.0
    rate: InitVar[Optional[float]] = None
    horizon: InitVar[Optional[Horizon]] = None

    def __post_init__(self, rate: Optional[float], horizon: Optional[Horizon]):
        _renamed(self, "spike_aware", {"rate": rate, "horizon": horizon})
        _set(self, "sigma_u", _positive("spike_aware", "sigma_u", self.sigma_u, optional=True))
        _set(self, "target_rate", _target_rate("spike_aware", self.target_rate))
        if self.sigma_u is not None and self.target_rate is not None:
            raise OptionError("spike_aware: give the target as sigma_u= or as target_rate=, not both")
        horizon_steps("spike_aware", self.steps)
        _set(self, "input_second_moment", _number("spike_aware", "input_second_moment", self.input_second_moment,
                                                  optional=True))
        _set(self, "input_mean", _number("spike_aware", "input_mean", self.input_mean, optional=True))
        _set(self, "recurrent_fraction", _fraction("spike_aware", "recurrent_fraction", self.recurrent_fraction))
        _set(self, "relay", check_relay(self.relay))


@dataclass(frozen=True)
class FluctuationOptions:
    """Fluctuation-driven: the membrane target mean ``mu_u`` and std ``sigma_u`` (default θ − μ_U, see
    :func:`snn_initplug.laws.membrane_target`) or ``target_rate``; the input ``input_rate`` (the spike rate of
    the input, not a target) or its mean and second moment when not measured; the kernel horizon ``steps``
    (default ``"stationary"``); the feed-forward share ``recurrent_fraction`` α = 0.9 when recurrent weights
    feed the same neuron. ``rate=`` and ``horizon=``: the former names of ``target_rate`` and ``steps``
    (deprecated)."""

    mu_u: float = 0.0
    sigma_u: Optional[float] = None
    target_rate: Optional[float] = None
    input_rate: Optional[float] = None
    steps: Horizon = "stationary"
    input_second_moment: Optional[float] = None
    input_mean: Optional[float] = None
    recurrent_fraction: float = 0.9
    rate: InitVar[Optional[float]] = None
    horizon: InitVar[Optional[Horizon]] = None

    def __post_init__(self, rate: Optional[float], horizon: Optional[Horizon]):
        _renamed(self, "fluctuation", {"rate": rate, "horizon": horizon})
        _set(self, "mu_u", _number("fluctuation", "mu_u", self.mu_u))
        _set(self, "sigma_u", _positive("fluctuation", "sigma_u", self.sigma_u, optional=True))
        _set(self, "target_rate", _target_rate("fluctuation", self.target_rate))
        if self.sigma_u is not None and self.target_rate is not None:
            raise OptionError("fluctuation: give the target as sigma_u= or as target_rate=, not both")
        _set(self, "input_rate", _fraction("fluctuation", "input_rate", self.input_rate))  # a spike probability
        horizon_steps("fluctuation", self.steps)
        _set(self, "input_second_moment", _number("fluctuation", "input_second_moment", self.input_second_moment,
                                                  optional=True))
        _set(self, "input_mean", _number("fluctuation", "input_mean", self.input_mean, optional=True))
        _set(self, "recurrent_fraction", _fraction("fluctuation", "recurrent_fraction", self.recurrent_fraction))


@dataclass(frozen=True)
class SpikeInitOptions:
    """SpikeInit (Shi & Yu 2026): the ``target_rate`` p every neuron fires at (default 0.1, the paper's);
    ``steps`` T: the rate averaged over T simulated steps from rest (Algorithm 3), or None for the stationary
    rate (closed form where it holds, simulated otherwise); ``surrogate``: write each neuron's surrogate at the
    shape α* that keeps the gradient norm (False: leave every surrogate untouched); ``simulate``: the simulated
    variant even where the closed form holds; ``samples`` and ``seed`` of the simulation."""

    target_rate: float = 0.1
    steps: Optional[int] = None
    surrogate: bool = True
    simulate: bool = False
    samples: int = 1 << 15
    seed: int = 0

    def __post_init__(self):
        rate = _number("spikeinit", "target_rate", self.target_rate)
        if not 0.0 < rate < 1.0:
            raise OptionError(f"spikeinit: target_rate must lie in (0, 1), got {self.target_rate!r}")
        _set(self, "target_rate", rate)
        check_steps("spikeinit", self.steps)
        for name in ("surrogate", "simulate"):
            if not isinstance(getattr(self, name), bool):
                raise OptionError(f"spikeinit: {name} must be True or False, got {getattr(self, name)!r}")
        if isinstance(self.samples, bool) or not isinstance(self.samples, numbers.Integral) or self.samples < 1024:
            raise OptionError(f"spikeinit: samples must be an integer >= 1024, got {self.samples!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, numbers.Integral) or self.seed < 0:
            raise OptionError(f"spikeinit: seed must be a non-negative integer, got {self.seed!r}")


@dataclass(frozen=True)
class BaselineOptions:
    """The baselines take no options."""


MethodOptions = Union[IkunOptions, SpikeAwareOptions, FluctuationOptions, SpikeInitOptions, BaselineOptions]

_RECORDS: dict[str, type] = {"ikun": IkunOptions, "spike_aware": SpikeAwareOptions,
                             "fluctuation": FluctuationOptions, "spikeinit": SpikeInitOptions,
                             **{name: BaselineOptions for name in BASELINES}}
ANALYTIC_METHODS = tuple(_RECORDS)


def method_options(method: str, values: Optional[Mapping[str, Any]] = None, where: str = "") -> MethodOptions:
    """The options record of ``method`` from keyword arguments; ``where`` is added to error messages."""
    if method not in _RECORDS:
        raise OptionError(f"initialize: unknown method {method!r}{where}; choose from "
                          f"{list(ANALYTIC_METHODS) + ['calibrated']}")
    values = dict(values or {})
    for old, new in RENAMED_OPTIONS.get(method, {}).items():
        if old in values:
            if new in values:
                raise OptionError(f"{method}: give {new}= (the new name) or {old}= (deprecated), not both")
            warn_renamed(method, old, new, stacklevel=5)
            values[new] = values.pop(old)
    record = _RECORDS[method]
    valid = [f.name for f in fields(record)]
    unknown = sorted(set(values) - set(valid))
    if unknown:
        raise OptionError(f"initialize: unknown option(s) {unknown} for method {method!r}{where}; valid: {valid}")
    return record(**values)


def method_name(options: MethodOptions, baseline: Optional[str] = None) -> str:
    """The method an options record belongs to (a baseline's name cannot be told from its empty record)."""
    for name, record in _RECORDS.items():
        if type(options) is record and record is not BaselineOptions:
            return name
    if isinstance(options, BaselineOptions) and baseline is not None:
        return baseline
    raise OptionError(f"expected a method name or an options record, got {options!r}")


def non_default_fields(record: Any) -> dict[str, Any]:
    """The fields of a record that differ from their defaults (what a user would have passed)."""
    return {f.name: getattr(record, f.name) for f in fields(record) if getattr(record, f.name) != f.default}


# ------------------------------------------------------------------------------------------------------
# Calibration
# ------------------------------------------------------------------------------------------------------
TargetRate = Union[float, dict[str, float], Callable[[str], float]]


@dataclass(frozen=True)
class CalibrationOptions:
    """Options of :func:`snn_initplug.calibrate` (and of ``initialize(..., "calibrated")``): the target rate
    (a number, ``{pattern: rate}`` or a callable on neuron names), the relative ``tolerance``, the rate
    evaluations per layer, the time ``steps`` the batch is presented for, ``bias`` ``"keep"``/``"zero"``, the
    execution ``mode`` (``"auto"``, ``"chain"``, ``"model"``), the RNG ``seed`` of every evaluation, and what
    to do with neurons no weight feeds (``weightless``: ``"report"`` them as not calibrated, or bring them to
    the target through their ``"threshold"``)."""

    target_rate: TargetRate = DEFAULT_TARGET_RATE
    tolerance: float = 0.05
    max_evaluations: int = 30
    steps: Optional[int] = None
    bias: str = "keep"
    mode: str = "auto"
    seed: int = 0
    weightless: str = "report"

    def __post_init__(self):
        if not (callable(self.target_rate) or isinstance(self.target_rate, dict)):
            if isinstance(self.target_rate, bool) or not isinstance(self.target_rate, numbers.Real):
                raise OptionError(f"calibrate: the target rate must be a number in (0, 1), a dict or a callable, "
                                  f"got {self.target_rate!r}")
            if not 0.0 < float(self.target_rate) < 1.0:  # also refuses NaN
                raise OptionError(f"calibrate: the target rate must lie in (0, 1), got {self.target_rate}")
        tolerance = _number("calibrate", "tolerance", self.tolerance)
        if not 0 < tolerance < 1:
            raise OptionError(f"calibrate: tolerance must lie in (0, 1), got {self.tolerance}")
        if isinstance(self.max_evaluations, bool) or not isinstance(self.max_evaluations, numbers.Integral) \
                or self.max_evaluations < 1:
            raise OptionError(f"calibrate: max_evaluations must be a positive integer, got {self.max_evaluations!r}")
        check_steps("calibrate", self.steps)
        _choice("calibrate", "bias", self.bias, ("keep", "zero"))
        if self.mode not in ("auto", "chain", "model"):
            raise OptionError(f"calibrate: mode must be 'auto', 'chain' or 'model', got {self.mode!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, numbers.Integral) \
                or not -2**63 <= self.seed < 2**64:  # the range torch.Generator.manual_seed takes
            raise OptionError(f"calibrate: seed must be an integer in [-2**63, 2**64), got {self.seed!r}")
        _choice("calibrate", "weightless", self.weightless, ("report", "threshold"))


CALIBRATION_FIELDS = tuple(f.name for f in fields(CalibrationOptions))
