"""The IKUN paper's CSNN on Fashion-MNIST (SpikingJelly), initialized with snn_initplug.

Network (SpikingJelly's conv_fashion_mnist tutorial, as used by IKUN, arXiv 2411.18250):
Conv(1->C, 3x3, pad 1, no bias) - BN - IF - MaxPool(2) - Conv(C->C) - BN - IF - MaxPool(2) - Flatten
- Linear(C*49 -> C*16, no bias) - IF - Linear(C*16 -> 10, no bias) - IF, ATan surrogate (alpha 2), multi-step mode,
the image repeated for T = 4 steps (direct input), MSE between the mean firing rate and the one-hot label.
Paper setting: C = 128, a fixed 20,000-image training subset (random.seed(42)), the full 10k test set, batch 128,
64 epochs, SGD lr 0.1 momentum 0.9 (or Adam 1e-3), cosine annealing over the epochs.

    python examples/spikingjelly_fmnist_csnn.py -init ikun                         # the paper's setting (GPU)
    python examples/spikingjelly_fmnist_csnn.py -init ikun -channels 8 -epochs 2   # scaled down for a CPU

Without internet the data comes from Debian's dataset-fashion-mnist package (see examples/data.py).
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
import arguments  # noqa: E402
import common  # noqa: E402


class CSNN(nn.Module):
    def __init__(self, T: int = 4, channels: int = 128, backend_kwargs: dict = None):
        super().__init__()
        from spikingjelly.activation_based import functional, layer, neuron, surrogate

        kw = dict(surrogate_function=surrogate.ATan(), step_mode="m", **(backend_kwargs or {}))
        self.T = T
        self.conv_fc = nn.Sequential(
            layer.Conv2d(1, channels, kernel_size=3, padding=1, bias=False),
            layer.BatchNorm2d(channels),
            neuron.IFNode(**kw),
            layer.MaxPool2d(2, 2),  # 14 * 14
            layer.Conv2d(channels, channels, kernel_size=3, padding=1, bias=False),
            layer.BatchNorm2d(channels),
            neuron.IFNode(**kw),
            layer.MaxPool2d(2, 2),  # 7 * 7
            layer.Flatten(),
            layer.Linear(channels * 7 * 7, channels * 4 * 4, bias=False),
            neuron.IFNode(**kw),
            layer.Linear(channels * 4 * 4, 10, bias=False),
            neuron.IFNode(**kw),
        )
        functional.set_step_mode(self, step_mode="m")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: images [N, 1, 28, 28] -> mean firing rate of the output layer [N, 10]."""
        x_seq = x.unsqueeze(0).repeat(self.T, 1, 1, 1, 1)  # [T, N, C, H, W], direct encoding
        return self.conv_fc(x_seq).mean(0)


def init_defaults(T: int) -> dict:
    """IF neurons never leak, so the fluctuation method integrates their response over the T simulated steps, and
    spikeinit simulates them over those T steps (they have no stationary rate)."""
    return {"fluctuation": {"steps": T}, "spikeinit": {"steps": T}}


def parser():
    p = common.base_parser(__doc__.split("\n")[0], T=4, batch=128, epochs=64, lr=0.1, out="spikingjelly_fmnist_csnn",
                           subset=20000, opt="sgd")
    p.add_argument("-channels", type=arguments.positive_int, default=128, help="conv channels C (128 in the paper; try 8 on a CPU)")
    p.add_argument("-backend", choices=["auto", "torch", "cupy"], default="auto",
                   help="neuron backend (CuPy only on SpikingJelly 0.0.0.0.14 with CUDA)")
    p.add_argument("-no-cosine", action="store_true", help="constant learning rate instead of cosine annealing")
    return p


def main(argv=None):
    args = parser().parse_args(argv)
    device = common.sj_start(args)
    from spikingjelly.activation_based import functional, neuron
    backend_kwargs = common.sj_backend(neuron.IFNode, args.backend, device)
    x_tr, y_tr, x_te, y_te = common.load_data(args, "fashion_mnist")
    train_loader, test_loader = common.loaders(args, x_tr, y_tr, x_te, y_te, drop_last=True)

    net = CSNN(T=args.T, channels=args.channels, backend_kwargs=backend_kwargs).to(device)
    report = common.initialize(net, args.init, x_tr[:64].to(device), args.seed, defaults=init_defaults(args.T),
                               **arguments.parse_init_options(args.init_opt))
    functional.reset_net(net)
    history = common.History("spikingjelly_fmnist_csnn", args, report)
    optimizer = common.make_optimizer(args, net.parameters())
    scheduler = None if args.no_cosine else torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, max(1, args.epochs))

    for epoch in range(1, args.epochs + 1):
        net.train()
        t0 = time.perf_counter()
        total_loss = correct = seen = 0.0
        bar = common.progress(train_loader, args.quiet, desc=f"epoch {epoch} train")
        for img, label in bar:
            img, label = img.to(device), label.to(device)
            out_fr = net(img)
            loss = F.mse_loss(out_fr, F.one_hot(label, 10).float())
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            functional.reset_net(net)
            total_loss += loss.item() * len(label)
            correct += (out_fr.argmax(1) == label).sum().item()
            seen += len(label)
            history.add_step(bar, loss=total_loss / seen, acc=correct / seen)
        if scheduler is not None:
            scheduler.step()
        train_seconds = time.perf_counter() - t0

        net.eval()
        test_loss = test_correct = test_seen = 0.0
        with torch.no_grad():
            for img, label in common.progress(test_loader, args.quiet, desc=f"epoch {epoch} test"):
                img, label = img.to(device), label.to(device)
                out_fr = net(img)
                test_loss += F.mse_loss(out_fr, F.one_hot(label, 10).float()).item() * len(label)
                test_correct += (out_fr.argmax(1) == label).sum().item()
                test_seen += len(label)
                functional.reset_net(net)
        history.add_epoch(epoch, total_loss / seen, correct / seen, test_loss / test_seen, test_correct / test_seen,
                          train_seconds)
        if history.reached(args.stop_at):
            print(f"test accuracy reached {args.stop_at}: stopping")
            break
    history.save(common.out_dir_for(args, "spikingjelly_fmnist_csnn"), plots=not args.no_plots)
    return history.record


if __name__ == "__main__":
    main()
