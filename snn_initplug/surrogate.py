r"""Surrogate gradients exactly as the frameworks compute them, and their moments.

A spiking neuron emits :math:`s = H(x)` with :math:`x = u - \theta`. In the backward pass the framework
replaces :math:`H'(x)` by a surrogate derivative :math:`h(x)`. The initializers need the moments

.. math::

    m_1 = \mathbb{E}_{x \sim D}[h(x)], \qquad m_2 = \mathbb{E}_{x \sim D}[h(x)^2]

for :math:`D = \mathrm{Uniform}(a, b)` or :math:`\mathcal{N}(\mu, \sigma^2)`.

:math:`h` is obtained by autograd through the framework's own callable (a snnTorch ``spike_grad`` closure, a
SpikingJelly ``surrogate_function`` module, or any callable with a custom backward), so every surrogate,
custom ones included, works without a formula and with its real parameters. The moments are computed by a
vectorised adaptive Gauss-Kronrod (7/15) quadrature with relative tolerance far below 1e-6, which stays
accurate for sharp surrogates (snnTorch ``sigmoid(25)``) and for jumps and kinks (``Rect``, ``triangular``).

This module imports neither snnTorch nor SpikingJelly: it reads surrogates by duck typing.
"""
from __future__ import annotations

import functools
import inspect
import math
import numbers
import threading
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Any, Callable, Optional, Union

import numpy as np
import torch

from .errors import ArgumentTypeError, StochasticSurrogateError, SurrogateError
from .guard import entry_point
from .quadrature import integrate
from .transaction import ProcessDraws, process_rng_kept

__all__ = [
    "SurrogateError",
    "StochasticSurrogateError",
    "Uniform",
    "Normal",
    "SurrogateMoments",
    "describe_surrogate",
    "surrogate_derivative",
    "surrogate_moments",
    "integrate",
    "clear_moment_cache",
    "moment_cache_info",
    "shape_parameter",
]

SpikeFunction = Callable[[torch.Tensor], torch.Tensor]




# --- Distributions of the surrogate's argument x = u - theta ---
@dataclass(frozen=True)
class Uniform:
    """x ~ Uniform(low, high). IKUN's released code uses Uniform(-1, 1)."""

    low: float = -1.0
    high: float = 1.0

    def __post_init__(self):
        low, high = float(self.low), float(self.high)
        if not (math.isfinite(low) and math.isfinite(high)) or not low < high:
            raise SurrogateError(f"Uniform(low={self.low}, high={self.high}): need finite low < high")
        object.__setattr__(self, "low", low)
        object.__setattr__(self, "high", high)

    def support(self) -> tuple[float, float]:
        return self.low, self.high

    def density(self, x: np.ndarray) -> np.ndarray:
        return np.full_like(x, 1.0 / (self.high - self.low))

    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor:
        u = torch.rand(n, generator=generator, dtype=torch.float64)
        return self.low + (self.high - self.low) * u


@dataclass(frozen=True)
class Normal:
    """x ~ N(mean, std²), for example the membrane distribution at init, shifted by the threshold."""

    mean: float = 0.0
    std: float = 1.0

    # Beyond 13 standard deviations the Gaussian mass is below 1e-38: negligible for bounded h.
    _WIDTH = 13.0

    def __post_init__(self):
        mean, std = float(self.mean), float(self.std)
        if not (math.isfinite(mean) and math.isfinite(std)) or not std > 0:
            raise SurrogateError(f"Normal(mean={self.mean}, std={self.std}): need finite mean and std > 0")
        object.__setattr__(self, "mean", mean)
        object.__setattr__(self, "std", std)

    def support(self) -> tuple[float, float]:
        return self.mean - self._WIDTH * self.std, self.mean + self._WIDTH * self.std

    def density(self, x: np.ndarray) -> np.ndarray:
        z = (x - self.mean) / self.std
        return np.exp(-0.5 * z * z) / (self.std * math.sqrt(2.0 * math.pi))

    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor:
        return self.mean + self.std * torch.randn(n, generator=generator, dtype=torch.float64)


Distribution = Union[Uniform, Normal]


# --- Reading a surrogate: kind and parameters, by duck typing ---
def _plain(value: Any) -> Any:
    """0-d tensors become Python numbers so that descriptions read well and compare by value."""
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        return value.item()
    return value


def _is_parameter_value(value: Any) -> bool:
    # Callables count (snnTorch custom_surrogate(func) keeps func in its closure); classes do not: they are code.
    return isinstance(value, (numbers.Number, bool, str, torch.Tensor)) or (callable(value) and not isinstance(value, type))


def _closure_params(fn: Callable) -> dict[str, Any]:
    code, cells = getattr(fn, "__code__", None), getattr(fn, "__closure__", None) or ()
    if code is None:
        return {}
    params = {}
    for name, cell in zip(code.co_freevars, cells):
        value = _cell(cell)
        if _is_parameter_value(value):
            params[name] = _plain(value)
    return params


def _cell(cell) -> Any:
    try:
        return cell.cell_contents
    except ValueError:  # an empty cell
        return None


def _forward_defaults(function_class: type[torch.autograd.Function]) -> dict[str, Any]:
    """Default arguments of an autograd.Function's forward, e.g. snnTorch LeakyParallel.ATan's alpha=2.0."""
    try:
        signature = inspect.signature(function_class.forward)
    except (TypeError, ValueError):
        return {}
    return {
        name: _plain(p.default)
        for name, p in signature.parameters.items()
        if p.default is not inspect.Parameter.empty and _is_parameter_value(p.default)
    }


def describe_surrogate(fn: Any) -> tuple[str, dict[str, Any]]:
    """Return ``(kind, parameters)`` of a spike function, read from the object itself.

    * SpikingJelly modules: the class name and ``_sg_params`` (2.x), or their public scalar attributes
      (0.0.0.0.14), for example ``('Sigmoid', {'alpha': 4.0})``.
    * snnTorch closures: the factory name and the closure's cells, for example ``('atan', {'alpha': 2.0})``.
    * ``SomeFunction.apply``: the Function's name and the defaults of its ``forward``.
    * ``functools.partial``: the wrapped function's kind, with the bound arguments.
    * anything else: its (qual)name and public scalar attributes.

    Args:
        fn: the spike function (``neuron.spike_grad``, ``neuron.surrogate_function``, any callable).

    Returns:
        tuple[str, dict]: the kind and its parameters; used as the cache key and in every report.

    Example:
        >>> import snntorch as snn
        >>> import snn_initplug as sip
        >>> sip.surrogate.describe_surrogate(snn.surrogate.atan(alpha=2.0))
        ('atan', {'alpha': 2.0})
    """
    if fn is None:
        raise SurrogateError("no spike function given (None)")
    if isinstance(fn, functools.partial):
        kind, params = describe_surrogate(fn.func)
        params = dict(params)
        params.update({f"arg{i}": _plain(a) for i, a in enumerate(fn.args)})
        params.update({k: _plain(v) for k, v in fn.keywords.items()})
        return kind, params
    if isinstance(fn, torch.nn.Module):
        sg_params = getattr(fn, "_sg_params", None)
        if isinstance(sg_params, dict):
            return type(fn).__name__, {k: _plain(v) for k, v in sg_params.items()}
        params = {
            k: _plain(v)
            for k, v in vars(fn).items()
            if not k.startswith("_") and k not in ("training", "spiking") and _is_parameter_value(v)
        }
        return type(fn).__name__, params
    owner = getattr(fn, "__self__", None)
    if isinstance(owner, type):  # SomeFunction.apply (a builtin method bound to the class)
        return owner.__name__, _forward_defaults(owner)
    if inspect.isfunction(fn):
        qualname = fn.__qualname__
        # A closure built by a factory is named by the factory ('atan.<locals>.inner' -> 'atan'); snnTorch's
        # parameterless factories (heaviside, straight_through_estimator) return a closure-free 'inner'.
        built = "<locals>" in qualname and (fn.__closure__ or fn.__name__ == "inner")
        kind = qualname.split(".<locals>.")[-2].split(".")[-1] if built else fn.__name__
        return kind, _closure_params(fn)
    params = {
        k: _plain(v)
        for k, v in getattr(fn, "__dict__", {}).items()
        if not k.startswith("_") and isinstance(v, (numbers.Number, bool, str, torch.Tensor))
    }
    return getattr(fn, "__qualname__", type(fn).__name__), params


# The sharpness of a surrogate family, as both frameworks name it (SpikingJelly and snnTorch atan: alpha;
# snnTorch sigmoid, fast_sigmoid, spike_rate_escape, SFS: slope).
SHAPE_NAMES = ("alpha", "slope")


def shape_parameter(params: dict[str, Any]) -> Optional[str]:
    """The name of a surrogate family's shape parameter in its :func:`describe_surrogate` parameters: ``alpha``
    or ``slope`` where the family has one, else its only numeric parameter; None when there is none, or
    several and none of those names (the shape is not one number)."""
    numeric = [k for k, v in params.items() if isinstance(v, numbers.Real) and not isinstance(v, bool)]
    for name in SHAPE_NAMES:
        if name in numeric:
            return name
    return numeric[0] if len(numeric) == 1 else None


def _freeze(value: Any) -> Hashable:
    if isinstance(value, torch.Tensor):
        return ("tensor", str(value.dtype), tuple(value.shape), tuple(value.detach().cpu().flatten().tolist()))
    if isinstance(value, (numbers.Number, bool, str, type(None))):
        return value
    return ("id", id(value))


def _fingerprint(fn: Any) -> Hashable:
    """A key that is equal for two spike functions that compute the same thing.

    The same code (function code object, Module class, autograd Function) with the same parameter values is
    the same surrogate, so 100 SpikingJelly ``ATan(2.0)`` instances, or 100 neurons sharing one closure, share
    one integration. A changed parameter (SpikingJelly ``sf.alpha = 5``, a rewritten snnTorch closure cell)
    changes the key.
    """
    kind, params = describe_surrogate(fn)
    if isinstance(fn, functools.partial):
        code: Hashable = ("partial", _fingerprint(fn.func))
    elif isinstance(fn, torch.nn.Module):
        code = ("module", type(fn), getattr(fn, "spiking", True))
    elif isinstance(getattr(fn, "__self__", None), type):  # SomeFunction.apply: a new object at every access
        code = ("classmethod", fn.__self__, getattr(fn, "__name__", ""))
    elif inspect.ismethod(fn):
        code = ("method", id(fn.__func__), id(fn.__self__))
    elif inspect.isfunction(fn):
        # Every closure cell counts for identity, including the classes the description leaves out.
        cells = tuple(_freeze(_cell(c)) for c in (fn.__closure__ or ()))
        code = ("function", fn.__code__, id(fn.__globals__), cells)
    else:
        code = ("object", id(fn))
    return code, kind, tuple(sorted((k, _freeze(v)) for k, v in params.items()))


# --- The derivative by autograd ---
def _name(fn: Any) -> str:
    try:
        kind, params = describe_surrogate(fn)
    except Exception:  # noqa: BLE001 - only used in error messages
        return repr(fn)
    shown = {k: v for k, v in params.items() if not callable(v)}
    return f"{kind}({', '.join(f'{k}={v!r}' for k, v in shown.items())})"


def surrogate_derivative(fn: SpikeFunction, x: Union[torch.Tensor, np.ndarray, float]) -> torch.Tensor:
    r"""Evaluate :math:`h(x) = \partial s / \partial x` of the spike function ``fn`` at the points ``x``.

    ``fn`` is called on a float64 tensor under ``torch.enable_grad()`` and differentiated with a unit
    upstream gradient, exactly what the framework does inside a neuron. The global RNG state is left as it
    was.

    Args:
        fn: the spike function as the framework calls it (``neuron.spike_grad``, ``neuron.surrogate_function``).
        x: the points :math:`x = u - \theta`.

    Returns:
        Tensor: :math:`h(x)`, float64, the shape of ``x``.

    Raises:
        SurrogateError: the backward raises, the output has no gradient path (snnTorch
            ``surrogate_disable=True``), or :math:`h` is not finite.

    Example:
        snnTorch's arctangent surrogate, :math:`h(x) = 1/(1 + (\pi x \alpha/2)^2)`:

        >>> import torch, snntorch as snn
        >>> import snn_initplug as sip
        >>> sip.surrogate.surrogate_derivative(snn.surrogate.atan(alpha=2.0), torch.tensor([0.0, 1.0]))
        tensor([1.0000, 0.0920], dtype=torch.float64)
    """
    points = torch.as_tensor(x, dtype=torch.float64).detach().clone().requires_grad_(True)
    with process_rng_kept(), torch.enable_grad():
        try:
            out = fn(points)
        except Exception as exc:  # noqa: BLE001 - re-raised with context
            raise SurrogateError(f"spike function {_name(fn)} fails in forward: {type(exc).__name__}: {exc}") from exc
        if not isinstance(out, torch.Tensor) or out.shape != points.shape:
            raise SurrogateError(
                f"spike function {_name(fn)} must map a tensor to a tensor of the same shape, "
                f"got {type(out).__name__} {getattr(out, 'shape', '')}"
            )
        if not out.requires_grad:
            raise SurrogateError(
                f"spike function {_name(fn)} has no gradient path: its output does not require grad "
                "(surrogate disabled, e.g. snnTorch surrogate_disable=True, or a plain step function)"
            )
        try:
            (grad,) = torch.autograd.grad(out, points, torch.ones_like(out), allow_unused=True)
        except Exception as exc:  # noqa: BLE001
            raise SurrogateError(f"spike function {_name(fn)} fails in backward: {type(exc).__name__}: {exc}") from exc
    if grad is None:
        return torch.zeros_like(points.detach())
    grad = grad.detach().to(torch.float64)
    if not torch.isfinite(grad).all():
        raise SurrogateError(f"spike function {_name(fn)} gives a non-finite derivative")
    return grad


# A probe grid dense near 0 (where every built-in surrogate has its features) and reaching |x| = 20.
_PROBE = np.unique(np.concatenate([[0.0], np.geomspace(1e-6, 20.0, 400), -np.geomspace(1e-6, 20.0, 400)]))


def _check_usable(fn: SpikeFunction) -> bool:
    """Raise for an unusable surrogate; return True when it is stochastic. Only a surrogate that draws from the
    process RNG is evaluated from two seeds (in ``fork_rng``): checking a deterministic one never touches it."""
    with ProcessDraws() as watch:
        first = surrogate_derivative(fn, _PROBE)
    if not first.abs().max() > 0:
        raise SurrogateError(
            f"spike function {_name(fn)} has zero derivative on all of [-20, 20]: no gradient flows through it, "
            "and no surrogate-based gain exists"
        )
    if not watch.drew:
        return not torch.equal(first, surrogate_derivative(fn, _PROBE))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(12345)
        second = surrogate_derivative(fn, _PROBE)
        torch.manual_seed(54321)
        third = surrogate_derivative(fn, _PROBE)
    return not (torch.equal(first, second) and torch.equal(second, third))


# --- Moments, cached ---
@dataclass(frozen=True)
class SurrogateMoments:
    """m1 = E_D[h], m2 = E_D[h²] of one surrogate under one distribution."""

    kind: str
    params: dict[str, Any]
    distribution: Distribution
    m1: float
    m2: float
    error: float  # absolute error bound of the quadrature (or Monte-Carlo standard error)
    method: str  # "quadrature" or "monte-carlo"

    def moment(self, k: int) -> float:
        if k not in (1, 2):
            raise SurrogateError(f"moment order must be 1 or 2, got {k}")
        return self.m1 if k == 1 else self.m2


_cache: dict[Hashable, tuple[Any, SurrogateMoments]] = {}
_cache_lock = threading.Lock()
_stats = {"integrations": 0, "hits": 0}


def clear_moment_cache() -> None:
    with _cache_lock:
        _cache.clear()
        _stats.update(integrations=0, hits=0)


def moment_cache_info() -> dict[str, int]:
    """``{'integrations': computed, 'hits': served from cache, 'size': entries}``."""
    with _cache_lock:
        return dict(_stats, size=len(_cache))


def _breakpoints(distribution: Distribution) -> np.ndarray:
    lo, hi = distribution.support()
    reach = max(abs(lo), abs(hi))
    near_zero = np.geomspace(min(1e-7, reach), reach, 80)
    points = np.concatenate([np.linspace(lo, hi, 65), [0.0], near_zero, -near_zero])
    if isinstance(distribution, Normal):
        points = np.concatenate([points, [distribution.mean]])
    return points[(points >= lo) & (points <= hi)]


def _quadrature_moments(fn: SpikeFunction, distribution: Distribution, rtol: float) -> tuple[float, float, float]:
    def integrand(x: np.ndarray) -> np.ndarray:
        h = surrogate_derivative(fn, x).numpy()
        weighted = h * distribution.density(x)
        return np.stack([weighted, h * weighted])  # h and h² in one autograd call

    result = integrate(integrand, _breakpoints(distribution), rtol=rtol)
    return float(result.value[0]), float(result.value[1]), float(result.error.max())


def _monte_carlo_moments(fn: SpikeFunction, distribution: Distribution, samples: int, seed: int):
    generator = torch.Generator().manual_seed(seed)
    x = distribution.sample(samples, generator)
    # The surrogate draws its noise from the global RNG; seeding that with the same seed as x would
    # correlate the two streams (biasing the estimate), so derive an independent seed.
    noise_seed = int(torch.randint(2**62, (1,), generator=generator))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(noise_seed)
        h = surrogate_derivative(fn, x)
    m1, m2 = h.mean().item(), (h * h).mean().item()
    stderr = max(h.std().item(), (h * h).std().item()) / math.sqrt(samples)
    return m1, m2, stderr


@entry_point("surrogate_moments", SurrogateError)
def surrogate_moments(
    fn: SpikeFunction,
    distribution: Optional[Distribution] = None,
    *,
    stochastic: str = "error",
    samples: int = 1 << 20,
    seed: int = 0,
    rtol: float = 1e-11,
) -> SurrogateMoments:
    r"""Moments :math:`m_1 = E_D[h]`, :math:`m_2 = E_D[h^2]` of the surrogate derivative of ``fn``.

    Args:
        fn: the spike function as the framework calls it (``neuron.spike_grad``, ``neuron.surrogate_function``,
            or any callable ``x -> spikes`` with a custom backward).
        distribution: :class:`Uniform` or :class:`Normal` law of ``x = u - threshold``; default
            ``Uniform(-1, 1)`` as in IKUN's released code.
        stochastic: what to do when ``h`` is random (snnTorch ``SSO``): ``"error"`` (default) raises
            :class:`StochasticSurrogateError`; ``"monte-carlo"`` returns a seeded Monte-Carlo estimate over
            ``samples`` draws of x and of the surrogate's own noise, with its standard error in ``error``.
        rtol: relative tolerance of the adaptive quadrature.

    Deterministic surrogates are integrated with adaptive Gauss-Kronrod quadrature (error bound in
    ``error``). Results are cached by (surrogate code and parameter values, distribution): any number of layers
    sharing one surrogate cost one integration; changing a parameter invalidates the entry.

    Returns:
        SurrogateMoments: ``m1``, ``m2``, the error bound, the method, and the surrogate's kind and parameters.

    Example:
        >>> import snntorch as snn
        >>> import snn_initplug as sip
        >>> moments = sip.surrogate_moments(snn.surrogate.atan(alpha=2.0), sip.surrogate.Uniform(-1.0, 1.0))
        >>> round(moments.m1, 4), round(moments.m2, 4)
        (0.4019, 0.247)
        >>> round(1 / moments.m1, 4)  # IKUN's gain for this surrogate
        2.4881
    """
    distribution = Uniform() if distribution is None else distribution
    if not isinstance(distribution, (Uniform, Normal)):
        raise ArgumentTypeError(f"distribution must be snn_initplug.surrogate.Uniform or Normal, got {type(distribution).__name__}")
    if stochastic not in ("error", "monte-carlo"):
        raise SurrogateError(f"stochastic must be 'error' or 'monte-carlo', got {stochastic!r}")
    key = (_fingerprint(fn), distribution, stochastic, samples if stochastic != "error" else None, seed, rtol)
    with _cache_lock:
        entry = _cache.get(key)
        if entry is not None:
            _stats["hits"] += 1
            return entry[1]
    kind, params = describe_surrogate(fn)
    if _check_usable(fn):
        if stochastic == "error":
            raise StochasticSurrogateError(
                f"spike function {_name(fn)} has a random derivative; pass stochastic='monte-carlo' "
                "for a seeded Monte-Carlo estimate of its moments"
            )
        m1, m2, error = _monte_carlo_moments(fn, distribution, samples, seed)
        method = "monte-carlo"
    else:
        m1, m2, error = _quadrature_moments(fn, distribution, rtol)
        method = "quadrature"
    result = SurrogateMoments(kind, params, distribution, m1, m2, error, method)
    with _cache_lock:
        # Keep fn alive so that the id()s inside the key cannot be reused by another object.
        _cache[key] = (fn, result)
        _stats["integrations"] += 1
    return result
