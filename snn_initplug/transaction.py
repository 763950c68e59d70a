"""The commit protocol of the entry points that change a model: compute and validate everything, agree
across ranks, then write with a rollback.

1. **Compute** every new tensor without touching the model, and check that each target can take it
   (:func:`check_writable`: floating point, no memory shared between elements, not an inference tensor;
   :func:`snn_initplug.init.sample` refuses draws that underflow the dtype).
2. **Agree** (:func:`agree`): under ``torch.distributed`` every rank all-reduces one vector holding its ok
   flag and a fingerprint of what it is about to do (the plan's layers and shapes, the method and its
   options). A failed rank or a fingerprint that differs makes every rank raise the same
   :class:`~snn_initplug.errors.DistributedError` before any rank writes.
3. **Write** (:func:`write_all`): every target is saved before it is written; if any write fails, every
   tensor written so far is restored and the error re-raised, so the model is all old or all new.

:func:`exclusive` is the per-model guard: a model already in use by one thread is refused by another
(the walks install hooks and write weights; two at once corrupt it).
"""
from __future__ import annotations

import contextlib
import hashlib
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Callable, Optional, TypeVar

import torch
import torch.nn as nn
from torch.utils._python_dispatch import TorchDispatchMode

from .distributed import collective_device, is_distributed, rank, torch_distributed, world_size
from .errors import ConcurrentUseError, DistributedError, InitError, PlanError

__all__ = ["check_writable", "write_all", "Snapshot", "same_values", "held_copies", "agree", "fingerprint",
           "exclusive", "SameDraws", "same_call", "ProcessDraws", "process_rng_kept"]

F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")


# ----------------------------------------------------------------------------------------------------------
# Validate, then write with rollback
# ----------------------------------------------------------------------------------------------------------
def all_finite(tensor: torch.Tensor) -> bool:
    """No NaN and no ±Inf in ``tensor``, from its largest and smallest values (``amax``/``amin`` propagate NaN),
    without a boolean copy of a 100 M-element weight."""
    if tensor.numel() == 0:
        return True
    return bool(torch.isfinite(tensor.amax())) and bool(torch.isfinite(tensor.amin()))


def check_writable(name: str, target: torch.Tensor) -> None:
    """Refuse, before anything is written, a target that cannot take ``new`` in place."""
    if not target.is_floating_point():
        raise InitError(f"{name} is not a floating-point tensor ({target.dtype})")
    if target.is_inference():
        raise InitError(f"{name} is an inference tensor (made under torch.inference_mode()) and cannot be written")
    if torch._debug_has_internal_overlap(target) == 1:  # an expanded view: one element written many times
        raise InitError(f"{name} has elements that share memory (an expanded or strided view); clone() it into "
                        "a Parameter of its own first")


def write_all(writes: Sequence[tuple[torch.Tensor, torch.Tensor]], saved: Optional[Snapshot] = None) -> None:
    """``target.copy_(new)`` for every pair, all or nothing: a failed write restores every target written.

    ``saved``: a :class:`Snapshot` the caller already holds of (at least) every target, as they are now, used
    for the rollback instead of copying them again (a 100 M-parameter model is a 400 MB copy)."""
    saved = saved if saved is not None else Snapshot([target for target, _ in writes])
    with torch.no_grad():
        try:
            for target, new in writes:
                target.copy_(new)
        except BaseException:
            saved.restore()
            raise


class ModelState:
    """Everything an entry point may change in ``model``: its parameters and buffers (weights, biases,
    BatchNorm, tensor thresholds) and each neuron's threshold through its ``levers`` (``factor -> undo``; a
    lever at factor 1 records the value exactly, also a threshold held as a plain float). :meth:`restore` puts
    them all back: the rollback of a call that chains several writes (``initialize`` then ``scale_membrane``)."""

    def __init__(self, model: nn.Module, levers: Sequence[Callable[[float], Callable[[], None]]] = ()):
        self.tensors = Snapshot(list(model.parameters()))
        # buffers (BatchNorm statistics, tensor thresholds); a neuron's state buffer may be re-created with
        # another shape by a pass, and is the neuron's to reset, not ours to restore
        self.buffers = [(b, b.detach().clone()) for b in model.buffers()]
        self.thresholds = [lever(1.0) for lever in levers]

    def restore(self) -> None:
        for undo in reversed(self.thresholds):
            undo()
        self.tensors.restore()
        with torch.no_grad():
            for buffer, old in self.buffers:
                if buffer.shape == old.shape and not torch.equal(buffer, old):
                    buffer.copy_(old)


def same_values(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Bitwise equal values (a NaN where the other has one counts as equal)."""
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    if torch.equal(a, b):
        return True
    return a.is_floating_point() and bool((a.isnan() == b.isnan()).all()) and torch.equal(a.nan_to_num(),
                                                                                           b.nan_to_num())


class _Held(threading.local):
    copies: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}  # id(tensor) -> (tensor, its value at entry)


_held = _Held()


@contextmanager
def held_copies(copies: dict[int, tuple[torch.Tensor, torch.Tensor]]) -> Iterator[None]:
    """Within this block (this thread), a :class:`Snapshot` of a tensor still equal to the copy held here (the
    entry point's, :class:`snn_initplug.guard.ModelState`) shares that copy instead of cloning the tensor
    again: a 100 M-parameter model is not copied twice."""
    outer, _held.copies = _held.copies, {**_held.copies, **copies}
    try:
        yield
    finally:
        _held.copies = outer


def _saved_value(tensor: torch.Tensor) -> torch.Tensor:
    held = _held.copies.get(id(tensor))
    if held is not None and held[0] is tensor and same_values(tensor, held[1]):
        return held[1]  # never written to: the guard only reads it back
    return tensor.detach().clone()


class Snapshot:
    """The values of ``tensors`` now; :meth:`restore` writes back those that changed (a tensor left alone is
    not written, so restoring never fails on a target that could not be written in the first place)."""

    def __init__(self, tensors: Sequence[torch.Tensor]):
        self.saved = [(t, _saved_value(t)) for t in tensors]

    def restore(self) -> None:
        with torch.no_grad():
            for target, old in self.saved:
                if not same_values(target, old):
                    target.copy_(old)


# ----------------------------------------------------------------------------------------------------------
# Agreement under torch.distributed
# ----------------------------------------------------------------------------------------------------------
def _describe(value: Any) -> str:
    """A text of ``value`` that is the same in every process (no object addresses)."""
    if isinstance(value, dict):
        return "{" + ",".join(f"{_describe(k)}:{_describe(v)}" for k, v in sorted(value.items(), key=str)) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_describe(v) for v in value) + "]"
    if isinstance(value, torch.Tensor):
        return f"tensor{tuple(value.shape)}:{value.dtype}"
    if value is None or isinstance(value, (bool, int, float, str)):
        return repr(value)
    if callable(value):
        return f"{getattr(value, '__module__', '')}.{getattr(value, '__qualname__', type(value).__name__)}"
    return f"{type(value).__module__}.{type(value).__qualname__}"


def fingerprint(*parts: Any) -> int:
    """A 62-bit hash of ``parts`` (layer names, shapes, dtypes, the method, its options)."""
    digest = hashlib.sha256(_describe(list(parts)).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 2


class _Call(threading.local):
    print_ = 0  # the fingerprint of the public call this thread is in (0: none)


_call = _Call()


@contextmanager
def same_call(print_: int) -> Iterator[None]:
    """Within this block every :func:`agree` also compares ``print_``, the fingerprint of the public call
    (entry point, method, options) that :func:`snn_initplug.guard.entry_point` records: ranks that made
    different calls differ at their first agreement, whatever the entry points' own fingerprints, before
    any other collective (every entry point's first collective is an agreement)."""
    outer, _call.print_ = _call.print_, print_
    try:
        yield
    finally:
        _call.print_ = outer


def agree(entry: str, print_: int, error: Optional[BaseException], group: Any = None) -> None:
    """Every rank passes what it is about to do (``print_``, a :func:`fingerprint`) and its error (None if it
    computed everything). Outside ``torch.distributed`` the error is re-raised as it is. Under it, one
    all-reduce tells every rank whether any rank failed or the fingerprints (with the public call's,
    :func:`same_call`) differ; if so every rank raises the same :class:`DistributedError` (chained to its own
    error, if any) and nobody writes."""
    if not is_distributed(group):
        if error is not None:
            raise error
        return
    print_ ^= _call.print_
    world, me = world_size(group), rank(group)
    # MAX of [fp, -fp, failed flags]: max and min fingerprint, and which ranks failed, in one collective
    vector = torch.zeros(2 + world, dtype=torch.int64)
    vector[0], vector[1] = print_, -print_
    vector[2 + me] = int(error is not None)
    vector = vector.to(collective_device(group))
    dist = torch_distributed()
    dist.all_reduce(vector, op=dist.ReduceOp.MAX, group=group)
    values = vector.cpu().tolist()
    failed = [r for r in range(world) if values[2 + r]]
    if failed:
        raise DistributedError(f"{entry}: rank(s) {failed} of {world} failed; no rank wrote anything (the error "
                               "is on the rank that failed)") from error
    if values[0] != -values[1]:
        raise DistributedError(f"{entry}: the {world} ranks differ in the model's layers and shapes, the method or "
                               "its options (or call different entry points); no rank wrote anything (every rank must make the same call on the "
                               "same architecture)")


# ----------------------------------------------------------------------------------------------------------
# The same random draws at every evaluation, without reseeding the process RNG when nothing draws
# ----------------------------------------------------------------------------------------------------------
_seeded = threading.local()  # per thread: how many evaluations SameDraws ran seeded inside fork_rng


def seeded_evaluations() -> int:
    """How many evaluations :class:`SameDraws` has run from its seed in this thread (for the report's note)."""
    return getattr(_seeded, "count", 0)


class ProcessDraws(TorchDispatchMode):
    """Notes whether an operation drawing from the process RNG (tagged ``nondeterministic_seeded``, with no
    generator of its own: dropout, ``torch.rand``, ``bernoulli``) runs in this thread. Dispatch modes are
    per thread, so another thread drawing at the same time is not mistaken for the model."""

    def __init__(self) -> None:
        super().__init__()
        self.drew = False

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if not self.drew and torch.Tag.nondeterministic_seeded in func.tags and kwargs.get("generator") is None:
            self.drew = True
        return func(*args, **kwargs)


@contextmanager
def process_rng_kept(watch: bool = True) -> Iterator[None]:
    """The process RNG (CPU, and every initialized CUDA device) is put back after the block only if this
    thread drew from it inside (:class:`ProcessDraws`): a block that draws nothing leaves the RNG alone, so
    another thread drawing meanwhile keeps its stream (``fork_rng`` would rewind it).

    ``watch=False``, for a long block whose passes all run through :class:`SameDraws` (a dispatch mode on
    every operation of a whole search costs about a third of its time): put back only if a
    :class:`SameDraws` inside found that the model draws."""
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_initialized() else []
    cpu, cuda = torch.get_rng_state(), [torch.cuda.get_rng_state(d) for d in devices]
    seeded_before = seeded_evaluations()
    with ProcessDraws() if watch else contextlib.nullcontext(ProcessDraws()) as watcher:
        try:
            yield
        finally:
            if watcher.drew or seeded_evaluations() > seeded_before:
                torch.set_rng_state(cpu)
                for device, state in zip(devices, cuda):
                    torch.cuda.set_rng_state(state, device)


class SameDraws:
    """Run the evaluations of a search so that each sees the same random draws (dropout, a stochastic encoder)
    from ``seed``, touching the process RNG only for a model that draws from it.

    The first evaluation runs as it is, watched (:class:`ProcessDraws`) for an operation drawing from the
    process RNG in this thread. If none ran, the model draws nothing and no evaluation touches the RNG (other
    threads keep their streams). If one ran, that draw is undone, and that and every later evaluation runs
    inside ``fork_rng`` from ``manual_seed(seed)``, which restores the RNG afterwards. torch has one CPU
    generator per process and dropout draws from it, so during such an evaluation another thread drawing
    from the process RNG shares that stream: the limit is documented, and the report says so only for a
    model that draws. ``evaluate`` must be safe to run twice."""

    def __init__(self, seed: int):
        self.seed = seed
        self.draws: Optional[bool] = None  # unknown until the first evaluation

    def run(self, evaluate: Callable[[], T]) -> T:
        if self.draws is None:
            before = torch.get_rng_state()
            with ProcessDraws() as watch:
                result = evaluate()
            self.draws = watch.drew
            if not self.draws:
                return result
            torch.set_rng_state(before)  # the model draws: undo this unseeded pass, rerun it seeded
        if not self.draws:
            return evaluate()
        devices = list(range(torch.cuda.device_count())) if torch.cuda.is_initialized() else []
        _seeded.count = seeded_evaluations() + 1
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(self.seed)
            return evaluate()


# ----------------------------------------------------------------------------------------------------------
# One thread per model
# ----------------------------------------------------------------------------------------------------------
_lock = threading.Lock()
_owners: dict[int, tuple[int, int]] = {}  # id(model) -> (thread ident, depth)


@contextmanager
def exclusive(model: nn.Module, entry: str) -> Iterator[None]:
    """Hold ``model`` for this thread during ``entry``; another thread using it at the same time gets a
    :class:`ConcurrentUseError` (the same thread may re-enter: ``initialize`` calls ``calibrate``).

    Under ``torch.inference_mode()`` no autograd graph is recorded, so no neuron could be traced to its
    weights (and no weight written): that is a :class:`PlanError`, not a silent no-op."""
    if torch.is_inference_mode_enabled():
        raise PlanError(f"{entry}: cannot run under torch.inference_mode() (it records no graph to trace the "
                        "weights by, and forbids writing them); call it outside that block")
    key, me = id(model), threading.get_ident()
    with _lock:
        owner = _owners.get(key)
        if owner is not None and owner[0] != me:
            raise ConcurrentUseError(f"{entry}: this model is being used by another thread (planned, initialized, "
                                     "calibrated or diagnosed); use one model per thread, or wait for that call")
        _owners[key] = (me, 1 if owner is None else owner[1] + 1)
    try:
        yield
    finally:
        with _lock:
            thread, depth = _owners[key]
            if depth == 1:
                del _owners[key]
            else:
                _owners[key] = (thread, depth - 1)
