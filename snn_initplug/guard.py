"""One exit discipline for every public entry point: :func:`entry_point`.

Whatever way a call leaves (a return, the package's error, the user's model raising, ``KeyboardInterrupt``,
``SystemExit``, ``GeneratorExit``), the model, or the tensor a tensor-level function fills, is exactly as it
was unless the call succeeded. The guard does not rely on each entry point knowing what it touched: it takes a
:class:`ModelState` of everything a call could write, every module's attributes (the neuron attributes an
adapter sets, thresholds, surrogate objects, hidden states, hooks) and every tensor they hold (parameters,
buffers, their ``requires_grad`` and ``.grad``), and puts it back on any exit but a return.

An exception that is neither the package's own (:class:`~snn_initplug.errors.SnnInitError`) nor raised by the
user's code (the model's ``forward``, a ``forward=``, a ``loss_fn``, an adapter, a framework neuron) is a case
the entry point did not foresee: it is re-raised as the entry point's error class, naming the entry point and
the cause (chained). Whose an exception is, is read from its traceback: the innermost frame outside torch,
NumPy and the standard library is either in this package (ours: wrapped) or not (the user's: passed on).

The guard also records the call itself (:func:`snn_initplug.transaction.same_call`): under
``torch.distributed`` every rank's first agreement compares the entry point and its arguments, so ranks that
make different calls raise a :class:`~snn_initplug.errors.DistributedError` before any other collective.
"""
from __future__ import annotations

import functools
import inspect
import os
import sysconfig
import threading
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from types import TracebackType
from typing import Any, Callable, Optional, TypeVar, cast

import torch
import torch.nn as nn

from .errors import ArgumentTypeError, DistributedError, InitError, SnnInitError
from .transaction import exclusive, fingerprint, held_copies, same_call, same_values

__all__ = ["entry_point", "ModelState", "raised_by_user"]

F = TypeVar("F", bound=Callable[..., Any])

_PACKAGE = os.path.dirname(os.path.abspath(__file__))


def _library_folders() -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Where torch and NumPy live, and the standard library: frames there are neither ours nor the user's
    (installed packages below the standard library's folder, snnTorch for one, are the user's)."""
    packages = {os.path.dirname(os.path.abspath(torch.__file__))}
    try:
        import numpy
        packages.add(os.path.dirname(os.path.abspath(numpy.__file__)))
    except ImportError:  # pragma: no cover - torch without NumPy
        pass
    stdlib = {os.path.abspath(sysconfig.get_paths()[key]) for key in ("stdlib", "platstdlib")}
    return tuple(f + os.sep for f in packages), tuple(f + os.sep for f in stdlib)


_LIBRARIES, _STDLIB = _library_folders()


def _library(path: str) -> bool:
    if path.startswith(_LIBRARIES) or path.startswith("<"):  # "<frozen ...>", "<string>"
        return True
    return path.startswith(_STDLIB) and "site-packages" not in path and "dist-packages" not in path
_DISTRIBUTED = os.path.join(os.path.dirname(os.path.abspath(torch.__file__)), "distributed") + os.sep

# arguments that legitimately differ between ranks: each rank's own batch, generator, group and report path
_RANK_LOCAL = frozenset({"model", "example_input", "target", "generator", "process_group", "report", "plan_"})


# ----------------------------------------------------------------------------------------------------------
# Everything a call could write
# ----------------------------------------------------------------------------------------------------------
def _has_data(value: Any) -> bool:
    return (isinstance(value, torch.Tensor) and value.layout == torch.strided and value.device.type != "meta"
            and not isinstance(value, nn.parameter.UninitializedTensorMixin))  # type: ignore[attr-defined]


def _plain_object(value: Any) -> bool:
    """An object whose attributes a call could set (a surrogate object), not a module, tensor, class or function."""
    return (hasattr(value, "__dict__") and not isinstance(value, (nn.Module, torch.Tensor, type))
            and not callable(getattr(value, "__func__", None)) and not inspect.isroutine(value)
            and not inspect.ismodule(value))


class ModelState:
    """The attributes of every module under ``root`` (or of ``root`` itself, a tensor) and the values of every
    tensor they hold; :meth:`restore` puts back what changed: attributes rebound or added, dictionaries
    (``_parameters``, ``_buffers``, hooks, SpikingJelly's memories) refilled, tensor values written back only
    where they differ (a tensor left alone is never written, so restoring cannot fail on one that could not be
    written), ``requires_grad`` and ``.grad`` as they were. One level into plain objects a module holds (a
    surrogate object's parameters) is included too."""

    def __init__(self, root: Any):
        self.objects: list[tuple[Any, dict[str, Any]]] = []  # (object, its attributes then)
        self.dicts: list[tuple[dict, dict]] = []  # (dictionary held by a module, its items then)
        self.tensors: dict[int, tuple[torch.Tensor, torch.Tensor, bool, Optional[torch.Tensor], Any]] = {}
        if isinstance(root, torch.Tensor):
            self._tensor(root)
            return
        for module in root.modules():
            attributes = dict(vars(module))
            self.objects.append((module, attributes))
            for value in attributes.values():
                if isinstance(value, dict):
                    self.dicts.append((value, dict(value)))
                    for item in value.values():
                        self._value(item)
                else:
                    self._value(value)
                    if _plain_object(value):
                        inner = dict(vars(value))
                        self.objects.append((value, inner))
                        for item in inner.values():
                            self._value(item)

    def _value(self, value: Any) -> None:
        if isinstance(value, torch.Tensor):
            self._tensor(value)

    def _tensor(self, tensor: torch.Tensor) -> None:
        if id(tensor) in self.tensors or not _has_data(tensor):
            return
        grad = tensor.grad if tensor.is_leaf else None
        self.tensors[id(tensor)] = (tensor, tensor.detach().clone(), tensor.requires_grad, grad,
                                    grad.detach().clone() if grad is not None and _has_data(grad) else None)

    def copies(self) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
        """``{id(tensor): (tensor, its value then)}``, for :func:`~snn_initplug.transaction.held_copies`."""
        return {key: (tensor, value) for key, (tensor, value, _, _, _) in self.tensors.items()}

    def restore(self) -> None:
        """Put everything back; a part that cannot be restored does not stop the others (the first such
        error is raised at the end)."""
        failure: Optional[BaseException] = None
        for target, attributes in self.objects:
            try:
                now = vars(target)
                for name in [n for n in now if n not in attributes]:
                    del now[name]
                for name, value in attributes.items():
                    if now.get(name, _MISSING) is not value:
                        now[name] = value
            except Exception as exc:  # noqa: BLE001 - keep restoring the rest
                failure = failure or exc
        for dictionary, items in self.dicts:
            if dictionary.keys() != items.keys() or any(dictionary[k] is not v for k, v in items.items()):
                dictionary.clear()
                dictionary.update(items)
        with torch.no_grad():
            for tensor, value, requires_grad, grad, grad_value in self.tensors.values():
                try:
                    if not same_values(tensor, value):
                        tensor.copy_(value)
                    if tensor.is_leaf:
                        if tensor.requires_grad != requires_grad:
                            tensor.requires_grad_(requires_grad)
                        if tensor.grad is not grad:
                            tensor.grad = grad
                        if grad_value is not None and grad is not None and not same_values(grad, grad_value):
                            grad.copy_(grad_value)
                except Exception as exc:  # noqa: BLE001 - keep restoring the rest
                    failure = failure or exc
        if failure is not None:
            raise failure


_MISSING = object()


# ----------------------------------------------------------------------------------------------------------
# Whose exception
# ----------------------------------------------------------------------------------------------------------
def _frames(tb: Optional[TracebackType]) -> list[str]:
    files = []
    while tb is not None:
        files.append(os.path.abspath(tb.tb_frame.f_code.co_filename))
        tb = tb.tb_next
    return files


def raised_by_user(exc: BaseException) -> bool:
    """True when the innermost frame of ``exc``'s traceback outside torch, NumPy and the standard library is
    not this package's: the user's model, ``forward=``, loss, adapter or framework neuron raised it."""
    for path in reversed(_frames(exc.__traceback__)):
        if _library(path):
            continue
        return not path.startswith(_PACKAGE + os.sep)
    return False


def _wrapped(entry: str, error: type[SnnInitError], exc: Exception) -> SnnInitError:
    where = DistributedError if any(p.startswith(_DISTRIBUTED) for p in _frames(exc.__traceback__)) else error
    text = " ".join(str(exc).split())
    text = text if len(text) <= 300 else text[:297] + "..."
    return where(f"{entry}: {type(exc).__name__}: {text}" if text else f"{entry}: {type(exc).__name__}")


# ----------------------------------------------------------------------------------------------------------
# The guard
# ----------------------------------------------------------------------------------------------------------
class _Active(threading.local):
    def __init__(self) -> None:
        self.depth = 0  # entry points running in this thread (only the outermost wraps errors)
        self.subjects: set[int] = set()  # ids of the models / tensors already guarded in this thread


_active = _Active()


def _call_print(entry: str, signature: inspect.Signature, args: tuple, kwargs: dict) -> int:
    """A fingerprint of the call every rank must make alike: the entry point and its arguments but those that
    are each rank's own (its batch, generator, group). Arguments that do not fit the signature (a missing or
    unknown one) are an :class:`ArgumentTypeError` naming the entry point."""
    try:
        bound = signature.bind(*args, **kwargs)
    except TypeError as exc:
        raise ArgumentTypeError(f"{entry}: {exc}") from None
    return fingerprint(entry, {k: v for k, v in bound.arguments.items() if k not in _RANK_LOCAL})


@contextmanager
def _guarding(subject: Any, entry: str) -> Iterator[None]:
    """Hold ``subject`` for this thread and restore it on any exit but success (once per subject and thread:
    ``initialize`` calling ``calibrate`` on the same model is guarded by the outer call)."""
    if not isinstance(subject, (nn.Module, torch.Tensor)) or id(subject) in _active.subjects:
        yield
        return
    with ExitStack() as stack:
        if isinstance(subject, nn.Module):
            stack.enter_context(exclusive(subject, entry))
        state = ModelState(subject)
        stack.enter_context(held_copies(state.copies()))
        _active.subjects.add(id(subject))
        try:
            yield
        except BaseException:
            state.restore()
            raise
        finally:
            _active.subjects.discard(id(subject))


def entry_point(entry: str, error: type[SnnInitError] = InitError) -> Callable[[F], F]:
    """Decorate a public entry point whose first argument is the model (or the tensor to fill, or neither):
    the model is restored on any exit but a return, one thread uses it at a time, and an exception neither the
    package's nor the user's is re-raised as ``error`` naming ``entry`` and the cause."""
    def decorate(function: F) -> F:
        signature = inspect.signature(function)

        @functools.wraps(function)
        def guarded(*args, **kwargs):
            outermost = _active.depth == 0
            _active.depth += 1
            try:
                subject = args[0] if args else next(iter(kwargs.values()), None)
                with ExitStack() as stack:
                    if outermost:
                        stack.enter_context(same_call(_call_print(entry, signature, args, kwargs)))
                    stack.enter_context(_guarding(subject, entry))
                    return function(*args, **kwargs)
            except SnnInitError:
                raise
            except Exception as exc:
                # a warning made an error, a file that cannot be read: the user's settings, passed on as they are
                if not outermost or isinstance(exc, (Warning, OSError)) or raised_by_user(exc):
                    raise
                raise _wrapped(entry, error, exc) from exc
            finally:
                _active.depth -= 1
        return cast(F, guarded)
    return decorate
