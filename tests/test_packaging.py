"""Release checks that run with the suite: the API reference lists every public name, and, when CI runs the
suite against the installed wheel (SNN_INITPLUG_EXPECT_INSTALLED=1), the package really comes from it."""
import os
import re
from pathlib import Path

import pytest

import snn_initplug

CHECKOUT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(not os.environ.get("SNN_INITPLUG_EXPECT_INSTALLED"),
                    reason="set SNN_INITPLUG_EXPECT_INSTALLED=1 when testing an installed wheel")
def test_the_suite_imports_the_installed_package_not_the_checkout():
    package = Path(snn_initplug.__file__).resolve().parent
    assert CHECKOUT not in package.parents, f"snn_initplug imported from the checkout: {package}"
    assert "site-packages" in package.parts
    assert (package / "py.typed").is_file()


def test_api_reference_documents_every_public_name():
    """The top level's names are documented under ``snn_initplug``; every other documented name lives in the
    submodule its section names (and the former top-level names, now deprecated there, are all documented)."""
    import importlib

    api = (CHECKOUT / "docs" / "api.rst").read_text()
    module, documented = "snn_initplug", {}
    for line in api.splitlines():
        current = re.match(r"^\.\. currentmodule:: ([\w.]+)", line)
        if current:
            module = current.group(1)
        entry = re.match(r"^\.\. auto(?:function|class|exception|data):: (\w+)", line)
        if entry:
            documented[entry.group(1)] = module
    top = {name for name, where in documented.items() if where == "snn_initplug"}
    public = set(snn_initplug.__all__) - {"__version__"}
    assert public - top == set(), "add these to docs/api.rst"
    assert top - public == set(), "docs/api.rst names something that is not public at the top level"
    for name, where in documented.items():
        assert hasattr(importlib.import_module(where), name), f"{where}.{name}"
    assert set(snn_initplug._MOVED) <= set(documented), "a deprecated top-level name must be documented where it lives"
