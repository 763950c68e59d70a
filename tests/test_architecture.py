"""The rules of docs/architecture.md, checked on the source: imports point one way (no cycle among the
package's modules), only ``snn_initplug/adapters/`` imports a framework, ``import snn_initplug`` imports no
framework, and every exception the package exports derives from one base."""
import ast
import pathlib
import subprocess
import sys
from typing import Dict, Set

import snn_initplug as sip

PACKAGE = pathlib.Path(sip.__file__).parent
FRAMEWORKS = ("snntorch", "spikingjelly")


def module_name(path: pathlib.Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports() -> Dict[str, Set[str]]:
    """Every import of each module (module level and inside functions), resolved to module names."""
    found: Dict[str, Set[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        name = module_name(path)
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        targets = found.setdefault(name, set())
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                if node.level == 0:
                    targets.add(node.module)
                    continue
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
                for alias in node.names:  # ``from . import replay`` imports the submodule replay
                    sub = f"{target}.{alias.name}"
                    targets.add(sub if (PACKAGE.parent / (sub.replace(".", "/") + ".py")).exists() else target)
    return found


def test_no_import_cycle_among_the_modules():
    """The package's own ``__init__`` loads everything lazily and is left out; every other edge must form a
    directed acyclic graph (a cycle would show as a module reached again from itself)."""
    found = imports()
    graph = {name: {t for t in targets if t in found and t != "snn_initplug"}
             for name, targets in found.items() if name != "snn_initplug"}
    state: Dict[str, int] = {}

    def visit(node, path):
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            assert state.get(nxt) != 1, f"import cycle: {' -> '.join(path + [nxt])}"
            if nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert "snn_initplug.apply" not in graph["snn_initplug.calibration"]  # calibration needs no orchestrator


def test_only_adapters_import_a_framework():
    for name, targets in imports().items():
        if name.startswith("snn_initplug.adapters"):
            continue
        framework = sorted(t for t in targets if t and t.split(".")[0] in FRAMEWORKS)
        assert not framework, f"{name} imports {framework}"


def test_import_is_lazy_and_imports_no_framework():
    code = ("import sys, snn_initplug; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('snntorch', 'spikingjelly', 'torchvision')));"
            "print(sorted(m for m in sys.modules if m.startswith('snn_initplug.')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.splitlines()
    assert out == ["[]", "['snn_initplug.version']"]


def test_every_exported_exception_derives_from_one_base():
    exceptions = [getattr(sip, name) for name in sip.__all__
                  if isinstance(getattr(sip, name), type) and issubclass(getattr(sip, name), BaseException)]
    assert len(exceptions) >= 9
    assert all(issubclass(cls, sip.SnnInitError) for cls in exceptions), exceptions
    # users who catch the built-in classes keep catching them
    assert issubclass(sip.InitError, ValueError) and issubclass(sip.PlanError, ValueError)
    assert issubclass(sip.OptionError, sip.InitError) and issubclass(sip.OptionError, TypeError)
    assert issubclass(sip.UnsupportedNeuronError, TypeError) and issubclass(sip.ArgumentTypeError, TypeError)


def test_no_module_imports_another_modules_private_name():
    """A name with a leading underscore is its module's own: another module that needs it gets a public name."""
    found = []
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom):
                found += [f"{path.relative_to(PACKAGE)}:{node.lineno} imports {alias.name} from {node.module}"
                          for alias in node.names if alias.name.startswith("_") and not alias.name.startswith("__")]
    assert not found, found


# attributes only snnTorch or SpikingJelly modules have: the core asks the adapters instead of reading them
FRAMEWORK_ATTRIBUTES = {
    "_memories", "v_threshold", "v_reset", "v_decay", "c_decay", "decay_input", "surrogate_function", "step_mode",
    "neuronal_charge", "neuronal_fire", "neuronal_reset", "single_step_forward", "multi_step_forward",
    "reset_mem", "init_hidden", "spike_grad", "reset_mechanism", "reset_mechanism_val", "reset_delay",
    "state_function", "graded_spikes_factor", "detach_hidden", "reset_hidden", "mem", "syn", "spk",
}


def core_sources():
    """(path, syntax tree) of every module outside ``adapters/``."""
    for path in sorted(PACKAGE.rglob("*.py")):
        if "adapters" not in path.relative_to(PACKAGE).parts:
            yield path, ast.parse(path.read_text(encoding="utf-8"))


def docstrings(tree: ast.AST) -> Set[int]:
    return {id(node.body[0].value) for node in ast.walk(tree)
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body
            and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant)}


def test_the_core_reads_no_framework_attribute():
    """Outside ``adapters/`` no code reads a framework's attribute, as ``module.attr`` or by name in a string
    (``getattr(module, "v_threshold")``); docstrings may name them."""
    found = []
    for path, tree in core_sources():
        prose = docstrings(tree)
        for node in ast.walk(tree):
            name = node.attr if isinstance(node, ast.Attribute) else \
                node.value if isinstance(node, ast.Constant) and id(node) not in prose else None
            if name in FRAMEWORK_ATTRIBUTES:
                found.append(f"{path.relative_to(PACKAGE)}:{node.lineno} {name}")
    assert not found, found



MODULE_LINES, FUNCTION_LINES = 500, 60


def test_every_module_and_function_is_small_enough_to_read_at_once():
    """No module of the package over 500 lines, no function body (its docstring aside) over 60."""
    too_long = []
    for path in sorted(PACKAGE.rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        if len(text.splitlines()) > MODULE_LINES:
            too_long.append(f"{path.relative_to(PACKAGE)}: {len(text.splitlines())} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                body = node.body[1:] if ast.get_docstring(node) is not None else node.body
                if body and node.end_lineno - body[0].lineno + 1 > FUNCTION_LINES:
                    too_long.append(f"{path.relative_to(PACKAGE)}: {node.name}, "
                                    f"{node.end_lineno - body[0].lineno + 1} lines")
    assert not too_long, too_long
