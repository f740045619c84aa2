"""The fused masked linear layer (``kernels: fused``) against the default engine, part by part.

The default engine samples K masked copies of a weight (``gumbel``'s compiled kernels), multiplies each
with its chunk of rows (``torch.bmm``, MKL) and, in the backward, forms each sample's weight gradient with
another ``bmm`` before the mask kernel sums them. ``modmask.fused_linear`` does the same work in three C
functions (``modmask/csrc/masked_linear.c``) that never write the K masked copies or the K weight
gradients to memory. This checks that both compute the same (the factors bit for bit, the products to
float32 rounding) and times each part, one thread, best of several rounds, with the caches flushed
before each call (as in a training step, where the other layers have evicted them):

    python benchmarks/bench_fused_linear.py

Whole training steps: ``bench_joint_step.py --kernels fused`` and ``bench_mask_step.py --kernels fused``.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from modmask import fused_linear, gumbel, runtime  # noqa: E402

SHAPES = {"permuted-mnist": (8, 16, 800, 784), "addmul": (4, 32, 2000, 2000)}  # K, rows per sample, out, in


def compare(samples, rows, out_features, in_features, rounds: int, reps: int) -> dict[str, float]:
    torch.manual_seed(0)
    x = torch.randn(samples, rows, in_features)
    weight = torch.nn.Parameter(torch.randn(out_features, in_features))
    logits = torch.nn.Parameter(torch.randn(out_features, in_features) * 2)
    keys = gumbel.counter_keys(3, 1, 2, samples)
    grad = torch.randn(samples, rows, out_features)
    flush = torch.zeros(16 << 20)   # 64 MB, twice the last-level cache of the machines we measured
    with torch.no_grad():
        masked, saved = gumbel.KERNELS.run(True, gumbel.FORWARD_SAVING_FACTORS, weight, logits, keys, None)
        weight_grads = torch.bmm(grad.transpose(1, 2), x)
        p, q = gumbel.KERNELS.run(True, gumbel.LOGIT_SIGMOIDS, logits)
        fused = {}
        parts = {
            ("engine", "sampling"): lambda: gumbel.KERNELS.run(True, gumbel.FORWARD_SAVING_FACTORS, weight, logits,
                                                               keys, None),
            ("engine", "forward bmm"): lambda: torch.bmm(x, masked.transpose(1, 2)),
            ("engine", "input-gradient bmm"): lambda: torch.bmm(grad, masked),
            ("engine", "weight-gradient bmm"): lambda: torch.bmm(grad.transpose(1, 2), x),
            ("engine", "mask gradient kernel"): lambda: gumbel.KERNELS.run(
                True, gumbel.GRAD_FROM_FACTORS, weight_grads, weight, logits, saved, None, True, True),
            ("fused", "logit sigmoids"): lambda: gumbel.KERNELS.run(True, gumbel.LOGIT_SIGMOIDS, logits),
            ("fused", "forward"): lambda: fused.update(forward=fused_linear.forward(x, weight, p, q, keys)),
            ("fused", "input gradient"): lambda: fused.update(
                input_grad=fused_linear.input_grad(grad, weight, fused["forward"][1])),
            ("fused", "logit and weight gradients"): lambda: fused.update(
                param_grad=fused_linear.param_grad(grad, x, fused["forward"][1], weight, p, q, True)),
        }
        best = dict.fromkeys(parts, float("inf"))
        for _ in range(rounds):
            for name, run in parts.items():
                total = 0.0
                for _ in range(reps):
                    flush.add_(1.0)
                    start = time.perf_counter()
                    run()
                    total += time.perf_counter() - start
                best[name] = min(best[name], total / reps * 1e3)
        # what the C code computed, against the engine
        y, factors = fused["forward"]
        if not torch.equal(factors, saved):
            raise AssertionError("the fused forward's factors differ from gumbel's")
        logit_grad, weight_grad = gumbel._eager_factor_grad(weight_grads, weight, logits, saved, None, True, True)
        checks = {"forward": (y, torch.bmm(x, masked.transpose(1, 2))),
                  "input gradient": (fused["input_grad"], torch.bmm(grad, masked)),
                  "logit gradient": (fused["param_grad"][0], logit_grad),
                  "weight gradient": (fused["param_grad"][1], weight_grad)}
        for name, (value, expected) in checks.items():
            error = ((value - expected).abs().max() / expected.abs().max()).item()
            if error > 1e-5:
                raise AssertionError(f"fused {name}: relative error {error:.1e}")
    return {f"{side}: {part}": ms for (side, part), ms in best.items()}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shapes", nargs="+", choices=sorted(SHAPES), default=sorted(SHAPES))
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args(argv)
    runtime.tune_cpu_allocator()
    torch.set_num_threads(1)
    for name in args.shapes:
        samples, rows, out_features, in_features = SHAPES[name]
        times = compare(samples, rows, out_features, in_features, args.rounds, args.reps)
        print(f"{name}: K = {samples}, {rows} rows per sample, {out_features} x {in_features} weight, one thread, "
              "best of rounds (ms); factors bit for bit, products within 1e-5")
        for part, ms in times.items():
            print(f"  {part:<40} {ms:8.2f}")
        totals = {side: sum(v for k, v in times.items() if k.startswith(side)) for side in ("engine", "fused")}
        for side, total in totals.items():
            print(f"  {side + ' total':<40} {total:8.2f}")
        print(f"  {'fused / engine':<40} {totals['fused'] / totals['engine']:8.2f}")


if __name__ == "__main__":
    main()
