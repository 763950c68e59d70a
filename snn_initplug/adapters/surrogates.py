"""The built-in surrogates of the installed frameworks, listed from the frameworks' surrogate modules
themselves (for ``snn-initplug surrogates``); importing a framework here is what the listing asks for."""
from __future__ import annotations

import importlib.util
import inspect
import warnings
from typing import Any, Callable

__all__ = ["builtin_surrogates"]


def builtin_surrogates() -> list[tuple[str, str, Any]]:
    """``(framework, name, spike function)`` for every built-in surrogate of the installed frameworks, with its
    default parameters. Listed from the frameworks' surrogate modules themselves, so a new version's additions
    appear; the ones that cannot be built without arguments are skipped."""
    found: list[tuple[str, str, Any]] = []
    if _installed("snntorch"):
        from snntorch import surrogate as snntorch_surrogate

        for name, factory in vars(snntorch_surrogate).items():
            # the factories are the module's public functions; custom_surrogate needs the user's function
            if inspect.isfunction(factory) and factory.__module__ == snntorch_surrogate.__name__ \
                    and not name.startswith("_") and name != "custom_surrogate":
                _try_build(found, "snntorch", name, factory)
    if _installed("spikingjelly"):
        from spikingjelly.activation_based import surrogate as sj_surrogate

        # 0.0.0.0.14 keeps the multi-parameter surrogates (S2NN, LeakyKReLU, ...) under a second base class
        bases = tuple(getattr(sj_surrogate, name) for name in ("SurrogateFunctionBase", "MultiArgsSurrogateFunctionBase")
                      if hasattr(sj_surrogate, name))
        for name, cls in vars(sj_surrogate).items():
            if isinstance(cls, type) and issubclass(cls, bases) and cls.__module__ == sj_surrogate.__name__ \
                    and not name.endswith("Base"):
                _try_build(found, "spikingjelly", name, cls)
    return found


def _installed(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def _try_build(found: list, framework: str, name: str, factory: Callable) -> None:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            found.append((framework, name, factory()))
    except TypeError:  # needs arguments (SpikingJelly MultiLevelSpikeCount): no default to show
        pass
