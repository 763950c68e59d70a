"""SpikingJelly single-layer / two-layer LIF networks on MNIST, initialized with snn_initplug.

As in SpikingJelly's ``activation_based/examples/lif_fc_mnist.py`` tutorial: Flatten -> Linear(784, 10) -> LIF
(``-layers 1``) or Flatten -> Linear(784, H) -> LIF -> Linear(H, 10) -> LIF (``-layers 2``), Poisson-encoded input,
multi-step mode (``step_mode='m'``, input [T, N, 1, 28, 28]), MSE between the output firing rate and the one-hot
label, and ``functional.reset_net`` after every batch. Works with SpikingJelly 2.x and 0.0.0.0.14.

    python examples/spikingjelly_mnist.py -layers 1 -init ikun
    python examples/spikingjelly_mnist.py -layers 2 -hidden 400 -init fluctuation -device cuda -backend auto

``-backend``: on 0.0.0.0.14 with CUDA and CuPy installed, ``auto``/``cupy`` use ``backend='cupy'`` for the
multi-step neurons; SpikingJelly 2.x has no backend argument (CUDA uses Triton by itself; ``torch`` forces the
reference implementation through SJ_LIF_CUDA_IMPLEMENTATION). On CPU everything runs in torch.
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


def build(layers: int, hidden: int, tau: float, backend_kwargs: dict) -> nn.Module:
    from spikingjelly.activation_based import functional, layer, neuron, surrogate

    def lif():
        return neuron.LIFNode(tau=tau, surrogate_function=surrogate.ATan(), step_mode="m", **backend_kwargs)

    if layers == 1:
        net = nn.Sequential(layer.Flatten(), layer.Linear(28 * 28, 10, bias=False), lif())
    else:
        net = nn.Sequential(layer.Flatten(), layer.Linear(28 * 28, hidden, bias=False), lif(),
                            layer.Linear(hidden, 10, bias=False), lif())
    functional.set_step_mode(net, "m")
    return net


def parser():
    p = common.base_parser(__doc__.split("\n")[0], T=20, batch=64, epochs=1, lr=1e-3, out="spikingjelly_mnist")
    p.add_argument("-layers", type=int, choices=[1, 2], default=1, help="one or two LIF layers")
    p.add_argument("-hidden", type=arguments.positive_int, default=400, help="hidden LIF neurons (-layers 2)")
    p.add_argument("-tau", type=arguments.tau, default=2.0, help="membrane time constant of LIFNode")
    p.add_argument("-backend", choices=["auto", "torch", "cupy"], default="auto",
                   help="neuron backend (CuPy only on SpikingJelly 0.0.0.0.14 with CUDA)")
    return p


def main(argv=None):
    args = parser().parse_args(argv)
    device = common.sj_start(args)
    from spikingjelly.activation_based import encoding, functional, neuron
    backend_kwargs = common.sj_backend(neuron.LIFNode, args.backend, device)
    x_tr, y_tr, x_te, y_te = common.load_data(args, "mnist")
    train_loader, test_loader = common.loaders(args, x_tr, y_tr, x_te, y_te)

    net = build(args.layers, args.hidden, args.tau, backend_kwargs).to(device)
    encoder = encoding.PoissonEncoder()

    def encode(img):  # [N, 1, 28, 28] -> Poisson spikes [T, N, 1, 28, 28]
        return torch.stack([encoder(img) for _ in range(args.T)])

    report = common.initialize(net, args.init, encode(x_tr[:64].to(device)), args.seed,
                               **arguments.parse_init_options(args.init_opt))
    functional.reset_net(net)
    history = common.History(f"spikingjelly_mnist_{args.layers}layer", args, report)
    optimizer = common.make_optimizer(args, net.parameters())

    for epoch in range(1, args.epochs + 1):
        net.train()
        t0 = time.perf_counter()
        total_loss = correct = seen = 0.0
        bar = common.progress(train_loader, args.quiet, desc=f"epoch {epoch} train")
        for img, label in bar:
            img, label = img.to(device), label.to(device)
            label_onehot = F.one_hot(label, 10).float()
            out_fr = net(encode(img)).mean(0)
            loss = F.mse_loss(out_fr, label_onehot)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            functional.reset_net(net)
            total_loss += loss.item() * len(label)
            correct += (out_fr.argmax(1) == label).sum().item()
            seen += len(label)
            history.add_step(bar, loss=total_loss / seen, acc=correct / seen)
        train_seconds = time.perf_counter() - t0

        net.eval()
        test_loss = test_correct = test_seen = 0.0
        with torch.no_grad():
            for img, label in common.progress(test_loader, args.quiet, desc=f"epoch {epoch} test"):
                img, label = img.to(device), label.to(device)
                out_fr = net(encode(img)).mean(0)
                test_loss += F.mse_loss(out_fr, F.one_hot(label, 10).float()).item() * len(label)
                test_correct += (out_fr.argmax(1) == label).sum().item()
                test_seen += len(label)
                functional.reset_net(net)
        history.add_epoch(epoch, total_loss / seen, correct / seen, test_loss / test_seen, test_correct / test_seen,
                          train_seconds)
        if history.reached(args.stop_at):
            print(f"test accuracy reached {args.stop_at}: stopping")
            break
    history.save(common.out_dir_for(args, f"spikingjelly_mnist_{args.layers}layer"), plots=not args.no_plots)
    return history.record


if __name__ == "__main__":
    main()
