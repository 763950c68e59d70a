"""Ranks agree on the whole call before any collective (issue 29, part 3): for every pair of entry points that
synchronise (initialize, calibrate, scale_membrane, balance_gradients, reinitialize), and for two methods of
initialize that share their first steps (calibrated starts with spike_aware), rank 0 making one call and rank 1
the other raise the same DistributedError on both ranks, at their first agreement (no rank waits for the
group's timeout, which is set far above the test's run time), and neither model changes.

Two CPU processes on gloo run every pair in turn in one process group (see test_commit_distributed.py).
"""
import itertools
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


def build() -> nn.Sequential:
    torch.manual_seed(10)
    return nn.Sequential(nn.Linear(4, 6), MyLIF(), nn.Linear(6, 6), MyLIF())


def state(model: nn.Module) -> dict:
    thresholds = {f"{n}.theta": torch.tensor(m.theta) for n, m in model.named_modules() if isinstance(m, MyLIF)}
    return {**{k: v.detach().clone() for k, v in model.state_dict().items()}, **thresholds}


def calls(x: torch.Tensor) -> dict:
    report = sip.initialize(build(), "spike_aware", x, process_group=False)  # a report to replay, made alone
    return {
        "initialize": lambda m: sip.initialize(m, "spike_aware", x),
        "calibrate": lambda m: sip.calibrate(m, x, steps=2, max_evaluations=3),
        "scale_membrane": lambda m: sip.scale_membrane(m, 0.5, x, steps=2),
        "balance_gradients": lambda m: sip.balance_gradients(m, x, steps=2),
        "reinitialize": lambda m: sip.reinitialize(m, report, x),
    }


PAIRS = list(itertools.combinations(["initialize", "calibrate", "scale_membrane", "balance_gradients",
                                     "reinitialize"], 2))


def worker(rank: int, world: int, init_file: str, out: str) -> None:
    with gloo_group(rank, world, init_file, timeout_s=60):
        register(threshold_lever=True)
        x = torch.rand(8, 4, generator=torch.Generator().manual_seed(rank)) * 2
        entries = calls(x)
        scenarios = {f"{a}|{b}": entries[a if rank == 0 else b] for a, b in PAIRS}
        scenarios["calibrated|spike_aware"] = (lambda m: sip.initialize(m, "calibrated", x, steps=2, max_evaluations=3)
                                               ) if rank == 0 else (lambda m: sip.initialize(m, "spike_aware", x))
        results = {}
        for name, call in scenarios.items():
            model = build()
            before = state(model)
            try:
                call(model)
                error = None
            except Exception as exc:  # noqa: BLE001 - recorded for the parent to check
                error = (type(exc).__name__, str(exc))
            after = state(model)
            results[name] = {"error": error,
                             "unchanged": all(torch.equal(before[k], after[k]) for k in before)}
        torch.save(results, os.path.join(out, f"rank{rank}.pt"))


def test_ranks_making_different_calls_raise_before_any_writes(tmp_path):
    import torch.multiprocessing as mp

    mp.spawn(worker, args=(2, str(tmp_path / "rendezvous"), str(tmp_path)), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(2)]
    assert set(ranks[0]) == {f"{a}|{b}" for a, b in PAIRS} | {"calibrated|spike_aware"}
    for name in ranks[0]:
        for rank, result in enumerate(ranks):
            assert result[name]["unchanged"], f"{name}: rank {rank} wrote"
            kind, message = result[name]["error"] or (None, None)
            assert kind == "DistributedError", (name, rank, result[name]["error"])
            assert "or call different entry points" in message, (name, rank, message)
            assert "failed" not in message.split(";")[0], (name, rank, message)  # a disagreement, not a timeout
