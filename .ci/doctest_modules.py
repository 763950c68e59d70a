"""Print the dotted names of the snn_initplug modules whose docstrings hold examples (``>>>``), for

    python -m pytest --doctest-modules --pyargs $(python .ci/doctest_modules.py)

Modules without examples are left out, so that collecting doctests imports no module it does not run.
"""
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

for path in sorted((ROOT / "snn_initplug").rglob("*.py")):
    if ">>>" in path.read_text(encoding="utf-8"):
        parts = path.relative_to(ROOT).with_suffix("").parts
        print(".".join(parts[:-1] if parts[-1] == "__init__" else parts))  # a package by its own name
