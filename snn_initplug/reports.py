"""The records that ``initialize`` and ``calibrate`` return: per-layer rows, printing as tables, saved to and
loaded from JSON (what :func:`snn_initplug.reinitialize` replays)."""
from __future__ import annotations

import json
import os
from dataclasses import MISSING, asdict, dataclass, field, fields
from typing import Any, Optional, TypeVar, Union

from .errors import InitError
from .guard import entry_point
from .tables import render_table, short_number

__all__ = ["LayerReport", "Report", "LayerCalibration", "CalibrationReport", "calibrated_label"]


R = TypeVar("R")


def _record(cls: type[R], row: Any, where: str) -> R:
    """``cls(**row)`` for a JSON object with exactly ``cls``'s fields (the defaulted ones may be missing); any
    other value is an :class:`InitError` naming ``where`` (not a KeyError/TypeError from inside)."""
    if not isinstance(row, dict):
        raise InitError(f"{where} must be a JSON object, got {type(row).__name__}: not a saved report")
    known = {f.name for f in fields(cls)}  # type: ignore[arg-type]
    required = {f.name for f in fields(cls)  # type: ignore[arg-type]
                if f.default is MISSING and f.default_factory is MISSING}
    missing, unknown = sorted(required - set(row)), sorted(set(row) - known)
    if missing or unknown:
        raise InitError(f"{where}: missing {missing}, unknown {unknown}: not a report this version wrote")
    return cls(**row)


def _list(value: Any, where: str) -> list[Any]:
    if not isinstance(value, list):
        raise InitError(f"{where} must be a JSON list, got {type(value).__name__}")
    return value


def calibrated_label(start: str) -> str:
    """The method column of a layer initialized by ``method="calibrated"`` from the analytic ``start``."""
    return f"calibrated (start {start})"


@dataclass
class LayerCalibration:
    neuron: str
    parameters: list[str]  # what was scaled ("fc1.weight", or "bn1.weight" when BatchNorm follows the layer)
    target: float
    initial_rate: float
    rate: float
    scale: float
    evaluations: int
    status: str  # "ok", or why the target was not reached


@dataclass
class CalibrationReport:
    layers: list[LayerCalibration]
    mode: str  # "chain" or "model"
    tolerance: float
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(layer.status == "ok" for layer in self.layers)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CalibrationReport:
        if not isinstance(data, dict):
            raise InitError(f"the calibration must be a JSON object, got {type(data).__name__}")
        rows = [_record(LayerCalibration, row, f"calibration layer {i}")
                for i, row in enumerate(_list(data.get("layers"), "the calibration's layers"))]
        if "mode" not in data or "tolerance" not in data:
            raise InitError("the calibration: missing 'mode' or 'tolerance': not a report this version wrote")
        return cls(rows, data["mode"], data["tolerance"], list(_list(data.get("notes", []), "the calibration's notes")))

    def __str__(self) -> str:
        header = ["neuron", "scaled", "target", "initial", "rate", "scale", "evals", "status"]
        rows = [header] + [[c.neuron, ", ".join(c.parameters), f"{c.target:.4g}", f"{c.initial_rate:.4g}",
                            f"{c.rate:.4g}", f"{c.scale:.4g}", str(c.evaluations), c.status] for c in self.layers]
        lines = render_table(rows)
        lines.append(f"[calibrated in {self.mode} mode, tolerance ±{self.tolerance:.0%}]")
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines)


@dataclass
class LayerReport:
    layer: str
    method: str  # the rule that made the law; "calibrated (start spike_aware)" when calibration scaled it
    neuron: str
    surrogate: str
    fan_in: int
    fan_out: int
    gain: float  # fan_in · Var(W)
    std: float
    mean: float
    law: str
    assumed: dict[str, Any] = field(default_factory=dict)  # statistics assumed, with where they came from
    notes: list[str] = field(default_factory=list)
    seed: Optional[int] = None  # seed of this layer's own random stream (drawn in plan order from the generator)
    relay: float = 0.0  # weight of the one-to-one relay path added to the random law (spike_aware relay=)


@dataclass
class Report:
    method: str
    layers: list[LayerReport]
    skipped: list[str]
    plan_source: str
    notes: list[str] = field(default_factory=list)
    calibration: Optional[CalibrationReport] = None  # for method="calibrated"
    # how initialize was called (method, options, overrides, skip, input fingerprint): what reinitialize replays
    settings: dict[str, Any] = field(default_factory=dict)
    # the one call (method "auto"): what it chose and why, the report's first line
    recipe: Optional[str] = None
    membrane: Optional[float] = None  # the factor the membrane was scaled by after the init (scale_membrane)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self, **kwargs) -> str:
        return json.dumps(self.to_dict(), default=str, **kwargs)

    def save(self, path: Union[str, os.PathLike[str]]) -> None:
        """Write the report as indented JSON. Floats are written by ``repr``, so they load back exactly."""
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(self.to_json(indent=2) + "\n")

    @classmethod
    @entry_point("Report.load")
    def load(cls, path: Union[str, os.PathLike[str]]) -> Report:
        """Read a report written by :meth:`save`; :func:`snn_initplug.reinitialize` replays it."""
        with open(path, encoding="utf-8") as handle:
            try:
                data = json.load(handle)
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                raise InitError(f"Report.load: {os.fspath(path)} is not a report's JSON ({exc})") from exc
        return cls.from_dict(data)

    @classmethod
    @entry_point("Report.from_dict")
    def from_dict(cls, data: dict[str, Any]) -> Report:
        """Inverse of :meth:`to_dict`; anything else (a list, missing or unknown keys, a seed that is not an
        integer) is an :class:`InitError`."""
        report = _record(cls, data, "the report")
        layers = [_record(LayerReport, row, f"report layer {i}") for i, row in enumerate(_list(report.layers, "layers"))]
        for row in layers:
            if row.seed is not None and (isinstance(row.seed, bool) or not isinstance(row.seed, int)):
                raise InitError(f"report layer {row.layer}: seed must be an integer, got {row.seed!r}")
            if row.seed is not None and not 0 <= row.seed < 2**63:  # initialize draws them in [0, 2**62)
                raise InitError(f"report layer {row.layer}: seed must lie in [0, 2**63), got {row.seed}")
        settings = report.settings or {}
        if not isinstance(settings, dict):
            raise InitError(f"the report's settings must be a JSON object, got {type(settings).__name__}")
        calibration = report.calibration
        return cls(report.method, layers, list(_list(report.skipped, "skipped")), report.plan_source,
                   list(_list(report.notes, "notes")),
                   None if calibration is None else CalibrationReport.from_dict(calibration),  # type: ignore[arg-type]
                   dict(settings), report.recipe, report.membrane)

    def layer(self, name: str) -> LayerReport:
        for row in self.layers:
            if row.layer == name or row.layer == f"{name}.weight":
                return row
        raise KeyError(name)

    def __str__(self) -> str:
        table = [["layer", "method", "neuron", "surrogate", "fan_in", "gain", "std", "mean", "assumed"]]
        for r in self.layers:
            assumed = "; ".join(f"{k}={short_number(v)}" for k, v in r.assumed.items())
            table.append([r.layer, r.method, r.neuron, r.surrogate, str(r.fan_in), f"{r.gain:.4g}", f"{r.std:.4g}",
                          f"{r.mean:.3g}", assumed])
        lines = ([self.recipe] if self.recipe else []) + render_table(table)
        if self.skipped:
            lines.append(f"skipped: {', '.join(self.skipped)}")
        lines += [f"note: {n}" for n in self.notes + [f"{r.layer}: {n}" for r in self.layers for n in r.notes]]
        if self.calibration is not None:
            lines += ["", "calibration:", str(self.calibration)]
        if self.membrane is not None and self.membrane != 1.0:
            lines.append(f"membrane: weights, biases and thresholds of every scaled neuron ×{self.membrane:g} "
                         "(every spike unchanged, the surrogate wider relative to θ; scale_membrane)")
        return "\n".join(lines)
