"""Check a built wheel against the source tree: every module of snn_initplug and py.typed inside, nothing else.

    python .ci/check_wheel.py dist/snn_initplug-*.whl [source root]

Exits 1 with one line per problem; a module left out of the package list, or a test, example or benchmark file
swept into the wheel, is what this catches.
"""
import re
import sys
import zipfile
from pathlib import Path

PACKAGE = "snn_initplug"


def source_files(root: Path):
    """Every file the wheel must carry, as wheel paths: the package's modules and its py.typed marker."""
    package = root / PACKAGE
    files = {p.relative_to(root).as_posix() for p in package.rglob("*.py") if "__pycache__" not in p.parts}
    files.add(f"{PACKAGE}/py.typed")
    return files


def source_version(root: Path) -> str:
    text = (root / PACKAGE / "version.py").read_text()
    return re.search(r'^__version__ = "([^"]+)"', text, re.M).group(1)


def problems(wheel: Path, root: Path):
    names = set(zipfile.ZipFile(wheel).namelist())
    version = source_version(root)
    dist_info = f"{PACKAGE}-{version}.dist-info"
    if not wheel.name.startswith(f"{PACKAGE}-{version}-"):
        yield f"wheel {wheel.name} does not carry the version of {PACKAGE}/version.py ({version})"
    for missing in sorted(source_files(root) - names):
        yield f"missing from the wheel: {missing}"
    for name in sorted(names):
        top = name.split("/")[0]
        if top not in (PACKAGE, dist_info):
            yield f"not part of the package: {name}"
        elif name.endswith((".pyc", ".pyo")) or "__pycache__" in name:
            yield f"compiled file in the wheel: {name}"
    if f"{dist_info}/licenses/LICENSE" not in names:
        yield "LICENSE missing from the wheel's metadata"


def main(argv) -> int:
    if not 2 <= len(argv) <= 3:
        print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        return 2
    wheel = Path(argv[1])
    root = Path(argv[2]) if len(argv) == 3 else Path(__file__).resolve().parents[1]
    found = list(problems(wheel, root))
    for line in found:
        print(f"check_wheel: {line}")
    if not found:
        print(f"check_wheel: {wheel.name} holds all {len(source_files(root))} package files and nothing else")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
