"""initialize / calibrate under torch.distributed: identical weights on every rank, global-batch statistics.

Each test spawns CPU processes on the gloo backend (rendezvous through a file in tmp_path, nothing leaves the
machine). Every rank builds the model with a DIFFERENT seed for the weights and the global RNG and gets a
different share of the batch, so only the package's synchronisation can make the ranks agree. The ranks save
their parameters and reports to tmp_path; the parent compares them bit for bit, and against one process that
sees the whole (concatenated) batch.
"""
import os

import pytest
import torch
import torch.nn as nn

import snn_initplug as sip
from snn_initplug import distributed as sipdist
from snn_initplug.calibration import calibrate
from gloo_group import gloo_group
from user_neuron import MyLIF, register

pytestmark = pytest.mark.core_suite  # framework-free; see conftest.py

dist = pytest.importorskip("torch.distributed")
if not dist.is_available() or not dist.is_gloo_available():
    pytest.skip("torch.distributed with the gloo backend is not available", allow_module_level=True)

PER_RANK = 8  # rows of the batch on each rank
STEPS = 4




def build(rank_seed: int) -> nn.Module:
    """Biases and the readout come from a common seed (as DDP would make them equal); the weights that feed
    neurons and the global RNG from ``rank_seed``: they differ from rank to rank."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(12, 24), MyLIF(), nn.Linear(24, 16), MyLIF(), nn.Linear(16, 3))
    torch.manual_seed(rank_seed)
    with torch.no_grad():
        for index in (0, 2):
            model[index].weight.normal_(0, 0.3)
    return model


def global_batch(world: int) -> torch.Tensor:
    return torch.rand(world * PER_RANK, 12, generator=torch.Generator().manual_seed(1234))


def rank_batch(world: int, rank: int) -> torch.Tensor:
    return global_batch(world)[rank * PER_RANK:(rank + 1) * PER_RANK]


def scales(report) -> list:
    return [(c.neuron, c.initial_rate, c.rate, c.scale, c.evaluations, c.status) for c in report.layers]


def state(model: nn.Module) -> dict:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def worker(rank: int, world: int, init_file: str, out: str) -> None:
    with gloo_group(rank, world, init_file, timeout_s=60):  # a stuck collective fails instead of hanging
        register()
        x = rank_batch(world, rank)
        model = build(100 + rank)
        before = state(model)
        report = sip.initialize(model, "spike_aware", x)
        initialized = state(model)
        chain = calibrate(model, x, steps=STEPS)
        model_mode = build(100 + rank)
        model_mode.load_state_dict(initialized)
        whole = calibrate(model_mode, x, steps=STEPS, mode="model")
        alone = build(100 + rank)  # process_group=False: this rank's share only, no broadcast
        alone_report = sip.initialize(alone, "spike_aware", x, process_group=False)
        torch.save({"before": before, "initialized": initialized, "chain": state(model), "model": state(model_mode),
                    "report": report.to_dict(), "chain_scales": scales(chain), "model_scales": scales(whole),
                    "chain_mode": chain.mode, "model_mode": whole.mode, "alone": state(alone),
                    "alone_notes": alone_report.notes}, os.path.join(out, f"rank{rank}.pt"))


def run_ranks(world: int, tmp_path) -> list:
    import torch.multiprocessing as mp

    mp.spawn(worker, args=(world, str(tmp_path / "rendezvous"), str(tmp_path)), nprocs=world, join=True)
    return [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(world)]


def assert_same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


@pytest.fixture
def registered():
    register()
    yield
    sip.unregister_neuron(MyLIF)


@pytest.mark.parametrize("world", [2, 4])
def test_ranks_agree_and_match_one_process_on_the_global_batch(world, tmp_path, registered):
    ranks = run_ranks(world, tmp_path)
    # the test means something: before synchronisation the ranks' weights differ
    assert not torch.equal(ranks[0]["before"]["0.weight"], ranks[1]["before"]["0.weight"])
    for other in ranks[1:]:  # every parameter, bit for bit, after each step
        for key in ("initialized", "chain", "model"):
            assert_same(ranks[0][key], other[key])
        assert other["chain_scales"] == ranks[0]["chain_scales"]
        assert other["model_scales"] == ranks[0]["model_scales"]
        assert other["report"]["layers"][0]["std"] == ranks[0]["report"]["layers"][0]["std"]
    assert ranks[0]["chain_mode"] == "chain" and ranks[0]["model_mode"] == "model"
    assert any("global batch" in note for note in ranks[0]["report"]["notes"])

    # process_group=False inside the group: each rank initializes on its own share, as one process would,
    # and keeps its own draws (no broadcast)
    assert not torch.equal(ranks[0]["alone"]["0.weight"], ranks[1]["alone"]["0.weight"])
    for rank, result in enumerate(ranks):
        assert not any("global batch" in note for note in result["alone_notes"])
        own = build(100 + rank)
        sip.initialize(own, "spike_aware", rank_batch(world, rank))
        assert_same(result["alone"], state(own))

    x = global_batch(world)
    # initialize: one process, rank 0's generator state, the whole batch. The first layer's E[x^2] is a float64
    # sum in another order (and rebuilt from per-rank means), so its std agrees to ~1e-16 relative; the float32
    # weights drawn with that std then agree to within one rounding (rtol 1e-6 > 2^-23 ≈ 1.2e-7).
    single = build(100)
    single_report = sip.initialize(single, "spike_aware", x)
    std_rank, std_single = ranks[0]["report"]["layers"][0]["std"], single_report.layers[0].std
    assert std_rank == pytest.approx(std_single, rel=1e-12, abs=0)
    for key, value in state(single).items():
        torch.testing.assert_close(ranks[0]["initialized"][key], value, rtol=1e-6, atol=0)

    # calibrate: the same start, the whole batch. A rate is (spike count)/(element count); both counts are
    # integers summed exactly (int64), and each sample's neurons see the same arithmetic whichever process runs
    # them (element-wise neurons, row-wise matmul), so the rates, hence every search step and scale, are EXACTLY
    # those of one process, and so are the final weights (start × the same scale).
    for key, mode in (("chain", "auto"), ("model", "model")):
        single = build(100)
        single.load_state_dict(ranks[0]["initialized"])
        report = calibrate(single, x, steps=STEPS, mode=mode)
        assert scales(report) == ranks[0][f"{key}_scales"]
        assert_same(state(single), ranks[0][key])


def test_helpers_are_no_ops_without_a_process_group():
    assert not dist.is_initialized()
    assert not sipdist.is_distributed() and not sipdist.is_distributed(False)
    assert sipdist.world_size() == 1 and sipdist.rank() == 0
    assert sipdist.all_reduce_counts([3, 7]) == [3, 7]
    assert sipdist.all_reduce_sums([0.5]) == [0.5]
    w = torch.randn(3, 4)
    before = w.clone()
    sipdist.broadcast_parameters([w])
    assert torch.equal(w, before)
