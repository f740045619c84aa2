"""Time one mask-training step against an ordinary training step and a loop of K single-mask passes.

Network: FNN 42 -> 5 x 2000 -> 20 (the paper's "big" add/mul network), batch 128, K = 4 mask samples,
CPU. A step is forward, cross-entropy loss (+ the mask regulariser), backward and an Adam step (on the
weights for the ordinary step, on the mask logits otherwise). Reported: the median over repetitions
after warm-up, in milliseconds.

    python benchmarks/bench_mask_step.py --out benchmarks/results/mask_step.json

By default the script measures twice, once with ``modmask.runtime.tune_cpu_allocator()`` and once
without it (in a child process, since the allocator setting is process-wide and cannot be undone).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from modmask import FNN, MaskedModel, WeightMask  # noqa: E402
from modmask import runtime  # noqa: E402
from modmask.masked_model import KERNEL_CHOICES  # noqa: E402


def _loss(out, y):
    # two 10-way digit heads, as in the add/mul task
    return nn.functional.cross_entropy(out.reshape(-1, 10), y.reshape(-1))


def _time(step, warmup: int, reps: int, cpu: list | None = None) -> list[float]:
    """Wall-clock ms per call; process CPU ms per call (all threads) appended to ``cpu``."""
    for _ in range(warmup):
        step()
    times = []
    for _ in range(reps):
        start, start_cpu = time.perf_counter(), time.process_time()
        step()
        times.append((time.perf_counter() - start) * 1e3)
        if cpu is not None:
            cpu.append((time.process_time() - start_cpu) * 1e3)
    return times


def measure(args) -> dict:
    tuned = runtime.tune_cpu_allocator() if args.tune else False
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    net = FNN(42, [args.width] * args.depth, 20)
    x = torch.randn(args.batch, 42)
    y = torch.randint(0, 10, (args.batch, 2))

    # (a) ordinary training step of the same network and batch
    net.train()
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)

    def ordinary():
        opt.zero_grad(set_to_none=True)
        loss = _loss(net(x), y)
        loss.backward()
        opt.step()

    cpu = {name: [] for name in ("ordinary", "vectorised", "loop")}
    results = {"ordinary": _time(ordinary, args.warmup, args.reps, cpu["ordinary"])}

    # mask training on the frozen network
    net.eval()
    for p in net.parameters():
        p.requires_grad_(False)
    mask = WeightMask.for_module(net)
    extra = {"noise_kind": args.noise} if args.noise else {}
    masked = MaskedModel(net, mask, mask_samples=args.k, seed=0, kernels=args.kernels, **extra)
    mopt = torch.optim.Adam(mask.trainable_parameters(), lr=1e-2)

    def mask_step(forward):
        def step():   # as train_mask does it
            mopt.zero_grad(set_to_none=True)
            _loss(forward(x), y).backward()
            masked.add_regularizer_gradient_(1e-4, args.batch)
            mopt.step()
        return step

    results["vectorised"] = _time(mask_step(masked), args.warmup, args.reps, cpu["vectorised"])
    results["loop"] = _time(mask_step(masked.forward_loop), args.warmup, args.reps, cpu["loop"])
    med = {k: statistics.median(v) for k, v in results.items()}
    return {
        "allocator_tuned": tuned,
        "threads": torch.get_num_threads(),
        "kernels": masked.kernels if masked.kernels == "fused" else "compiled" if masked.use_compiled else "eager",
        "noise": getattr(masked.noise, "kind", "torch"),
        "mask_samples": args.k, "batch": args.batch, "network": f"42-{args.depth}x{args.width}-20",
        "masked_weights": mask.numel(),
        "ms": med,
        "ms_min": {k: min(v) for k, v in results.items()},
        # process CPU time (all threads): less sensitive than wall time to other jobs on the machine
        "cpu_ms": {k: statistics.median(v) for k, v in cpu.items()},
        "ms_all": results,
        "ratio_vectorised_to_ordinary": med["vectorised"] / med["ordinary"],
        "ratio_loop_to_ordinary": med["loop"] / med["ordinary"],
        "ratio_loop_to_vectorised": med["loop"] / med["vectorised"],
    }


def _table(rows: list[dict]) -> str:
    def line(r: dict, times: dict) -> str:
        ordinary, vectorised, loop = times["ordinary"], times["vectorised"], times["loop"]
        return (f"{'tuned' if r['allocator_tuned'] else 'default':>10} {r['noise']:>8} {r['kernels']:>9} "
                f"{ordinary:9.1f} {vectorised:9.1f} {loop:9.1f} "
                f"{vectorised / ordinary:8.2f} {loop / ordinary:8.2f} {loop / vectorised:8.2f}")

    header = (f"{'allocator':>10} {'noise':>8} {'kernels':>9} {'ordinary':>9} {'vector':>9} {'loop':>9} "
              f"{'vec/ord':>8} {'loop/ord':>8} {'loop/vec':>8}")
    lines = [header, *(line(r, r["ms"]) for r in rows),
             "process CPU ms per step (all threads; robust to other load on the machine):",
             *(line(r, r["cpu_ms"]) for r in rows)]
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    parser.add_argument("--k", type=int, default=4, help="mask samples")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--width", type=int, default=2000)
    parser.add_argument("--depth", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--reps", type=int, default=10)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--kernels", choices=KERNEL_CHOICES, default="auto")
    parser.add_argument("--noise", choices=("counter", "torch"), default=None,
                        help="noise kind of the MaskedModel (default: the library's default)")
    parser.add_argument("--allocator", choices=("both", "tuned", "default"), default="both",
                        help="measure with tune_cpu_allocator(), without it, or both (default)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.child:  # one measurement, JSON on stdout
        args.tune = args.allocator == "tuned"
        print(json.dumps(measure(args)))
        return

    modes = ["tuned", "default"] if args.allocator == "both" else [args.allocator]
    rows = []
    for mode in modes:
        # each mode in a fresh process: mallopt is process-wide and the untuned numbers must not see it
        cmd = [sys.executable, __file__, "--child", "--allocator", mode, "--k", str(args.k),
               "--batch", str(args.batch), "--width", str(args.width), "--depth", str(args.depth),
               "--warmup", str(args.warmup), "--reps", str(args.reps), "--threads", str(args.threads),
               "--kernels", args.kernels] + (["--noise", args.noise] if args.noise else [])
        done = subprocess.run(cmd, check=True, capture_output=True, text=True)
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
    print(f"mask step, FNN 42-{args.depth}x{args.width}-20, batch {args.batch}, K={args.k}, "
          f"{rows[0]['threads']} threads, ms per step (median of {args.reps})")
    print(_table(rows))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        payload = {"machine": {"platform": platform.platform(), "processor": platform.processor(),
                               "cpus": os.cpu_count(), "torch": torch.__version__},
                   "results": rows}
        args.out.write_text(json.dumps(payload, indent=2))


if __name__ == "__main__":
    main()
