"""Plain-text tables and the labels in them, shared by every report that prints (plan, initialize,
calibration, diagnostics, the command line)."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Optional

import torch

__all__ = ["render_table", "short_number", "surrogate_label"]


def render_table(rows: Sequence[Sequence[str]]) -> list[str]:
    """Left-aligned columns two spaces apart, a dashed rule under the first row (the header)."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return lines


def short_number(value: Any) -> str:
    """Four significant digits; a per-neuron tensor as its range; ``-`` for a value not measured."""
    if value is None:
        return "-"
    if isinstance(value, torch.Tensor):
        if value.numel() == 1:
            return f"{value.item():.4g}"
        return f"[{value.min().item():.3g}..{value.max().item():.3g}]"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def surrogate_label(description: Optional[tuple[str, dict[str, Any]]]) -> str:
    """``ATan(alpha=2)`` from a neuron's ``surrogate_description`` (callable parameters left out)."""
    kind, params = description or ("?", {})
    shown = ", ".join(f"{key}={short_number(value)}" for key, value in params.items() if not callable(value))
    return f"{kind}({shown})"
