"""Model walk: pairs against the known architecture, and the model left exactly as it was."""

import pytest
import torch
import torch.nn as nn

import snn_initplug as sip
from snn_initplug.planning import PlanError, plan
from user_neuron import MyLIF, register, unregister


def pairs(p):
    return [(e.module_name, e.norm, e.neuron_name) for e in p.layers if e.role == "input" and e.kind != "internal"]


def snapshot(model):
    """Everything the walk must not change: parameters, all buffers, tensor attributes, SJ memories, flags."""
    state = {}
    for name, module in model.named_modules():
        for key, value in module._parameters.items():
            state[(name, "param", key)] = None if value is None else (value.detach().clone(), value.requires_grad)
        for key, value in module._buffers.items():
            state[(name, "buffer", key)] = None if value is None else value.detach().clone()
        for key, value in vars(module).items():
            if isinstance(value, torch.Tensor):
                state[(name, "attr", key)] = value.detach().clone()
            elif key == "_memories":
                state[(name, "memories")] = {k: v.detach().clone() if isinstance(v, torch.Tensor) else v for k, v in value.items()}
    return state


def assert_same_state(before, after):
    assert before.keys() == after.keys()
    for key, value in before.items():
        other = after[key]
        if isinstance(value, dict):
            assert value.keys() == other.keys(), key
            for k in value:
                a, b = value[k], other[k]
                assert (torch.equal(a, b) if isinstance(a, torch.Tensor) else a == b), key
        elif isinstance(value, tuple):
            assert torch.equal(value[0], other[0]) and value[1] == other[1], key
        elif value is None:
            assert other is None, key
        else:
            assert torch.equal(value, other), key


def check_untouched(make, run, example, **kwargs):
    """Planning leaves parameters, buffers, states, hooks and the RNG as they were, and the next forward pass
    is bit-identical to that of a twin model that was never planned. Returns (model, plan)."""
    torch.manual_seed(0)
    model = make()
    torch.manual_seed(0)
    twin = make()
    for m in (model, twin):  # both carry state from a first pass, as a model in use does
        torch.manual_seed(2)
        run(m)
    before = snapshot(model)
    rng = torch.random.get_rng_state()
    hooks = [(len(m._forward_hooks), len(m._forward_pre_hooks)) for m in model.modules()]
    result = plan(model, example, **kwargs)
    assert torch.equal(rng, torch.random.get_rng_state())
    assert_same_state(before, snapshot(model))
    assert hooks == [(len(m._forward_hooks), len(m._forward_pre_hooks)) for m in model.modules()]
    torch.manual_seed(1)
    a = run(model)
    torch.manual_seed(1)
    b = run(twin)
    assert torch.equal(a, b)
    return model, result


# ------------------------------------------------------------------------------------------------------
# framework-free: a registered user neuron
# ------------------------------------------------------------------------------------------------------


@pytest.fixture
def registered():
    register()
    yield
    unregister()


def test_registered_user_neuron_is_planned(registered):
    x = torch.rand(8, 10)
    net, p = check_untouched(
        lambda: nn.Sequential(nn.Linear(10, 20), nn.BatchNorm1d(20), MyLIF(), nn.Dropout(0.5), nn.Linear(20, 5),
                              nn.Dropout(0.1), MyLIF(0.5, 2.0)),
        lambda m: m(x), x)
    assert pairs(p) == [("0", "1", "2"), ("4", None, "6")]
    assert p.layer("4").between == ("Dropout",)  # only what lies between the layer and its neuron
    assert p.layer("4").spec.threshold == 2.0 and p.layer("4").spec.beta == 0.5
    assert p.layer("0").input_stats.mean == pytest.approx(x.mean().item(), rel=1e-6)
    assert p.layer("0").input_stats.second_moment == pytest.approx((x * x).mean().item(), rel=1e-6)
    assert not p.layer("0").input_stats.binary
    # without an example input, module order gives the same pairs, and says so
    p2 = plan(net)
    assert pairs(p2) == pairs(p) and p2.source == "module-order" and "module order" in str(p2)


def test_residual_sum_pairs_both_layers(registered):
    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.na = nn.Linear(6, 6), MyLIF()
            self.b, self.bn = nn.Linear(6, 6), nn.BatchNorm1d(6)
            self.skip, self.nb = nn.Linear(6, 6), MyLIF()

        def forward(self, x):
            s = self.na(self.a(x))
            return self.nb(self.bn(self.b(s)) + self.skip(x) + s)

    x = torch.rand(4, 6)
    block, p = check_untouched(Block, lambda m: m(x), x)
    assert sorted(pairs(p)) == [("a", None, "na"), ("b", "bn", "nb"), ("skip", None, "nb")]
    assert set(p.layer("b").residual) == {"skip", "spikes of na"}
    with pytest.raises(PlanError, match="pass example_input"):
        plan(block)


def test_bad_inputs_give_clear_errors(registered):
    with pytest.raises(PlanError, match="no spiking neurons"):
        plan(nn.Sequential(nn.Linear(3, 3), nn.ReLU()), torch.rand(2, 3))
    with pytest.raises(sip.ArgumentTypeError, match="must be a torch.nn.Module"):
        plan("not a model")
    net = nn.Sequential(nn.Linear(10, 4), MyLIF())
    before = snapshot(net)
    with pytest.raises(PlanError, match="does not run on the example input"):
        plan(net, torch.rand(2, 7))
    assert_same_state(before, snapshot(net))
    with pytest.raises(PlanError, match="meta device"):
        plan(nn.Sequential(nn.Linear(3, 3, device="meta"), MyLIF()))


# ------------------------------------------------------------------------------------------------------
# snnTorch
# ------------------------------------------------------------------------------------------------------
@pytest.mark.snntorch
def test_snntorch_sequential_init_hidden():
    import snntorch as snn
    from snntorch import utils

    def make():
        return nn.Sequential(nn.Conv2d(1, 8, 5), nn.MaxPool2d(2), snn.Leaky(beta=0.5, init_hidden=True),
                             nn.Conv2d(8, 16, 5), nn.MaxPool2d(2), snn.Leaky(beta=0.7, init_hidden=True), nn.Flatten(),
                             nn.Linear(16 * 4 * 4, 10), snn.Leaky(beta=0.9, init_hidden=True, output=True))

    x = torch.rand(4, 1, 28, 28)

    def run(model):
        utils.reset(model)
        return torch.stack([model(x)[0] for _ in range(3)])

    net, p = check_untouched(make, run, x)
    assert pairs(p) == [("0", None, "2"), ("3", None, "5"), ("7", None, "8")]
    assert p.layer("3").between == ("MaxPool2d",) and p.layer("7").between == ()  # Flatten precedes the Linear
    assert [e.spec.beta for e in p] == pytest.approx([0.5, 0.7, 0.9])
    assert p.layer("3").input_stats.binary  # spikes of the first Leaky
    assert pairs(plan(net)) == pairs(p)


@pytest.mark.snntorch
def test_snntorch_tutorial_time_loop():
    import snntorch as snn

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1, self.lif1 = nn.Linear(784, 100), snn.Leaky(beta=0.95)
            self.fc2, self.lif2 = nn.Linear(100, 10), snn.Leaky(beta=0.95)

        def forward(self, x):
            mem1, mem2 = self.lif1.reset_mem(), self.lif2.reset_mem()
            spikes = []
            for step in range(x.shape[0]):
                spk1, mem1 = self.lif1(self.fc1(x[step]), mem1)
                spk2, mem2 = self.lif2(self.fc2(spk1), mem2)
                spikes.append(spk2)
            return torch.stack(spikes)

    x = (torch.rand(6, 16, 784) < 0.2).float()
    net, p = check_untouched(Net, lambda m: m(x), x)
    assert pairs(p) == [("fc1", None, "lif1"), ("fc2", None, "lif2")]
    stats = p.layer("fc1").input_stats
    assert stats.binary and stats.spike_probability == pytest.approx(x.double().mean().item(), rel=1e-12)
    assert stats.count == x.numel()  # all six time steps
    with pytest.raises(PlanError, match="own forward"):
        plan(net)


# ------------------------------------------------------------------------------------------------------
# SpikingJelly (2.x and 0.0.0.0.14)
# ------------------------------------------------------------------------------------------------------
def _sj_run(x):
    """Run without resetting first, so the neurons carry state into (and out of) the planning pass."""
    return lambda model: model(x)


@pytest.mark.spikingjelly
def test_spikingjelly_multistep_containers():
    from spikingjelly.activation_based import layer, neuron, surrogate

    def make():
        return nn.Sequential(
            layer.SeqToANNContainer(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4)),
            neuron.IFNode(step_mode="m", surrogate_function=surrogate.ATan()),
            layer.MaxPool2d(2, step_mode="m"),
            layer.Flatten(step_mode="m"),
            layer.Linear(4 * 4 * 4, 10, step_mode="m"),
            neuron.LIFNode(tau=2.0, step_mode="m"),
        )

    x = torch.rand(4, 3, 1, 8, 8)
    net, p = check_untouched(make, _sj_run(x), x)
    assert pairs(p) == [("0.0", "0.1", "1"), ("4", None, "5")]
    assert p.layer("4").between == () and p.layer("0.0").between == ()  # pooling follows the neuron here
    assert pairs(plan(net)) == pairs(p)
    assert p.layer("0.0").spec.beta == 1.0 and p.layer("4").spec.beta == 0.5


def _zoo(name, eval_mode=False):
    pytest.importorskip("torchvision")
    from spikingjelly.activation_based import functional, neuron, surrogate
    from spikingjelly.activation_based.model import sew_resnet, spiking_resnet, spiking_vgg

    kwargs = dict(spiking_neuron=neuron.LIFNode, surrogate_function=surrogate.ATan(), detach_reset=True, num_classes=10)
    builders = {
        "spiking_resnet18": lambda: spiking_resnet.spiking_resnet18(**kwargs),
        "sew_resnet18": lambda: sew_resnet.sew_resnet18(cnf="ADD", **kwargs),
        "spiking_vgg11_bn": lambda: spiking_vgg.spiking_vgg11_bn(**kwargs),
    }
    model = builders[name]()
    functional.set_step_mode(model, "m")
    return model.eval() if eval_mode else model


def _expected_resnet_pairs(model, sew):
    expected = [("conv1", "bn1", "sn1")]
    for lname in ("layer1", "layer2", "layer3", "layer4"):
        for bname, block in getattr(model, lname).named_children():
            b = f"{lname}.{bname}"
            expected += [(f"{b}.conv1", f"{b}.bn1", f"{b}.sn1"), (f"{b}.conv2", f"{b}.bn2", f"{b}.sn2")]
            if block.downsample is not None:
                target = f"{b}.downsample_sn" if sew else f"{b}.sn2"
                expected.append((f"{b}.downsample.0", f"{b}.downsample.1", target))
    return sorted(expected)


@pytest.mark.spikingjelly
@pytest.mark.parametrize("name", ["spiking_resnet18", "sew_resnet18"])
def test_spikingjelly_zoo_resnets(name):
    x = torch.rand(2, 1, 3, 32, 32)
    model, p = check_untouched(lambda: _zoo(name), _sj_run(x), x)
    got = sorted((e.module_name, e.norm, e.neuron_name) for e in p.layers)
    assert got == _expected_resnet_pairs(model, sew=name.startswith("sew"))
    convs = {n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)}
    assert convs == {e.module_name for e in p.layers}  # every conv feeds a neuron; the fc readout does not
    if name == "spiking_resnet18":
        # the second neuron of a block also receives the skip path
        assert p.layer("layer1.0.conv2").residual == ("spikes of sn1",)
        assert set(p.layer("layer2.0.conv2").residual) == {"layer2.0.downsample.0"}


@pytest.mark.spikingjelly
def test_spikingjelly_zoo_vgg11_bn():
    x = torch.rand(2, 1, 3, 32, 32)
    model, p = check_untouched(lambda: _zoo("spiking_vgg11_bn"), _sj_run(x), x)
    # expected from module order: each weight layer feeds the next neuron, with the BN in between
    expected, pending, norm = [], None, None
    for n, m in model.named_modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            pending, norm = n, None
        elif isinstance(m, nn.BatchNorm2d):
            norm = n
        elif type(m).__name__ == "LIFNode" and pending:
            expected.append((pending, norm, n))
            pending = None
    assert pairs(p) == expected
    assert len(expected) == 8 + 2  # 8 convs, 2 hidden Linear layers; the last Linear is the readout
    assert [e for e in pairs(p) if e[0].startswith("classifier")] == expected[-2:]


@pytest.mark.snntorch
def test_plain_chain_has_no_residual_and_records_input_sources():
    import snntorch as snn

    net = nn.Sequential(nn.Linear(8, 8), snn.Leaky(beta=0.9, init_hidden=True), nn.Linear(8, 8),
                        snn.Leaky(beta=0.9, init_hidden=True))
    p = plan(net, torch.rand(4, 8))
    assert [e.residual for e in p.layers] == [(), ()]  # F.linear reads weight.t(): still the layer, not a skip
    assert [(e.input_source, e.upstream) for e in p.layers] == [("data", ()), ("neurons", ("1",))]
    assert [(e.input_source, e.upstream) for e in plan(net).layers] == [("data", ()), ("neurons", ("1",))]


def test_entry_point_adapters_are_loaded_once(monkeypatch):
    """A third-party package registers its neuron through the entry-point group, without changes here."""
    import snn_initplug.adapters as adapters

    class ThirdPartyNeuron(nn.Module):
        def forward(self, x):
            return (x > 1).float() + torch.sigmoid(x) - torch.sigmoid(x).detach()

    calls = []

    def register():
        calls.append(1)
        sip.register_neuron(ThirdPartyNeuron, lambda m: sip.NeuronSpec(threshold=1.0, surrogate=torch.sigmoid))

    class EntryPoint:
        name = "thirdparty"

        def load(self):
            return register

    import importlib.metadata as metadata

    monkeypatch.setattr(metadata, "entry_points", lambda **kw: [EntryPoint()] if kw.get("group") == adapters.ENTRY_POINT_GROUP else [])
    monkeypatch.setattr(adapters, "_entry_points_loaded", False)
    try:
        p = plan(nn.Sequential(nn.Linear(4, 4), ThirdPartyNeuron()), torch.rand(2, 4))
        plan(nn.Sequential(nn.Linear(4, 4), ThirdPartyNeuron()), torch.rand(2, 4))
        assert [(e.module_name, e.neuron_name) for e in p.layers] == [("0", "1")]
        assert calls == [1]
    finally:
        sip.unregister_neuron(ThirdPartyNeuron)


class _TransientNode:
    """An autograd node whose children are new Python objects at every access and die when no longer
    referenced, as torch <= 2.11 hands out graph nodes: a freed node's id is soon another node's."""

    def __init__(self, depth: int, weight: torch.Tensor):
        self.depth, self.weight = depth, weight

    @property
    def next_functions(self):
        if self.depth == 0:
            return ((_Leaf(self.weight), 0),)
        return ((_TransientNode(self.depth - 1, self.weight), 0),)


class _Leaf:
    def __init__(self, variable):
        self.variable = variable


def test_graph_walk_survives_node_ids_being_reused():
    """A walk that marks nodes visited by ``id()`` while letting them die would take a fresh node with a reused
    id for visited and stop short of the weight (torch 2.11 creates such nodes on access): a 40-node chain of
    transient nodes must still lead to the weight at its end."""
    from snn_initplug.tracing import trace_sources

    weight = nn.Parameter(torch.zeros(3))
    layers, spikes = trace_sources(_TransientNode(40, weight), {}, {id(weight): "conv"}, {}, {})
    assert layers == {"conv": ((), ())} and spikes == []
