"""The commit protocol across ranks (issue 14, class 1): a rank that fails late, ranks with different
architectures and ranks asking for different methods or options all raise the same DistributedError on every
rank, before any rank writes, and every rank's model is left bit for bit as it was.

Each test spawns 2 or 4 CPU processes on gloo (rendezvous through a file in tmp_path) that run every scenario
in turn in one process group (a scenario that left the ranks out of step would hang the next one: the
collective timeout is short, so that fails fast instead).
"""
import os

import pytest
import torch
import torch.nn as nn

import snn_initplug as sip
from gloo_group import gloo_group
from user_neuron import MyLIF, register

pytestmark = pytest.mark.core_suite  # framework-free; see conftest.py

dist = pytest.importorskip("torch.distributed")
if not dist.is_available() or not dist.is_gloo_available():
    pytest.skip("torch.distributed with the gloo backend is not available", allow_module_level=True)


def build(rank: int, hidden: int = 6, depth: int = 2) -> nn.Sequential:
    torch.manual_seed(10 + rank)  # every rank's weights differ: only the package could make them agree
    layers, width = [], 4
    for _ in range(depth):
        layers += [nn.Linear(width, hidden), MyLIF()]
        width = hidden
    return nn.Sequential(*layers)


def unwritable(model: nn.Sequential) -> nn.Sequential:
    model[2].weight = nn.Parameter(model[2].weight.detach()[:, :1].expand_as(model[2].weight))
    return model


def state(model: nn.Module) -> dict:
    thresholds = {f"{n}.theta": torch.tensor(m.theta) for n, m in model.named_modules() if isinstance(m, MyLIF)}
    return {**{k: v.detach().clone() for k, v in model.state_dict().items()}, **thresholds}


def with_threshold_lever(call):
    """``call`` with MyLIF registered with a threshold lever (scale_membrane needs one), then as before."""
    def run(model):
        register(threshold_lever=True)
        try:
            return call(model)
        finally:
            register()
    return run


def reads_membrane_on_the_last_rank(model, x):
    """Two steps; on the last rank the output includes the last neuron's membrane, which scale_membrane changes
    (every rank makes the same call: the difference is in what the model returns there)."""
    last = dist.get_rank() == dist.get_world_size() - 1
    return [(model(x), model[3].u.clone()) if last else model(x) for _ in range(2)]


def failing_late(model: nn.Sequential, after_calls: int) -> nn.Sequential:
    """The first neuron raises from its ``after_calls``-th call on: in the middle of calibrate's search."""
    calls = [0]

    def hook(module, args):
        calls[0] += 1
        if calls[0] > after_calls:
            raise RuntimeError("this rank's model broke in the middle of the search")

    model[1].register_forward_pre_hook(hook)
    return model


def scenarios(rank: int, world: int):
    """name -> (model, call) for this rank; the last rank is the odd one out in each."""
    last = rank == world - 1
    x = torch.rand(8, 4, generator=torch.Generator().manual_seed(rank))
    return {
        # the same call and shapes, but the last rank's second weight cannot be written (an expanded view): it
        # fails after the statistics all-reduce, when the other ranks have their weights ready to write
        "late-failure": (unwritable(build(rank)) if last else build(rank),
                         lambda m: sip.initialize(m, "spike_aware", x)),
        "different-overrides": (build(rank), lambda m: sip.initialize(
            m, "spike_aware", x, overrides={"2*": {"sigma_u": 2.0}} if last else None)),
        "different-width": (build(rank, hidden=7 if last else 6), lambda m: sip.initialize(m, "spike_aware", x)),
        "different-depth": (build(rank, depth=3 if last else 2), lambda m: sip.initialize(m, "spike_aware", x)),
        "different-method": (build(rank), lambda m: sip.initialize(m, "ikun" if last else "spike_aware", x)),
        # the last rank's batch holds a NaN: calibrate refuses it before its first agreement, the others wait there
        "calibrate-early-failure": (build(rank), lambda m: sip.calibrate(
            m, torch.cat([torch.full_like(x[:1], float("nan")), x[1:]]) if last else x, steps=2, max_evaluations=3)),
        # the last rank's model raises in the middle of the search, when the others wait in the rate's all-reduce
        "calibrate-search-failure": (failing_late(build(rank), 6) if last else build(rank), lambda m: sip.calibrate(
            m, x, steps=2, max_evaluations=8, mode="model")),
        "calibrated-search-failure": (failing_late(build(rank), 8) if last else build(rank), lambda m: sip.initialize(
            m, "calibrated", x, steps=2, max_evaluations=8, mode="model")),
        "calibrate-different-target": (build(rank), lambda m: sip.calibrate(
            m, x, target_rate=0.3 if last else 0.15, steps=2, max_evaluations=3)),
        "calibrated-different-start": (build(rank), lambda m: sip.initialize(
            m, "calibrated", x, start="ikun" if last else "spike_aware", steps=2, max_evaluations=3)),
        # every rank has scaled its model when the last one finds its output changed: all put theirs back
        "membrane-late-failure": (build(rank), with_threshold_lever(lambda m: sip.scale_membrane(
            m, 0.5, x, forward=reads_membrane_on_the_last_rank))),
        "membrane-different-factor": (build(rank), with_threshold_lever(lambda m: sip.scale_membrane(
            m, 0.25 if last else 0.5, x, steps=2))),
        # the last rank's model raises during the search for the factor, when the others wait in its agreement
        "balance-search-failure": (failing_late(build(rank), 4) if last else build(rank), with_threshold_lever(
            lambda m: sip.balance_gradients(m, x, steps=2))),
        "balance-different-bounds": (build(rank), with_threshold_lever(lambda m: sip.balance_gradients(
            m, x, steps=2, bounds=(0.125, 8) if last else (1 / 64, 64)))),
    }


def worker(rank: int, world: int, init_file: str, out: str) -> None:
    with gloo_group(rank, world, init_file, timeout_s=20):
        register()
        results = {}
        for name, (model, call) in scenarios(rank, world).items():
            before = state(model)
            try:
                call(model)
                error = None
            except Exception as exc:  # noqa: BLE001 - recorded for the parent to check
                error = (type(exc).__name__, str(exc), type(exc.__cause__).__name__ if exc.__cause__ else None)
            after = state(model)
            unchanged = before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
            results[name] = {"error": error, "unchanged": unchanged}
        torch.save(results, os.path.join(out, f"rank{rank}.pt"))


@pytest.mark.parametrize("world", [2, 4])
def test_every_rank_raises_the_same_error_and_no_rank_writes(world, tmp_path):
    import torch.multiprocessing as mp

    mp.spawn(worker, args=(world, str(tmp_path / "rendezvous"), str(tmp_path)), nprocs=world, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(world)]
    for name in ranks[0]:
        for rank, result in enumerate(ranks):
            assert result[name]["unchanged"], f"{name}: rank {rank}'s model changed"
            kind, message, _ = result[name]["error"] or (None, None, None)
            assert kind == "DistributedError", (name, rank, result[name]["error"])
            assert message == ranks[0][name]["error"][1], (name, rank)  # the same words on every rank
    assert f"rank(s) [{world - 1}] of {world} failed" in ranks[0]["late-failure"]["error"][1]
    assert ranks[world - 1]["late-failure"]["error"][2] == "InitError"  # the failing rank keeps its cause
    assert f"rank(s) [{world - 1}] of {world} failed" in ranks[0]["calibrate-early-failure"]["error"][1]
    assert ranks[world - 1]["calibrate-early-failure"]["error"][2] == "InitError"
    assert f"rank(s) [{world - 1}] of {world} failed" in ranks[0]["membrane-late-failure"]["error"][1]
    assert ranks[world - 1]["membrane-late-failure"]["error"][2] == "InitError"
    for name in ("calibrate-search-failure", "calibrated-search-failure", "balance-search-failure"):
        assert f"rank(s) [{world - 1}] of {world} failed" in ranks[0][name]["error"][1], ranks[0][name]
        assert ranks[world - 1][name]["error"][2] == "RuntimeError"  # the failing rank keeps its cause
    for name in ("different-overrides", "different-width", "different-depth", "different-method", "calibrate-different-target",
                 "calibrated-different-start", "membrane-different-factor", "balance-different-bounds"):
        assert "ranks differ in the model's layers and shapes, the method or its options" in ranks[0][name]["error"][1]


def balance_worker(rank: int, world: int, init_file: str, out: str) -> None:
    with gloo_group(rank, world, init_file, timeout_s=20):
        register(threshold_lever=True)
        model = build(0, hidden=16, depth=6)  # the same weights on every rank, a different batch on each
        x = torch.rand(16, 4, generator=torch.Generator().manual_seed(rank))
        balance = sip.balance_gradients(model, x, steps=2)
        torch.save({"factor": balance.factor, "state": state(model)}, os.path.join(out, f"balance{rank}.pt"))


def test_ranks_with_different_batches_take_the_same_balancing_factor(tmp_path):
    """The slope is averaged over the ranks, so every rank bisects the same way and writes the same factor."""
    import torch.multiprocessing as mp

    mp.spawn(balance_worker, args=(2, str(tmp_path / "rendezvous"), str(tmp_path)), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"balance{r}.pt", weights_only=False) for r in range(2)]
    assert ranks[0]["factor"] == ranks[1]["factor"] != 1.0
    for key, value in ranks[0]["state"].items():
        assert torch.equal(value, ranks[1]["state"][key]), key
