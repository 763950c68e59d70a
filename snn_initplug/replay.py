"""Checkpoints: what a :class:`~snn_initplug.reports.Report` records about the ``initialize`` call that made
it, and the checks that make :func:`snn_initplug.reinitialize` reproduce its weights bit for bit (the same
layers, the same laws, the same seeds; for ``"calibrated"`` the same scales)."""
from __future__ import annotations

import dataclasses
import hashlib
import numbers
from dataclasses import asdict
from typing import Any, Optional

import torch

from .errors import InitError
from .laws import Law
from .reports import CalibrationReport, LayerReport, Report
from .selection import skip_list
from .surrogate import Normal, Uniform
from .version import __version__

__all__ = ["SETTINGS_FORMAT", "encode", "decode", "input_fingerprint", "settings", "recorded_call",
           "replayed_seeds", "check_replayed_scales"]

SETTINGS_FORMAT = 1
_DISTRIBUTIONS = {"Uniform": Uniform, "Normal": Normal}


def encode(value: Any) -> Any:
    """A JSON-safe form of an option value; what JSON cannot hold (callables, tensors) is marked
    ``{"__unserializable__": repr}`` so that :func:`snn_initplug.reinitialize` can refuse it by name."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)
    if isinstance(value, (Uniform, Normal)):
        return {"__distribution__": type(value).__name__, **asdict(value)}
    if isinstance(value, (list, tuple)):
        return [encode(v) for v in value]
    if isinstance(value, dict) and all(isinstance(k, str) for k in value):
        return {k: encode(v) for k, v in value.items()}
    return {"__unserializable__": f"{type(value).__name__} {value!r}"}


def decode(value: Any, where: str) -> Any:
    if isinstance(value, list):
        return [decode(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, dict):
        if "__unserializable__" in value:
            raise InitError(f"reinitialize: the report cannot be replayed: {where} was {value['__unserializable__']}, "
                            "which a JSON report cannot hold (use name patterns and plain values instead of "
                            "callables to make a report replayable)")
        if "__distribution__" in value:
            return _distribution(value, where)
        return {k: decode(v, f"{where}[{k!r}]") for k, v in value.items()}
    return value


def _distribution(value: dict[str, Any], where: str) -> Any:
    kind = _DISTRIBUTIONS.get(value["__distribution__"]) if isinstance(value["__distribution__"], str) else None
    if kind is None:
        raise InitError(f"reinitialize: {where} is an unknown distribution {value['__distribution__']!r} "
                        f"(known: {sorted(_DISTRIBUTIONS)})")
    fields = {k: v for k, v in value.items() if k != "__distribution__"}
    expected = {f.name for f in dataclasses.fields(kind)}  # type: ignore[arg-type]
    if set(fields) != expected or not all(isinstance(v, numbers.Real) and not isinstance(v, bool)
                                          for v in fields.values()):
        raise InitError(f"reinitialize: {where}: a {kind.__name__} holds the numbers {sorted(expected)}, the report "
                        f"has {fields!r}")
    return kind(**fields)


_RECORDED = {"method": str, "options": dict, "overrides": dict, "skip": list}


def _tensors(value: Any):
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _tensors(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from _tensors(item)


def input_fingerprint(example_input: Any) -> Optional[dict[str, Any]]:
    """SHA-256 of the example batch's tensors (dtype, shape and bytes), with their shapes: which batch a
    report was made with (provenance only: replay checks the laws themselves)."""
    tensors = [t.detach().cpu().contiguous() for t in _tensors(example_input)]
    if not tensors:
        return None
    digest = hashlib.sha256()
    for t in tensors:
        digest.update(f"{t.dtype}{tuple(t.shape)};".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return {"sha256": digest.hexdigest(), "shapes": [list(t.shape) for t in tensors],
            "dtypes": [str(t.dtype) for t in tensors]}


def settings(method: str, options: dict[str, Any], overrides, skip, example_input, forward,
             world_size: int) -> dict[str, Any]:
    """What replay needs besides the per-layer seeds (which live in the layer rows)."""
    return {
        "format": SETTINGS_FORMAT,
        "method": method,
        "options": encode(dict(options)),
        "overrides": encode(dict(overrides or {})),
        "skip": encode(skip_list(skip)),
        "forward": None if forward is None else f"custom ({getattr(forward, '__qualname__', repr(forward))}): "
                                                 "pass it again to reinitialize",
        "example_input": input_fingerprint(example_input),
        "world_size": world_size,
        "versions": {"snn_initplug": __version__, "torch": torch.__version__},
    }


def recorded_call(report: Report, example_input: Any, forward: Any) -> tuple[str, dict[str, Any], Any, Any]:
    """``(method, options, overrides, skip)`` of the call recorded in ``report``, after checking that it can
    be replayed with the ``example_input`` and ``forward`` given."""
    if not isinstance(report, Report):
        raise InitError(f"reinitialize: expected a Report or a path to one, got {type(report).__name__}")
    recorded = report.settings
    if not recorded:
        raise InitError("reinitialize: the report records no settings (written by an older version)")
    if recorded.get("format") != SETTINGS_FORMAT:
        raise InitError(f"reinitialize: unknown settings format {recorded.get('format')!r} "
                        f"(this version reads {SETTINGS_FORMAT})")
    if recorded.get("example_input") is not None and example_input is None:
        raise InitError(f"reinitialize: the report was made with an example_input (shapes "
                        f"{recorded['example_input']['shapes']}); pass the same batch")
    if recorded.get("forward") is not None and forward is None:
        raise InitError("reinitialize: the report was made with a custom forward=; pass it again")
    for key, kind in _RECORDED.items():
        if not isinstance(recorded.get(key), kind):
            raise InitError(f"reinitialize: the report's settings need {key} as a JSON "
                            f"{ {str: 'string', dict: 'object', list: 'list'}[kind]}, got "
                            f"{'nothing' if key not in recorded else type(recorded[key]).__name__}")
    return (recorded["method"], decode(recorded["options"], "options"), decode(recorded["overrides"], "overrides"),
            decode(recorded["skip"], "skip"))


def replayed_seeds(rows: list[tuple[Law, LayerReport]], replay: Report) -> list[int]:
    """The recorded seeds, after checking that the fresh plan has the recorded layers and laws: the same law
    and seed give the same weights, bit for bit (each layer's draw depends on nothing else)."""
    fresh, recorded = [row.layer for _, row in rows], [row.layer for row in replay.layers]
    if fresh != recorded:
        raise InitError(f"reinitialize: the model's layers {fresh} are not the report's {recorded} "
                        "(a different architecture, or a different plan without the same example_input)")
    for (law, row), old in zip(rows, replay.layers):
        if old.seed is None:
            raise InitError(f"reinitialize: the report has no seed for {old.layer} (written by an older version)")
        if (row.fan_in, row.fan_out) != (old.fan_in, old.fan_out):  # a law of fan_in alone would not notice
            raise InitError(f"reinitialize: {old.layer} has fan_in {row.fan_in} and fan_out {row.fan_out}, the "
                            f"report's {old.fan_in} and {old.fan_out}: the layer's shape changed")
        if (row.method, law.kind, law.mean, law.std, law.relay) != (old.method, old.law, old.mean, old.std, old.relay):
            raise InitError(f"reinitialize: {old.layer}: the law is {row.method} {law.kind}(mean {law.mean!r}, std "
                            f"{law.std!r}, relay {law.relay!r}), the report's {old.method} {old.law}(mean {old.mean!r}, "
                            f"std {old.std!r}, relay {old.relay!r}): "
                            "pass the same example_input (and model) as when the report was made")
    return [int(old.seed) for old in replay.layers if old.seed is not None]  # every seed was checked above


def check_replayed_scales(fresh: CalibrationReport, recorded: Optional[CalibrationReport]) -> None:
    if recorded is None:
        raise InitError("reinitialize: the report says method='calibrated' but holds no calibration")
    got = [(c.neuron, c.scale) for c in fresh.layers]
    want = [(c.neuron, c.scale) for c in recorded.layers]
    if got != want:
        raise InitError(f"reinitialize: calibration found scales {got}, the report {want}: the rates depend on the "
                        "batch and on the parameters initialize leaves alone (biases, BatchNorm): pass the same "
                        "example_input, to a model whose other parameters equal the original's (e.g. built under "
                        "the same torch.manual_seed)")
