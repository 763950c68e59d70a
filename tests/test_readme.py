"""The README's Quick start runs as pasted, and what its comments promise holds."""
import contextlib
import io
import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"


def quick_start() -> str:
    text = README.read_text(encoding="utf-8")
    section = text[text.index("## Quick start"):]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match, "the Quick start has no python block"
    return match.group(1)


@pytest.mark.snntorch
def test_quick_start_runs_and_every_layer_fires_at_ten_percent():
    pytest.importorskip("snntorch")
    namespace: dict = {}
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(compile(quick_start(), str(README), "exec"), namespace)  # noqa: S102 - the README's own code
    sip, net, batch = (namespace[k] for k in ("sip", "net", "batch"))
    # "each layer: 10% over 25 steps": measured here by running the model once per step, 25 steps, from rest
    for module in net:
        if hasattr(module, "reset_mem"):
            module.reset_mem()
    spikes = [[] for _ in range(3)]
    hooks = [module.register_forward_hook(lambda m, i, o, k=k: spikes[k].append(o[0] if isinstance(o, tuple) else o))
             for k, module in enumerate(m for m in net if hasattr(m, "reset_mem"))]
    import torch

    with torch.no_grad():
        for _ in range(25):
            net(batch)
    for hook in hooks:
        hook.remove()
    rates = [torch.stack(s).mean().item() for s in spikes]
    assert all(abs(rate - 0.1) <= 0.005 + 1e-9 for rate in rates), rates
    # the ikun_ line: std = sqrt(kappa / fan_in) with kappa = pi / arctan(pi) for snnTorch's atan(alpha=2)
    import math

    assert namespace["w"].std().item() == pytest.approx(math.sqrt(math.pi / math.atan(math.pi) / 784), rel=0.02)
    assert "calibrat" in printed.getvalue() and "rate" in printed.getvalue()
    assert sip.diagnose(net, batch, steps=25).layers[0].rate == pytest.approx(rates[0], abs=1e-6)
