"""The snn-initplug command, end to end on small model files written to a temporary folder."""
import json
import subprocess
import sys
import textwrap

import pytest
import torch

import snn_initplug as sip
from snn_initplug import adapters
from snn_initplug.cli import builtin_surrogates, main

# A framework-free model file: its neuron registers itself on import, as a third-party neuron would.
USER_MODEL = textwrap.dedent('''
    import torch
    import torch.nn as nn
    import snn_initplug as sip


    def spike(x):
        soft = torch.sigmoid(4 * x)
        return (x > 0).to(x.dtype) + soft - soft.detach()


    class LIF(nn.Module):
        """u = 0.8 u + x over the leading time axis of a [T, B, F] input, subtract reset."""

        def __init__(self):
            super().__init__()
            self.spike_fn = spike

        def forward(self, x):
            u, out = torch.zeros_like(x[0]), []
            for t in range(x.shape[0]):
                u = 0.8 * u + x[t]
                s = self.spike_fn(u - 1.0)
                u = u - s.detach()
                out.append(s)
            return torch.stack(out)


    sip.register_neuron(LIF, lambda m: sip.NeuronSpec(threshold=1.0, beta=0.8, surrogate=m.spike_fn))


    def make():
        return nn.Sequential(nn.Linear(10, 16), LIF(), nn.Linear(16, 3), LIF())


    def no_neurons():
        return nn.Sequential(nn.Linear(10, 3))


    def unfed():
        return nn.Sequential(LIF(), nn.Linear(10, 3))


    def not_a_model():
        return 42
''')


@pytest.fixture
def model_file(tmp_path):
    """The user model file. Each load of it registers a new LIF class: those are unregistered afterwards, while
    the frameworks' own adapters (registered when a framework is first imported, maybe during the test) stay."""
    saved = set(adapters._registry)
    path = tmp_path / "user_model.py"
    path.write_text(USER_MODEL)
    yield path
    for cls in set(adapters._registry) - saved:
        if not cls.__module__.startswith(("snntorch", "spikingjelly")):
            adapters._registry.pop(cls)


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_diagnose_prints_and_writes_json(model_file, tmp_path, capsys):
    out_json = tmp_path / "d.json"
    code, out, err = run(capsys, "diagnose", f"{model_file}:make", "--input-shape", "6,4,10", "--json", out_json,
                         "--classes", 3, "--seed", 5)
    assert code == 0, err
    assert "rate" in out and "|dL/dW|" in out and "cross-entropy" in out
    data = json.loads(out_json.read_text())
    assert list(data) == ["as-built"]
    rows = data["as-built"]["layers"]
    assert [r["neuron"] for r in rows] == ["1", "3"] and all(r["grad_norm"] > 0 for r in rows)

    # the numbers recomputed by hand on the same model, input and labels: the LIF's spikes and autograd
    import importlib.util

    spec = importlib.util.spec_from_file_location("again", model_file)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    torch.manual_seed(5)
    model = module.make()
    x = torch.rand(6, 4, 10, generator=torch.Generator().manual_seed(5))
    labels = torch.randint(3, (4,), generator=torch.Generator().manual_seed(6))
    hidden = model[1](model[0](x))
    assert rows[0]["rate"] == pytest.approx(hidden.mean().item())
    loss = torch.nn.functional.cross_entropy(model[3](model[2](hidden)).mean(0), labels)
    loss.backward()
    assert rows[1]["grad_norm"] == pytest.approx(model[2].weight.grad.norm().item(), rel=1e-5)


def test_diagnose_several_methods_and_plot(model_file, tmp_path, capsys):
    pytest.importorskip("matplotlib")
    plot, out_json = tmp_path / "d.png", tmp_path / "d.json"
    code, out, err = run(capsys, "diagnose", f"{model_file}:make", "-i", "6,4,10", "--binary", "--init", "as-built",
                         "ikun", "kaiming_uniform", "--plot", plot, "--json", out_json)
    assert code == 0, err
    assert plot.stat().st_size > 0
    assert list(json.loads(out_json.read_text())) == ["as-built", "ikun", "kaiming_uniform"]
    assert "rate [ikun]" in out  # the side-by-side table


def test_init_without_a_method_is_the_one_call(model_file, tmp_path, capsys):
    weights = tmp_path / "w.pt"
    code, out, err = run(capsys, "init", f"{model_file}:make", "--input-shape", "6,4,10", "--out", weights)
    assert code == 0, err
    import importlib.util

    spec = importlib.util.spec_from_file_location("again_auto", model_file)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    torch.manual_seed(0)
    model = module.make()
    report = sip.initialize(model, torch.rand(6, 4, 10, generator=torch.Generator().manual_seed(0)),
                            generator=torch.Generator().manual_seed(0))
    assert out.splitlines()[0] == report.recipe and "calibrated" in report.recipe
    saved = torch.load(weights)
    assert all(torch.equal(saved[k], v) for k, v in model.state_dict().items())


def test_init_saves_the_initialized_state_dict(model_file, tmp_path, capsys):
    weights = tmp_path / "w.pt"
    code, out, err = run(capsys, "init", f"{model_file}:make", "--method", "ikun", "--input-shape", "6,4,10",
                         "--out", weights, "--seed", 7)
    assert code == 0, err
    assert "ikun" in out and str(weights) in out
    saved = torch.load(weights)

    # the same as initialize() with the same seed on the same model and input
    import importlib.util

    spec = importlib.util.spec_from_file_location("again2", model_file)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    torch.manual_seed(7)
    model = module.make()
    x = torch.rand(6, 4, 10, generator=torch.Generator().manual_seed(7))
    sip.initialize(model, "ikun", x, generator=torch.Generator().manual_seed(7))
    assert saved.keys() == model.state_dict().keys()
    assert all(torch.equal(saved[k], v) for k, v in model.state_dict().items())
    # IKUN with the file's surrogate d/dx sigmoid(4x): E[h] on U(-1, 1) = (σ(4) − σ(−4)) / 2, std = sqrt(κ / fan_in)
    kappa = 2.0 / (torch.sigmoid(torch.tensor(4.0)) - torch.sigmoid(torch.tensor(-4.0))).item()
    weight = saved["0.weight"]
    assert weight.std().item() == pytest.approx((kappa / 10) ** 0.5, rel=0.15)


@pytest.mark.parametrize("argv, message", [
    (["diagnose", "{file}:nope", "-i", "6,4,10"], "has no attribute 'nope'"),
    (["diagnose", "{dir}/missing.py:make", "-i", "6,4,10"], "no such file"),
    (["diagnose", "no_such_package_xyz.models:make", "-i", "6,4,10"], "cannot import module"),
    (["diagnose", "{file}", "-i", "6,4,10"], "module:factory"),
    (["diagnose", "{file}:make", "-i", "6,4,7"], "does not run on the example input"),
    (["init", "{file}:make", "-m", "ikun", "-i", "6,4,7", "-o", "{dir}/w.pt"], "does not run on the example input"),
    (["diagnose", "{file}:no_neurons", "-i", "6,4,10"], "no spiking neurons"),
    (["init", "{file}:unfed", "-m", "ikun", "-i", "6,4,10", "-o", "{dir}/w.pt"], "no weight layer feeds a neuron"),
    (["diagnose", "{file}:not_a_model", "-i", "6,4,10"], "torch.nn.Module"),
    (["diagnose", "{file}:make", "-i", "6,4,10", "--classes", "5"], "--classes 5"),
])
def test_errors_are_one_line(model_file, tmp_path, capsys, argv, message):
    argv = [a.format(file=model_file, dir=tmp_path) for a in argv]
    code, out, err = run(capsys, *argv)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and message in lines[0] and "Traceback" not in err
    assert not (tmp_path / "w.pt").exists()


def test_bad_shape_is_an_argparse_error(model_file, capsys):
    with pytest.raises(SystemExit) as info:
        main(["diagnose", f"{model_file}:make", "-i", "6,x4"])
    assert info.value.code == 2 and "shape" in capsys.readouterr().err


def test_surrogates_lists_every_installed_framework(capsys):
    code, out, err = run(capsys, "surrogates")
    assert code == 0
    frameworks = {framework for framework, _, _ in builtin_surrogates()}
    if not frameworks:
        assert "neither snnTorch nor SpikingJelly" in out
        return
    for framework in frameworks:
        assert framework in out
    if "snntorch" in frameworks:  # atan(2): E[h] on Uniform(-1, 1) = arctan(π)/π, kappa = π/arctan(π)
        assert "atan(alpha=2)" in out and "2.48814" in out and "unusable" in out  # LSO is broken in snnTorch 1.0
    if "spikingjelly" in frameworks:
        assert "Sigmoid(alpha=4)" in out and "2.07463" in out
        assert "S2NN" in out  # multi-parameter surrogates (a second base class in 0.0.0.0.14)


@pytest.mark.snntorch
def test_snntorch_sequential_with_steps(tmp_path, capsys):
    pytest.importorskip("snntorch")
    path = tmp_path / "snn_model.py"
    path.write_text(textwrap.dedent('''
        import torch.nn as nn
        import snntorch as snn

        def make():
            return nn.Sequential(nn.Flatten(), nn.Linear(64, 20), snn.Leaky(beta=0.9, init_hidden=True),
                                 nn.Linear(20, 4), snn.Leaky(beta=0.9, init_hidden=True, output=True))
    '''))
    out_json = tmp_path / "d.json"
    code, out, err = run(capsys, "diagnose", f"{path}:make", "-i", "5,1,8,8", "--steps", 6, "--classes", 4,
                         "--json", out_json)
    assert code == 0, err
    rows = json.loads(out_json.read_text())["as-built"]["layers"]
    assert [r["observations"] for r in rows] == [30, 30]  # 5 samples × 6 steps
    assert all(r["grad_norm"] is not None for r in rows)


@pytest.mark.spikingjelly
def test_spikingjelly_module_path(tmp_path, capsys, monkeypatch):
    pytest.importorskip("spikingjelly")
    package = tmp_path / "sjmodels"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "nets.py").write_text(textwrap.dedent('''
        import torch.nn as nn
        from spikingjelly.activation_based import layer, neuron

        def make():
            return nn.Sequential(layer.Flatten(step_mode="m"), layer.Linear(36, 12, step_mode="m"),
                                 neuron.LIFNode(tau=2.0, step_mode="m"), layer.Linear(12, 3, step_mode="m"),
                                 neuron.IFNode(step_mode="m"))
    '''))
    monkeypatch.syspath_prepend(str(tmp_path))
    weights = tmp_path / "w.pt"
    code, out, err = run(capsys, "init", "sjmodels.nets:make", "-m", "spike_aware", "-i", "4,2,1,6,6", "-o", weights)
    assert code == 0, err
    assert set(torch.load(weights)) == {"1.weight", "1.bias", "3.weight", "3.bias"}
    code, out, err = run(capsys, "diagnose", "sjmodels.nets:make", "-i", "4,2,1,6,6", "--classes", 3)
    assert code == 0, err
    assert "LIFNode" in out and "IFNode" in out


def test_python_dash_m_end_to_end(model_file, tmp_path):
    out_json = tmp_path / "d.json"
    result = subprocess.run([sys.executable, "-m", "snn_initplug.cli", "diagnose", f"{model_file}:make",
                             "--input-shape", "6,4,10", "--json", str(out_json)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert json.loads(out_json.read_text())["as-built"]["layers"][0]["neuron"] == "1"
    result = subprocess.run([sys.executable, "-m", "snn_initplug.cli", "diagnose", f"{model_file}:make",
                             "--input-shape", "6,4,9"], capture_output=True, text=True)
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1


def test_relay_option(model_file, tmp_path, capsys):
    """--relay reaches initialize for spike_aware/calibrated (the same weights as the API), labels the diagnosis,
    and is refused for a method that has no relay structure."""
    weights = tmp_path / "w.pt"
    code, out, err = run(capsys, "init", f"{model_file}:make", "--method", "spike_aware", "--relay", 0.9,
                         "--input-shape", "6,4,10", "--out", weights, "--seed", 3)
    assert code == 0, err
    assert "relay_weight=" in out
    import importlib.util

    spec = importlib.util.spec_from_file_location("again_relay", model_file)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    torch.manual_seed(3)
    model = module.make()
    x = torch.rand(6, 4, 10, generator=torch.Generator().manual_seed(3))
    sip.initialize(model, "spike_aware", x, relay=0.9, generator=torch.Generator().manual_seed(3))
    saved = torch.load(weights)
    assert all(torch.equal(saved[k], v) for k, v in model.state_dict().items())

    code, out, err = run(capsys, "diagnose", f"{model_file}:make", "--input-shape", "6,4,10",
                         "--init", "spike_aware", "kaiming_normal", "--relay", 0.9)
    assert code == 0, err
    assert "spike_aware+relay0.9" in out and "kaiming_normal" in out

    code, out, err = run(capsys, "init", f"{model_file}:make", "--method", "ikun", "--relay", 0.9,
                         "--input-shape", "6,4,10", "--out", weights)
    assert code == 2 and "--relay applies to auto, spike_aware and calibrated, not ikun" in err


def _console_script():
    from pathlib import Path

    script = Path(sys.executable).with_name("snn-initplug")
    if not script.is_file():
        pytest.skip("the snn-initplug console script is not installed next to this Python (pip install -e .)")
    return str(script)


def test_console_script_imports_a_module_from_the_working_folder(model_file, tmp_path):
    """``snn-initplug init my_models:make`` run from the folder holding my_models.py, as the README shows."""
    script = _console_script()
    folder = tmp_path / "project"
    folder.mkdir()
    (folder / "my_models.py").write_text(model_file.read_text())
    weights = folder / "w.pt"
    result = subprocess.run([script, "init", "my_models:make", "--method", "ikun", "--input-shape", "6,4,10",
                             "--out", "w.pt"], cwd=folder, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert set(torch.load(weights)) == {"0.weight", "0.bias", "2.weight", "2.bias"}


@pytest.mark.parametrize("argv, message", [
    (["init", "my_models:make", "-m", "ikun", "-i", "6,4,10", "--out", "missing/w.pt"], "does not exist"),
    (["init", "my_models:make", "-m", "ikun", "-i", "6,4,10", "-T", "0", "--out", "w.pt"], "positive integer"),
    (["init", "my_models:make", "-m", "ikun", "-i", "6,4,10", "-T", "-3", "--out", "w.pt"], "positive integer"),
    (["diagnose", "my_models:make", "-i", "6,4,10", "--classes", "0"], "positive integer"),
    (["init", "my_models:make", "-m", "ikun", "-i", "6,4,10", "--relay", "1.5", "--out", "w.pt"], "relay share"),
    (["init", "my_models:make", "-m", "ikun", "-i", "6,4,10", "--seed", "-1", "--out", "w.pt"], "seed"),
    (["diagnose", "my_models:make", "-i", "6,4,10", "--json", "missing/d.json"], "does not exist"),
    # issue 29: exited 0 (relay ignored), and failed with matplotlib's traceback after the whole run
    (["diagnose", "my_models:make", "-i", "6,4,10", "--init", "ikun", "--relay", "0.5"], "--relay applies to"),
    (["diagnose", "my_models:make", "-i", "6,4,10", "--plot", "x.xyz"], "cannot save the format 'xyz'"),
])
def test_console_script_bad_arguments_before_any_work(tmp_path, argv, message):
    """Bad arguments: one line on stderr, exit 2, and the model file is never imported (it would write a mark)."""
    script = _console_script()
    (tmp_path / "my_models.py").write_text("open('imported', 'w').close()\n" + USER_MODEL)
    result = subprocess.run([script, *argv], cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr
    assert not (tmp_path / "imported").exists() and not (tmp_path / "w.pt").exists()
