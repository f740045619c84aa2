"""Time the permuted-MNIST step (weights and mask trained together) against an ordinary training step.

Network: FNN 784-800-800-64-10 (the paper's permuted-MNIST network), batch 128, K = 8 mask samples,
CPU. The joint step is :func:`modmask.training.train_jointly` exactly as the workflow runs it (Adam on
weights and logits, the mask regulariser, gradient clipping, half of layers 2-4 frozen as in a later
task). The reference is a plain-PyTorch step of the same network and batch: forward, cross-entropy,
backward, clipping, Adam. Both run with the workflow's allocator setting (``tune_cpu_allocator``), as
every workflow job does. Both are timed over whole loops; the joint time is
``(time of warmup + reps steps - time of warmup steps) / reps``, so compilation is excluded.

    python benchmarks/bench_joint_step.py --threads 1 --out benchmarks/results/joint_step.json

Target (issue 28): joint / ordinary <= 3.0 at these settings.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
import time
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from modmask.experiments.permuted_mnist import SELECTION, build_network  # noqa: E402
from modmask import runtime  # noqa: E402
from modmask.masks import WeightMask  # noqa: E402
from modmask.masked_model import KERNEL_CHOICES  # noqa: E402
from modmask.training import BatchSampler, TrainSettings, train_jointly  # noqa: E402


def _clock():
    return time.perf_counter(), time.process_time()


def _since(start) -> tuple[float, float]:
    wall, cpu = _clock()
    return (wall - start[0]) * 1e3, (cpu - start[1]) * 1e3


def ordinary_ms(x, y, args) -> tuple[float, float]:
    torch.manual_seed(0)
    net = build_network([800, 800, 64], "xavier_normal")
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    sampler = BatchSampler([x, y], args.batch, seed=0)

    def step():
        inputs, targets = sampler()
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(net(inputs), targets)
        loss.backward()
        nn.utils.clip_grad_norm_(list(net.parameters()), 1.0)
        opt.step()

    for _ in range(args.warmup):
        step()
    start = _clock()
    for _ in range(args.reps):
        step()
    wall, cpu = _since(start)
    return wall / args.reps, cpu / args.reps


def joint_ms(x, y, args) -> tuple[float, float, str]:
    def loop(steps: int):
        torch.manual_seed(0)
        net = build_network([800, 800, 64], "xavier_normal")
        mask = WeightMask.for_module(net, SELECTION, 2.0)
        generator = torch.Generator().manual_seed(1)
        frozen = {name: torch.rand(p.shape, generator=generator) < 0.5
                  for name, p in net.named_parameters() if not name.startswith("layers.0.")}
        settings = TrainSettings.from_config({"steps": steps, "lr": 1e-2, "batch_size": args.batch,
                                              "mask_samples": args.k, "beta": 1.28e-3, "grad_clip": 1.0,
                                              "log_every": 10 ** 9, "kernels": args.kernels})
        start = _clock()
        train_jointly(net, mask, BatchSampler([x, y], args.batch, seed=0), F.cross_entropy, settings,
                      frozen=frozen, log=logging.getLogger("bench"))
        return _since(start)

    loop(1)  # compiles the kernels (or loads them from the cache) outside the timed loops
    short = loop(args.warmup)
    long = loop(args.warmup + args.reps)
    return (long[0] - short[0]) / args.reps, (long[1] - short[1]) / args.reps, args.kernels


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    parser.add_argument("--k", type=int, default=8, help="mask samples")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--reps", type=int, default=40)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (0: torch's default)")
    parser.add_argument("--kernels", choices=KERNEL_CHOICES, default="auto")
    args = parser.parse_args(argv)
    runtime.tune_cpu_allocator()  # as every workflow job does (runtime.start_job)
    if args.threads:
        torch.set_num_threads(args.threads)
    x, y = torch.rand(4096, 784), torch.randint(0, 10, (4096,))
    ordinary = ordinary_ms(x, y, args)
    joint = joint_ms(x, y, args)
    row = {"network": "784-800-800-64-10", "batch": args.batch, "mask_samples": args.k,
           "threads": torch.get_num_threads(), "kernels": joint[2],
           "ms": {"ordinary": ordinary[0], "joint": joint[0]},
           "cpu_ms": {"ordinary": ordinary[1], "joint": joint[1]},
           "ratio_joint_to_ordinary": joint[0] / ordinary[0],
           "cpu_ratio_joint_to_ordinary": joint[1] / ordinary[1]}
    print(f"joint weights+mask step, FNN 784-800-800-64-10, batch {args.batch}, K={args.k}, "
          f"{row['threads']} threads, mean of {args.reps} steps")
    print(f"{'':>12} {'ordinary':>9} {'joint':>9} {'ratio':>6}")
    for key, label in (("ms", "wall ms"), ("cpu_ms", "process ms")):
        o, j = row[key]["ordinary"], row[key]["joint"]
        print(f"{label:>12} {o:9.1f} {j:9.1f} {j / o:6.2f}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        payload = {"machine": {"platform": platform.platform(), "processor": platform.processor(),
                               "cpus": os.cpu_count(), "torch": torch.__version__},
                   "date": time.strftime("%Y-%m-%d"), "results": [row]}
        args.out.write_text(json.dumps(payload, indent=2))


if __name__ == "__main__":
    main()
