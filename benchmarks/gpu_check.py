"""The prepared GPU check (issue 34): prove the CUDA path, time every paper-scale model, estimate the cost.

One script, four parts, one JSON file and a printed markdown report:

1. **Sampling kernels** (:mod:`modmask.gumbel`, eager and ``torch.compile``d) on the device against the
   CPU reference: P(b = 1) = sigmoid(l) (a statistical check, at most 6 standard errors per logit);
   counter noise on the device bit for bit equal to the CPU's; kernel outputs and gradients equal to the
   paper's formula through autograd on the CPU in float64; the vectorised ``MaskedModel`` pass equal to
   ``forward_loop`` (K single-mask passes), outputs and logit gradients, for an FNN, a time-major
   Transformer and a CNN; and the same step on the device equal to the CPU's.
2. **Models**: per paper-scale network, the ms of one ordinary training step and of one mask step
   (joint weight + mask step for permuted MNIST) at the paper's batch size and K, read from the config
   (``modmask.config.load_config``) so they never drift, run through the library's own training loops
   (``train_network``, ``train_mask``, ``train_jointly``) on synthetic data of the real shapes; the
   peak GPU memory (``torch.cuda.max_memory_allocated``) against what the config's ``resources`` ask.
3. **Device locks** (:mod:`modmask.devices`): two concurrent jobs (subprocesses) get distinct GPUs, or
   the second waits until the first is done.
4. **Estimate**: the jobs of the paper-scale ``figures/all`` counted from the config as the Snakemake
   DAG has them (checked against ``snakemake -n`` where Snakemake is installed), times their steps and
   the measured ms per step: job-hours per experiment, and the wall time with ``--resources gpu=2``.

    python benchmarks/gpu_check.py                                   # CPU: --size tiny, well under a minute
    python benchmarks/gpu_check.py --size paper --out $OUT/gpu_check.json      # on a GPU: under 8 minutes
    python benchmarks/gpu_check.py --size paper --models addmul_fnn            # a subset, also on the CPU
    python benchmarks/gpu_check.py --markdown benchmarks/results/gpu_check_cpu.json   # README table

Exit status 1 when a correctness check fails (resource findings, e.g. memory, are reported only).
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import datetime
import functools
import heapq
import json
import logging
import os
import platform
import queue
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

FORMAT = "modmask.gpu_check/1"
DEFAULT_CONFIG = ROOT / "config" / "config.yaml"

# ---- lock-job mode: a subprocess that holds a device lock (runs before anything heavy is imported) ------


def _emit(**event):
    print(json.dumps(event), flush=True)


def lock_job(lock_dir: str, devices: str, stub_torch: bool, poll: float) -> None:
    """One 'job' of the lock check: take a device like a workflow job would, report it, hold it until
    told to release it (a line on stdin), then release it."""
    if stub_torch:  # the lock itself needs no torch: spare the slow import (as tests/test_devices.py does)
        import importlib.util
        sys.modules["torch"] = types.ModuleType("torch")
        spec = importlib.util.spec_from_file_location("modmask_devices", ROOT / "modmask" / "devices.py")
        devices_module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(devices_module)
        torch = None
    else:
        import torch
        from modmask import devices as devices_module
    _emit(event="ready", pid=os.getpid(), time=time.time())
    if devices == "auto":
        chosen = devices_module.select_device("auto", lock_dir=lock_dir)
        index, name = chosen.index, str(chosen)
    else:
        index = devices_module.acquire_gpu_slot([int(d) for d in devices.split(",")], lock_dir, timeout=120, poll=poll)
        name = f"cuda:{index}"
    event = {"event": "acquired", "device": name, "index": index, "pid": os.getpid(), "time": time.time()}
    if torch is not None and torch.cuda.is_available() and index is not None and index < torch.cuda.device_count():
        x = torch.ones(1 << 20, device=f"cuda:{index}")
        event["cuda_ok"] = float(x.sum()) == float(1 << 20)
    _emit(**event)
    sys.stdin.readline()
    devices_module.release_gpu_slots()
    _emit(event="released", time=time.time())


if __name__ == "__main__" and "--lock-job" in sys.argv:
    _p = argparse.ArgumentParser()
    _p.add_argument("--lock-job", action="store_true")
    _p.add_argument("--lock-dir", required=True)
    _p.add_argument("--lock-devices", required=True)
    _p.add_argument("--stub-torch", action="store_true")
    _p.add_argument("--poll", type=float, default=0.05)
    _a = _p.parse_args()
    lock_job(_a.lock_dir, _a.lock_devices, _a.stub_torch, _a.poll)
    sys.exit(0)

# ---- the library (jsonschema may be missing on the GPU machine's image: validate where it exists) --------

try:
    import jsonschema  # noqa: F401
    CONFIG_VALIDATED = True
except ImportError:  # modmask.config imports it at module level; without it, load the config unvalidated
    _stub = types.ModuleType("jsonschema")

    class _NoValidation:
        def __init__(self, schema):
            pass

        def iter_errors(self, instance):
            return iter(())

    _stub.Draft202012Validator = _NoValidation
    sys.modules["jsonschema"] = _stub
    CONFIG_VALIDATED = False

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from modmask import experiments as standard_experiments  # noqa: E402
from modmask import gumbel  # noqa: E402
from modmask.experiments import mathematics as mathematics_experiment, per_task  # noqa: E402
from modmask.cnn import SimpleCNN, build_cnn  # noqa: E402
from modmask.config import (load_config, network_spec, seeds, stage_settings,  # noqa: E402
                            sweep_mask_settings)
from modmask.data.vocab import EOS_ID, PAD_ID, SPECIALS  # noqa: E402
from modmask.experiments import cifar10 as cifar_experiment  # noqa: E402
from modmask.experiments import mathematics as math_experiment  # noqa: E402
from modmask.experiments import permuted_mnist as pm_experiment  # noqa: E402
from modmask.experiments import scan as scan_experiment  # noqa: E402
from modmask.masked_model import MaskedModel  # noqa: E402
from modmask.progress import parse_job_stats  # noqa: E402
from modmask.masks import MaskSelection, WeightMask  # noqa: E402
from modmask.models import FNN, build_model  # noqa: E402
from modmask.seq2seq import build_seq2seq  # noqa: E402
from modmask.training import BatchSampler, TrainSettings, train_jointly, train_mask, train_network  # noqa: E402

QUIET = logging.getLogger("modmask.gpu_check")
QUIET.addHandler(logging.NullHandler())
QUIET.propagate = False

# ---- tolerances (stated once, reported with every check) -------------------------------------------------
PROB_MAX_Z = 6.0          # |frequency - sigmoid(l)| <= 6 standard errors, for every logit of the grid
FLIP_FRACTION = 1e-4      # kernel vs float64 reference: bits may differ only this often (float32 at u == sigmoid(-l))
KERNEL_REL = 1e-4         # relative L2 error of the kernels' gradients against the float64 reference
LOOP_REL = 1e-4           # vectorised pass vs loop of K, same device (TF32 off during the checks)
DEVICE_REL = 1e-3         # the device's vectorised step vs the CPU's (different kernels and summation order)


def rel_error(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach().double().cpu(), b.detach().double().cpu()
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@contextlib.contextmanager
def exact_float32():
    """Checks compare float32 results; TF32 (on by default for cuDNN convolutions) would blur them."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


class Report:
    """Collects checks and sections; written to JSON after every part, so a run cut short keeps what it did."""

    def __init__(self, path: Path | None, header: dict):
        self.path = path
        self.data = {**header, "checks": [], "models": {}, "locks": None, "estimate": None, "dag_check": None}

    def check(self, name: str, passed: bool | None, detail: str, kind: str = "correctness", **values) -> bool | None:
        self.data["checks"].append({"name": name, "kind": kind, "passed": passed, "detail": detail, **values})
        mark = "skip" if passed is None else ("ok" if passed else "FAIL")
        print(f"[{mark:>4}] {name}: {detail}", flush=True)
        return passed

    def save(self) -> None:
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(self.path.suffix + ".tmp")
        tmp.write_text(json.dumps(self.data, indent=1, default=str))
        tmp.replace(self.path)


# =========================================================================================================
# 1. sampling kernels
# =========================================================================================================

def check_probability(report: Report, device, compiled: bool, kind: str, columns: int, k: int) -> None:
    """P(b = 1) = sigmoid(l): the kept fraction over K x ``columns`` draws per logit, logits -4..4."""
    grid = torch.linspace(-4.0, 4.0, 17, device=device)
    logits = grid[:, None].expand(-1, columns).contiguous()
    if kind == "counter":
        noise = gumbel.counter_keys(1234, 0, 0, k).to(device)
    else:
        generator = torch.Generator(device=device).manual_seed(1234)
        noise = torch.rand(k, *logits.shape, device=device, generator=generator).clamp_(gumbel.NOISE_EPS,
                                                                                       1 - gumbel.NOISE_EPS)
    bits = gumbel.sample_masked_weights(torch.ones_like(logits), logits, noise, 1.0, use_compiled=compiled)
    binary = bool(((bits == 0) | (bits == 1)).all())
    freq = bits.double().mean(dim=(0, 2)).cpu()
    p = torch.sigmoid(grid.double()).cpu()
    z = ((freq - p) / torch.sqrt(p * (1 - p) / (k * columns))).abs()
    name = f"P(b=1)=sigmoid(l) [{'compiled' if compiled else 'eager'}, {kind} noise]"
    report.check(name, binary and float(z.max()) <= PROB_MAX_Z,
                 f"17 logits in [-4, 4], {k} x {columns} draws each: max |z| {float(z.max()):.2f} "
                 f"(tolerance {PROB_MAX_Z:g} standard errors), binary {binary}",
                 max_z=float(z.max()), draws_per_logit=k * columns)


def _reference_kernel(weight, logits, noise, temperature, upstream):
    """The paper's straight-through sample through autograd, on the CPU in float64."""
    w = weight.detach().double().cpu().requires_grad_()
    l = logits.detach().double().cpu().requires_grad_()
    out = torch.stack([w * gumbel.reference_hard_sample(l, noise[i].double().cpu(), temperature)
                       for i in range(noise.shape[0])])
    (out * upstream.double().cpu()).sum().backward()
    return out.detach(), l.grad, w.grad


def check_kernel_gradients(report: Report, device, compiled: bool, kind: str) -> None:
    """Kernel forward and gradients (logits and weights) on the device against the float64 CPU reference."""
    torch.manual_seed(0)
    shape, k = (96, 80), 4
    weight, logits = torch.randn(shape), torch.randn(shape) * 2
    upstream = torch.randn(k, *shape)
    if kind == "counter":
        keys = gumbel.counter_keys(7, 3, 1, k)
        noise_cpu = gumbel.counter_uniform(keys, shape)
        noise_dev = keys.to(device)
    else:
        noise_cpu = torch.rand(k, *shape).clamp_(gumbel.NOISE_EPS, 1 - gumbel.NOISE_EPS)
        noise_dev = noise_cpu.to(device)
    for temperature in (1.0, 0.5):
        ref_out, ref_gl, ref_gw = _reference_kernel(weight, logits, noise_cpu, temperature, upstream)
        w = weight.detach().clone().to(device).requires_grad_()
        l = logits.detach().clone().to(device).requires_grad_()
        out = gumbel.sample_masked_weights(w, l, noise_dev, temperature, use_compiled=compiled)
        (out * upstream.to(device)).sum().backward()
        same = out.detach().double().cpu() == ref_out
        flips = 1.0 - float(same.float().mean())
        gl = rel_error(l.grad, ref_gl)
        gw = rel_error(w.grad.cpu().double()[same.all(0)], ref_gw[same.all(0)])
        report.check(f"kernel vs CPU float64 reference [{'compiled' if compiled else 'eager'}, {kind} noise, "
                     f"tau={temperature:g}]",
                     flips <= FLIP_FRACTION and gl <= KERNEL_REL and gw <= KERNEL_REL,
                     f"bit flips {flips:.1e} (<= {FLIP_FRACTION:g}), logit-grad rel. error {gl:.1e}, "
                     f"weight-grad rel. error {gw:.1e} (<= {KERNEL_REL:g})",
                     flips=flips, logit_grad_rel=gl, weight_grad_rel=gw)


def _check_models():
    """Small networks for the pass checks: (name, model, input builder, batch_dim)."""
    torch.manual_seed(0)
    fnn = FNN(42, [64, 64], 20)
    transformer = build_seq2seq({"model": "transformer", "d_model": 32, "heads": 2, "d_ff": 64,
                                 "encoder_layers": 1, "decoder_layers": 1}, 17, 13)
    cnn = SimpleCNN(dropout=False, widths=(4, 8, 8, 8))

    def fnn_inputs(batch):
        return (torch.randn(batch, 42),)

    def seq_inputs(batch):
        src = torch.randint(len(SPECIALS), 17, (7, batch))
        tgt = torch.randint(len(SPECIALS), 13, (5, batch))
        return (src, None, tgt)

    def cnn_inputs(batch):
        return (torch.randn(batch, 3, 32, 32),)

    return [("FNN 42-64-64-20", fnn, fnn_inputs, 0), ("Transformer seq2seq (time-major)", transformer, seq_inputs, 1),
            ("simple CNN (grouped convolutions)", cnn, cnn_inputs, 0)]


def _masked_pass(model, mask, inputs, keys, batch_dim, kernels, loop: bool):
    masked = MaskedModel(model, mask, mask_samples=keys[next(iter(keys))].shape[0], batch_dim=batch_dim,
                         kernels=kernels)
    out = (masked.forward_loop if loop else masked)(*inputs, noise=keys)
    weights = torch.linspace(-1, 1, out.numel(), device=out.device).view_as(out)
    grads = torch.autograd.grad((out * weights).sum(), mask.trainable_parameters())
    return out.detach(), [g.detach() for g in grads]


def check_masked_passes(report: Report, device, kernel_modes: list[str]) -> None:
    """Vectorised pass == loop of K on the device; the device's vectorised step == the CPU's."""
    k, batch = 4, 16
    with exact_float32():
        for name, model, make_inputs, batch_dim in _check_models():
            model.eval()
            for p in model.parameters():
                p.requires_grad_(False)
            torch.manual_seed(1)
            mask_cpu = WeightMask.for_module(model)
            with torch.no_grad():
                for p in mask_cpu.trainable_parameters():
                    p.copy_(torch.randn_like(p) * 2)
            inputs_cpu = make_inputs(batch)
            keys_cpu = dict(zip(mask_cpu.names, gumbel.NoiseSource(5).keys(len(mask_cpu.names), k)))
            cpu_out, cpu_grads = _masked_pass(model, mask_cpu, inputs_cpu, keys_cpu, batch_dim, "eager", loop=False)
            model_dev = copy.deepcopy(model).to(device)
            mask_dev = copy.deepcopy(mask_cpu).to(device)
            inputs = tuple(t.to(device) if torch.is_tensor(t) else t for t in inputs_cpu)
            keys = {n: v.to(device) for n, v in keys_cpu.items()}
            for kernels in kernel_modes:
                out_v, grads_v = _masked_pass(model_dev, mask_dev, inputs, keys, batch_dim, kernels, loop=False)
                out_l, grads_l = _masked_pass(model_dev, mask_dev, inputs, keys, batch_dim, kernels, loop=True)
                out_err = rel_error(out_v, out_l)
                grad_err = max(rel_error(a, b) for a, b in zip(grads_v, grads_l))
                report.check(f"vectorised pass == loop of K [{name}, {kernels}, {device.type}]",
                             out_err <= LOOP_REL and grad_err <= LOOP_REL,
                             f"outputs rel. error {out_err:.1e}, logit grads {grad_err:.1e} (<= {LOOP_REL:g}); "
                             f"K={k}, batch {batch}, counter noise", output_rel=out_err, grad_rel=grad_err)
                out_err = rel_error(out_v, cpu_out)
                grad_err = max(rel_error(a, b) for a, b in zip(grads_v, cpu_grads))
                report.check(f"{device.type} step == CPU step [{name}, {kernels}]",
                             out_err <= DEVICE_REL and grad_err <= DEVICE_REL,
                             f"outputs rel. error {out_err:.1e}, logit grads {grad_err:.1e} (<= {DEVICE_REL:g})"
                             + (" (the device is the CPU: CPU against CPU)" if device.type == "cpu" else ""),
                             output_rel=out_err, grad_rel=grad_err)


def run_kernel_checks(report: Report, device, compiled: bool, size: str) -> None:
    columns = 1 << 16 if device.type == "cuda" else (1 << 12 if size == "tiny" else 1 << 15)
    modes = [False, True] if compiled else [False]
    keys = gumbel.counter_keys(99, 4, 2, 3)
    on_device = gumbel.counter_uniform(keys.to(device), (257, 33))
    report.check("counter noise on the device == CPU, bit for bit", torch.equal(on_device.cpu(),
                 gumbel.counter_uniform(keys, (257, 33))), "counter_uniform of the same keys, 3 x 257 x 33 values")
    for use_compiled in modes:
        for kind in ("counter", "torch"):
            check_probability(report, device, use_compiled, kind, columns, 4)
            check_kernel_gradients(report, device, use_compiled, kind)
    if not compiled:
        report.check("compiled sampling kernels", None,
                     "not checked on this device (torch.compile on a CPU takes ~5-90 s per kernel shape here; "
                     "--check-compiled to include it); eager kernels checked", kind="correctness")
    check_masked_passes(report, device, ["eager", "compiled"] if compiled else ["eager"])
    if compiled:
        report.check("compiled kernels ran compiled (no fallback to eager)", not gumbel.KERNELS.compile_failed,
                     "torch.compile of the mask kernels " + ("FAILED: training silently uses eager kernels"
                                                             if gumbel.KERNELS.compile_failed else "worked"))


# =========================================================================================================
# 2. models
# =========================================================================================================

@dataclass
class Case:
    """One network as a paper-scale job trains it. ``make_model(paper)`` builds the paper's network
    (True) or the measured one (False: the same at --size paper, shrunk at tiny); ``make_data(n, paper)``
    gives n training examples; ``flop_inputs(batch, paper)`` forward inputs that need no data (meta device)."""

    name: str
    experiment: str
    label: str
    required: bool                  # one of the networks issue 34 names
    phase2: str                     # "mask" (frozen network) or "joint" (weights and mask, permuted MNIST)
    blocks: dict                    # {"ordinary": settings block, "mask": settings block} from the config
    make_model: Callable
    make_data: Callable
    flop_inputs: Callable
    loss: Callable
    forward: Callable | None
    batch_dims: tuple = (0, 0)
    selection: MaskSelection = field(default_factory=MaskSelection)
    augment: bool = False           # crop + flip in the ordinary (pretraining) sampler: CIFAR ResNet
    dataset_examples: int | None = None   # the real training set's size: what a job holds on the device
    tiny: str = ""                  # what --size tiny shrinks
    batch: dict = field(default_factory=dict)   # measured batch per phase (filled by configure)
    paper_batch: dict = field(default_factory=dict)


def _standard_cases(config) -> list[Case]:
    cases = []
    for exp_name, exp in config.get("experiments", {}).items():
        module = standard_experiments.get(exp_name)
        sweep_only = [a for a in exp.get("sweeps", {}).get("architectures", {})]
        for arch in list(exp["architectures"]) + sweep_only:
            spec = network_spec(exp, arch)
            mask = stage_settings(exp, arch, "mask")
            if arch not in exp["architectures"]:
                mask = sweep_mask_settings(exp, arch, mask["beta"])
            if spec["model"] == "fnn":
                tiny = {**spec, "hidden": [16] * min(2, len(spec["hidden"]))}
                label = f"FNN {len(spec['hidden'])}x{max(spec['hidden'])}" if len(set(spec["hidden"])) == 1 else \
                    "FNN " + "-".join(str(h) for h in spec["hidden"])
            else:
                tiny = {**spec, "hidden": 8}
                label = f"LSTM {spec['hidden']}" + (f" ({spec['presentation']})" if "presentation" in spec else "")
            data_settings = dict(exp.get("data", {}))
            if exp_name == "double_add":
                examples = int(data_settings.get("train_size", 200000))
            elif exp_name == "addmul":
                examples = 20000
            else:
                examples = None

            def make_data(n, paper, module=module, exp_name=exp_name, data_settings=data_settings):
                settings = {**data_settings, "train_size": n, "test_size": 1} if exp_name == "double_add" \
                    else data_settings
                return module.training_tensors(module.generate(settings, 0), "all")

            def flop_inputs(batch, paper, module=module):
                return (torch.zeros(batch, module.INPUT_SIZE),)

            cases.append(Case(
                name=f"{exp_name}_{arch}", experiment=exp_name,
                label=f"{label}, {'add/mul' if exp_name == 'addmul' else exp_name.replace('_', ' ')}",
                required=(exp_name, arch) == ("addmul", "fnn"), phase2="mask",
                blocks={"ordinary": stage_settings(exp, arch, "pretrain"), "mask": mask},
                make_model=lambda paper, spec=spec, tiny=tiny, module=module: build_model(
                    spec if paper else tiny, module.INPUT_SIZE, module.OUTPUT_SIZE),
                make_data=make_data, flop_inputs=flop_inputs,
                loss=standard_experiments.loss_for(module, "all"),
                forward=standard_experiments.forward_for(module, spec),
                batch_dims=standard_experiments.masked_batch_dims(module, spec),
                selection=per_task.mask_selection(mask), dataset_examples=examples,
                tiny=f"hidden {tiny['hidden']}"))
    return cases


def _packed(n, src_width, tgt_width, src_vocab, tgt_vocab, generator):
    """Synthetic packed sequence examples ``[n, src_width + tgt_width]``: random lengths (a batch pads to
    its longest), random non-special ids, ``<eos>`` after each target."""
    first = len(SPECIALS)
    src = torch.randint(first, src_vocab, (n, src_width), generator=generator)
    src_len = torch.randint(1, src_width + 1, (n, 1), generator=generator)
    src[torch.arange(src_width)[None, :] >= src_len] = PAD_ID
    tgt = torch.randint(first, tgt_vocab, (n, tgt_width), generator=generator)
    tgt_len = torch.randint(1, tgt_width, (n, 1), generator=generator)  # tokens before <eos>
    position = torch.arange(tgt_width)[None, :].expand(n, -1)
    tgt[position == tgt_len] = EOS_ID
    tgt[position > tgt_len] = PAD_ID
    return torch.cat([src, tgt], 1)


def _seq_flop_inputs(src_width, tgt_width):
    def inputs(batch, paper):
        width = tgt_width(paper)
        return (torch.full((src_width(paper), batch), len(SPECIALS), dtype=torch.long), None,
                torch.full((width, batch), len(SPECIALS), dtype=torch.long))
    return inputs


TINY_TRANSFORMER = {"d_model": 16, "heads": 2, "d_ff": 32, "encoder_layers": 1, "decoder_layers": 1}


def _scan_cases(config) -> list[Case]:
    block = config.get("scan")
    if not block:
        return []
    in_vocab, out_vocab = scan_experiment.vocabularies()
    cases = []
    src_w, tgt_w = scan_experiment.SOURCE_WIDTH, {True: 49, False: 8}  # longest action sequence 48, + <eos>
    for arch in block["architectures"]:
        spec = network_spec(block, arch)
        tiny = {**spec, "hidden": 16, "embedding": 8} if spec["model"] == "lstm_seq2seq" else {**spec, **TINY_TRANSFORMER}
        label = (f"LSTM seq2seq {spec.get('layers', 2)}x{spec['hidden']}" if spec["model"] == "lstm_seq2seq"
                 else f"Transformer d_model {spec['d_model']}") + ", SCAN"

        def make_data(n, paper):
            packed = _packed(n, src_w, tgt_w[paper], len(in_vocab), len(out_vocab), torch.Generator().manual_seed(0))
            return [packed, packed[:, src_w:]]

        cases.append(Case(
            name=f"scan_{arch}", experiment="scan", label=label, required=True, phase2="mask",
            blocks={"ordinary": stage_settings(block, arch, "pretrain"), "mask": stage_settings(block, arch, "mask")},
            make_model=lambda paper, spec=spec, tiny=tiny: scan_experiment.build_network(spec if paper else tiny, 0),
            make_data=make_data, flop_inputs=_seq_flop_inputs(lambda paper: src_w, lambda paper: tgt_w[paper]),
            loss=scan_experiment.loss, forward=scan_experiment.teacher_forced, batch_dims=(1, 1),
            selection=scan_experiment.SELECTION, dataset_examples=None,
            tiny=f"{'hidden 16, embedding 8' if spec['model'] == 'lstm_seq2seq' else 'd_model 16, 1+1 layers'}, "
                 f"actions <= 7"))
    return cases


def _mathematics_case(config) -> list[Case]:
    block = config.get("mathematics")
    if not block:
        return []
    spec = mathematics_experiment.network_spec(block)
    tiny = {**spec, **TINY_TRANSFORMER}
    vocab_size = len(math_experiment.vocabulary())
    # measured at the largest batch of any task (the worst memory); other tasks scale by their batch
    blocks = {}
    for phase, stage in (("ordinary", "pretrain"), ("mask", "mask")):
        per_task = [mathematics_experiment.stage_settings(block, task, stage) for task in block["tasks"]]
        blocks[phase] = max(per_task, key=lambda b: b["batch_size"])
    widths = {True: (math_experiment.QUESTION_WIDTH, math_experiment.ANSWER_WIDTH + 1), False: (12, 6)}
    data = block.get("data", {})
    examples = 3 * (int(data.get("samples_per_level", 0)) - int(data.get("test_per_level", 0))) or None

    def make_data(n, paper):
        src_width, tgt_width = widths[paper]
        packed = _packed(n, src_width, tgt_width, vocab_size, vocab_size, torch.Generator().manual_seed(0))
        return [packed, packed[:, src_width:]]

    def forward(model, packed, paper):
        return math_experiment.teacher_forced(model, packed, source_width=widths[paper][0])

    return [Case(
        name="mathematics", experiment="mathematics",
        label=f"Transformer d_model {spec['d_model']}, Mathematics", required=True, phase2="mask",
        blocks=blocks, make_model=lambda paper: math_experiment.build_network(spec if paper else tiny, 0, vocab_size),
        make_data=make_data, flop_inputs=_seq_flop_inputs(lambda paper: widths[paper][0], lambda paper: widths[paper][1]),
        loss=math_experiment.loss, forward=forward, batch_dims=(1, 1), selection=math_experiment.SELECTION,
        dataset_examples=examples, tiny="d_model 16, 1+1 layers, questions <= 12 characters")]


def _cifar_cases(config) -> list[Case]:
    block = config.get("cifar10")
    if not block:
        return []
    cases, seen = [], set()
    for arch in block["architectures"]:
        spec = network_spec(block, arch)
        kind = spec["model"]
        if kind in seen:  # simple_cnn and simple_cnn_nodrop cost the same: dropout is off in mask training
            continue
        seen.add(kind)
        pretrain = stage_settings(block, arch, "pretrain")
        if kind == "simple_cnn":
            tiny, label = {**spec, "widths": [4, 8, 8, 8]}, "simple CNN, CIFAR-10"
        else:
            tiny, label = {**spec, "depth": 8, "widths": [4, 8, 8]}, f"ResNet-{spec.get('depth', 110)}, CIFAR-10"
        train_size = block.get("data", {}).get("train_size") or 50000

        def make_data(n, paper):
            generator = torch.Generator().manual_seed(0)
            return [torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=generator),
                    torch.randint(0, 10, (n,), generator=generator)]

        cases.append(Case(
            name=f"cifar10_{kind}", experiment="cifar10", label=label, required=True, phase2="mask",
            blocks={"ordinary": pretrain, "mask": stage_settings(block, arch, "mask")},
            make_model=lambda paper, spec=spec, tiny=tiny: build_cnn(spec if paper else tiny, 0),
            make_data=make_data, flop_inputs=lambda batch, paper: (torch.zeros(batch, 3, 32, 32, dtype=torch.uint8),),
            loss=cifar_experiment.loss, forward=cifar_experiment.normalized, selection=cifar_experiment.SELECTION,
            augment=bool(pretrain.get("augment", False)), dataset_examples=int(train_size),
            tiny=f"widths {tiny['widths']}" + (", depth 8" if kind == "resnet" else "")))
    return cases


def _permuted_mnist_case(config) -> list[Case]:
    block = config.get("permuted_mnist")
    if not block:
        return []
    hidden, init = list(block["architecture"]["hidden"]), block["architecture"].get("init", "pytorch")
    tiny = [32, 32, 16]

    def make_data(n, paper):
        generator = torch.Generator().manual_seed(0)
        return [torch.rand(n, pm_experiment.INPUT_SIZE, generator=generator),
                torch.randint(0, pm_experiment.OUTPUT_SIZE, (n,), generator=generator)]

    return [Case(
        name="permuted_mnist", experiment="permuted_mnist",
        label="FNN " + "-".join(str(h) for h in [pm_experiment.INPUT_SIZE, *hidden, pm_experiment.OUTPUT_SIZE])
              + ", permuted MNIST", required=True, phase2="joint",
        blocks={"ordinary": block["train"], "mask": block["train"]},
        make_model=lambda paper: pm_experiment.build_network(hidden if paper else tiny, init),
        make_data=make_data, flop_inputs=lambda batch, paper: (torch.zeros(batch, pm_experiment.INPUT_SIZE),),
        loss=F.cross_entropy, forward=None, selection=pm_experiment.SELECTION,
        dataset_examples=int(block.get("data", {}).get("train_size") or 60000), tiny=f"hidden {tiny}")]


REQUIRED_ORDER = ("addmul_fnn", "permuted_mnist", "scan_lstm", "scan_transformer", "mathematics",
                  "cifar10_simple_cnn", "cifar10_resnet")
# On a CPU at --size paper these are measured at a smaller batch (and scaled linearly in the batch),
# or one step takes minutes; --full-batch measures them at the paper's batch too.
CPU_BATCH_DIVISOR = {"mathematics": 8, "cifar10_resnet": 4}


def all_cases(config) -> dict[str, Case]:
    cases = _standard_cases(config) + _permuted_mnist_case(config) + _scan_cases(config) + \
        _mathematics_case(config) + _cifar_cases(config)
    by_name = {c.name: c for c in cases}
    order = [n for n in REQUIRED_ORDER if n in by_name] + [n for n in by_name if n not in REQUIRED_ORDER]
    return {n: by_name[n] for n in order}


def configure(case: Case, size: str, divisor: int) -> None:
    """The batch each phase is measured at: the paper's (size paper), smaller (CPU divisor), or tiny."""
    k = int(case.blocks["mask"].get("mask_samples", 4))
    for phase in ("ordinary", "mask"):
        paper = int(case.blocks[phase]["batch_size"])
        case.paper_batch[phase] = paper
        if size == "tiny":
            batch = 2 * k if phase == "mask" or case.phase2 == "joint" else 16
        else:
            batch = max(1, paper // divisor)
            if phase == "mask" or case.phase2 == "joint":
                batch = max(k, batch // k * k)
        case.batch[phase] = batch


def _forward(case: Case, paper: bool):
    if case.name == "mathematics":
        return functools.partial(case.forward, paper=paper)
    return case.forward


class TimedSampler:
    """Wraps a batch sampler; the training loops call it once at the start of every step, so the time
    between two calls is one whole step (forward, backward, clipping, optimiser, the loss's ``.item()``)."""

    def __init__(self, sampler, device):
        self.sampler, self.device, self.times = sampler, device, []

    def __call__(self):
        sync(self.device)
        self.times.append(time.perf_counter())
        return self.sampler()


def _max_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: kB


def time_phase(case: Case, phase: str, device, paper: bool, warmup: int, reps: int, kernels: str) -> dict:
    """Run the library's training loop for warmup + reps + 1 steps and time each step."""
    torch.manual_seed(0)
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    started = time.perf_counter()
    model = case.make_model(paper).to(device)
    block = case.blocks["mask" if phase == "mask" else "ordinary"]
    batch = case.batch[phase]
    steps = warmup + reps + 1
    overrides = {"steps": steps, "batch_size": batch, "log_every": 10 ** 9, "checkpoint_every": 0}
    if phase == "mask":
        overrides["kernels"] = kernels
    settings = TrainSettings.from_config(block, **overrides)
    tensors = case.make_data(max(4 * batch, 256), paper)
    example_bytes = sum(t[0].numel() * t.element_size() for t in tensors)
    if case.augment and phase == "ordinary":
        sampler = cifar_experiment.ImageSampler(*tensors, batch, 0, device, augment=True)
    else:
        sampler = BatchSampler(tensors, batch, 0, device)
    timed = TimedSampler(sampler, device)
    forward = _forward(case, paper)
    used_compiled = None
    if phase == "ordinary":
        train_network(model, timed, case.loss, settings, forward=forward, log=QUIET)
    elif case.phase2 == "joint":
        mask = WeightMask.for_module(model, case.selection, settings.initial_logit)
        generator = torch.Generator().manual_seed(0)
        # as on a later task: half of the weights (not the first layer) frozen by earlier tasks
        frozen = {n: (torch.rand(p.shape, generator=generator) < 0.5) for n, p in model.named_parameters()
                  if n in mask.names and n not in pm_experiment.first_layer(model)}
        train_jointly(model, mask, timed, case.loss, settings, frozen=frozen, seed=0, log=QUIET)
        used_compiled = MaskedModel(model, mask, settings.mask_samples, kernels=kernels).use_compiled
    else:
        model.eval()
        for p in model.parameters():
            p.requires_grad_(False)
        mask = WeightMask.for_module(model, case.selection, settings.initial_logit)
        train_mask(model, timed, case.loss, settings, mask=mask, seed=0, batch_dim=case.batch_dims[0],
                   output_batch_dim=case.batch_dims[1], forward=forward, log=QUIET)
        used_compiled = MaskedModel(model, mask, settings.mask_samples, kernels=kernels).use_compiled
    sync(device)
    total = time.perf_counter() - started
    intervals = [b - a for a, b in zip(timed.times, timed.times[1:])]
    steady = intervals[warmup:]
    ms = statistics.median(steady) * 1e3
    result = {
        "batch": batch, "paper_batch": case.paper_batch[phase],
        "mask_samples": settings.mask_samples if phase == "mask" else None,
        "optimizer": settings.optimizer, "warmup": warmup, "reps": reps,
        "ms": ms, "ms_min": min(steady) * 1e3, "ms_all": [round(t * 1e3, 3) for t in intervals],
        "first_step_s": intervals[0],
        # extra time of a job's first step: torch.compile of the mask kernels (for shapes this process has
        # not compiled yet), cuDNN autotuning, allocator warm-up
        "startup_s": max(0.0, intervals[0] - ms / 1e3), "phase_total_s": total,
        "parameters": sum(p.numel() for p in model.parameters()),
        "example_bytes": example_bytes, "compiled_kernels": used_compiled,
        "max_rss_mb": _max_rss_mb(),
    }
    if phase == "mask":
        result["masked_weights"] = mask.numel()
    if device.type == "cuda":
        result["peak_gpu_mb"] = torch.cuda.max_memory_allocated(device) / 2 ** 20
        result["peak_gpu_reserved_mb"] = torch.cuda.max_memory_reserved(device) / 2 ** 20
    return result


def count_flops(case: Case, paper: bool, batch: int) -> float | None:
    """FLOPs of one ordinary forward + backward (torch.utils.flop_counter, on the meta device: no compute)."""
    from torch.utils.flop_counter import FlopCounterMode
    try:
        with torch.device("meta"):
            model = case.make_model(paper)
            inputs = case.flop_inputs(batch, paper)
        model.eval()  # deterministic path (teacher forced); the matrix products are the same
        # sequence models take (src, None, tgt_in) directly: their forward functions cut padding (data-dependent)
        forward = None if case.batch_dims == (1, 1) and case.experiment in ("scan", "mathematics") else case.forward
        counter = FlopCounterMode(display=False)
        with counter:
            out = forward(model, *inputs) if forward is not None else model(*inputs)
            out.float().sum().backward()
        return float(counter.get_total_flops())
    except Exception as error:  # noqa: BLE001 - an estimate may be missing; the timings stand
        QUIET.warning("flop count of %s failed: %s", case.name, error)
        return None


def resources_for(config, stage: str) -> dict:
    blocks = config.get("resources", {})
    merged = {**blocks.get("default", {}), **blocks.get(stage, {})}
    return {"mem_mb": merged.get("mem_mb"), "gpu": merged.get("gpu", 0), "runtime_min": merged.get("runtime")}


def run_model(report: Report, config, case: Case, device, args, paper: bool) -> dict:
    entry = {"label": case.label, "experiment": case.experiment, "required": case.required,
             "size": args.size, "tiny": case.tiny if not paper else None, "phase2": case.phase2}
    total_mb = torch.cuda.get_device_properties(device).total_memory / 2 ** 20 if device.type == "cuda" else None
    for phase in ("ordinary", "mask"):
        try:
            entry[phase] = time_phase(case, phase, device, paper, args.warmup, args.reps, args.kernels)
        except Exception as error:  # noqa: BLE001 - record, keep going with the other models
            entry[phase] = {"error": f"{type(error).__name__}: {error}"}
            report.check(f"steps run: {case.name} {phase}", False, entry[phase]["error"][:300])
            continue
        measured = entry[phase]
        stage = "pretrain" if phase == "ordinary" and case.phase2 == "mask" else "mask"
        asks = resources_for(config, stage)
        measured["resources"] = {"stage": stage, **asks}
        if case.dataset_examples:
            measured["dataset_mb"] = case.dataset_examples * measured["example_bytes"] / 2 ** 20
        if device.type == "cuda":
            need = measured["peak_gpu_mb"] + measured.get("dataset_mb", 0.0)
            fits = need <= 0.9 * total_mb
            report.check(f"fits one GPU: {case.name} {phase}", fits,
                         f"peak {measured['peak_gpu_mb']:.0f} MB allocated + data set "
                         f"{measured.get('dataset_mb', 0.0):.0f} MB of {total_mb:.0f} MB; the rule asks "
                         f"mem_mb {asks['mem_mb']}, gpu {asks['gpu']}", kind="resource")
        scale = measured["paper_batch"] / measured["batch"]
        print(f"       {case.name} {phase}: {measured['ms']:.2f} ms/step at batch {measured['batch']}"
              + (f" (x{scale:.2f} for the paper's {measured['paper_batch']})" if scale != 1 and paper else "")
              + f", first step {measured['first_step_s']:.1f} s", flush=True)
    # how the measured step relates to the paper's: the paper's own network at a smaller batch scales
    # linearly in the batch; a tiny network's step (its time is per-step overhead) gets the paper network's
    # forward + backward FLOPs per example added, at this device's measured float32 matmul rate
    per_example = None
    if not paper:
        probe = max(2, int(case.blocks["mask"].get("mask_samples", 4)))
        flops = count_flops(case, True, probe)
        entry["paper_flops_per_example"] = flops / probe if flops else None
        if flops and args.matmul_gflops:
            per_example = flops / probe / (args.matmul_gflops * 1e9) * 1e3
    for phase in ("ordinary", "mask"):
        if "error" not in entry[phase]:
            entry[phase]["flops_ms_per_example"] = per_example
            entry[phase]["paper_ms"] = paper_step_ms(entry[phase], entry[phase]["paper_batch"])
    report.check(f"steps run: {case.name}", all("error" not in entry[p] for p in ("ordinary", "mask")),
                 f"{case.label}: ordinary and {'joint' if case.phase2 == 'joint' else 'mask'} steps")
    return entry


# =========================================================================================================
# 3. device locks
# =========================================================================================================

class LockJob:
    def __init__(self, lock_dir: Path, devices: str, stub_torch: bool):
        argv = [sys.executable, str(Path(__file__).resolve()), "--lock-job", "--lock-dir", str(lock_dir),
                "--lock-devices", devices] + (["--stub-torch"] if stub_torch else [])
        self.process = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE, text=True)
        self.events: queue.Queue = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.process.stdout:
            with contextlib.suppress(json.JSONDecodeError):
                self.events.put(json.loads(line))
        self.events.put({"event": "exit"})

    def wait(self, name: str, timeout: float) -> dict | None:
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            try:
                event = self.events.get(timeout=left)
            except queue.Empty:
                return None
            if event["event"] == name:
                return event
            if event["event"] == "exit":
                raise RuntimeError(f"lock job exited early: {self.process.stderr.read()[-500:]}")

    def release(self):
        with contextlib.suppress(BrokenPipeError, OSError):
            self.process.stdin.write("release\n")
            self.process.stdin.flush()

    def stop(self):
        self.release()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()  # only this script's own child
            self.process.wait()


def run_lock_checks(report: Report, device) -> dict:
    count = torch.cuda.device_count() if device.type == "cuda" else 0
    stub = count < 2  # (a) touches the GPUs it gets only where they are real; (b) and (c) need no torch / do
    results = {"visible_gpus": count}
    with tempfile.TemporaryDirectory(prefix="gpu-check-locks-") as tmp:
        # (a) two devices: the second job gets the other one
        devices = ",".join(str(i) for i in range(count)) if count >= 2 else "0,1"
        jobs = [LockJob(Path(tmp) / "a", devices, stub)]
        try:
            first = jobs[0].wait("acquired", 120)
            jobs.append(LockJob(Path(tmp) / "a", devices, stub))
            second = jobs[1].wait("acquired", 120)
        finally:
            for job in jobs:
                job.stop()
        passed = bool(first and second and first["index"] != second["index"])
        results["distinct"] = {"devices": devices, "fake": count < 2, "first": first, "second": second}
        report.check("device locks: two concurrent jobs get distinct GPUs", passed,
                     f"devices [{devices}]{' (a fake list: fewer than 2 GPUs here)' if count < 2 else ''}: "
                     f"first {first and first['device']}, second {second and second['device']}")
        # (b) one device: the second job waits until the first releases it
        jobs = [LockJob(Path(tmp) / "b", "0", True)]
        try:
            first = jobs[0].wait("acquired", 120)
            jobs.append(LockJob(Path(tmp) / "b", "0", True))
            ready = jobs[1].wait("ready", 120)
            early = jobs[1].wait("acquired", 1.5)  # must not come while the first holds the lock
            jobs[0].release()
            released = jobs[0].wait("released", 30)
            second = early or jobs[1].wait("acquired", 60)
        finally:
            for job in jobs:
                job.stop()
        waited = bool(first and ready and early is None and released and second
                      and second["time"] >= released["time"] - 0.01)
        results["wait"] = {"first": first, "second": second, "released": released, "waited": waited}
        report.check("device locks: with one GPU the second job waits", waited,
                     "second job acquired GPU 0 " + (f"{second['time'] - released['time']:.2f} s after the first "
                                                     f"released it" if waited else "while the first held it"))
        # (c) the workflow's own choice, select_device("auto"), in two jobs started together
        jobs = [LockJob(Path(tmp) / "c", "auto", False), LockJob(Path(tmp) / "c", "auto", False)]
        try:
            first, second = (job.wait("acquired", 120) for job in jobs)
        finally:
            for job in jobs:
                job.stop()
        if not (first and second):
            raise RuntimeError("a select_device job did not report its device")
        if count >= 2:
            passed, note = first["device"] != second["device"], "distinct GPUs"
        elif count == 1:
            passed = first["device"] == second["device"] == "cuda:0"
            note = ("both cuda:0 without a lock (one visible GPU is taken as the job's own, as under SLURM): "
                    "locally, --resources gpu=N must not exceed the GPUs present")
        else:
            passed, note = first["device"] == second["device"] == "cpu", "no GPU: both on the CPU"
        cuda_ok = [e.get("cuda_ok") for e in (first, second) if e and "cuda_ok" in e]
        if cuda_ok:
            passed = passed and all(cuda_ok)
            note += f"; each job ran a kernel on its GPU: {cuda_ok}"
        results["select_device"] = {"first": first, "second": second, "note": note}
        report.check("device locks: select_device('auto') in two concurrent jobs", passed,
                     f"{first['device']} and {second['device']}: {note}")
    return results


# =========================================================================================================
# 4. jobs of the paper-scale DAG, and what they cost
# =========================================================================================================

def paper_jobs(config) -> tuple[list[dict], dict[str, int]]:
    """The GPU jobs of ``figures/all`` that train (one dict each), and the counts of the GPU jobs that only
    evaluate, per rule; counted from the config the way rules/*.smk expand them.

    A training job: ``id``, ``experiment``, ``rule``, ``case`` (the measured network it runs), ``phase``
    (``ordinary`` or ``mask``), ``steps``, ``batch`` and ``after`` (the id of the job it needs first).
    """
    jobs: list[dict] = []
    untimed: dict[str, int] = {}

    def add(experiment, rule, case, phase, steps, batch, after=None) -> str:
        job_id = f"{rule}#{len(jobs)}"
        jobs.append({"id": job_id, "experiment": experiment, "rule": rule, "case": case, "phase": phase,
                     "steps": int(steps), "batch": int(batch), "after": after})
        return job_id

    def count(rule, n=1):
        untimed[rule] = untimed.get(rule, 0) + n

    for name, exp in config.get("experiments", {}).items():  # rules/pretrain, masks, evaluate
        module = standard_experiments.get(name)
        main = [(arch, seed) for arch in exp["architectures"] for seed in seeds(exp)]
        dirs = [(arch, seed, None) for arch, seed in main]
        sweeps = exp.get("sweeps")
        if sweeps:  # as common.smk's sweep_run_dirs: beta points, then sizes at the main beta, deduplicated
            points = [(a, float(b)) for a in sweeps["beta_architectures"] for b in sweeps["beta"]]
            points += [(a, float(stage_settings(exp, a, "mask")["beta"])) for a in sweeps["size_architectures"]]
            for arch, seed, beta in dict.fromkeys((a, s, b) for a, b in points for s in seeds(sweeps)):
                dirs.append((arch, seed, beta))
        networks = {}
        for arch, seed, _ in dirs:
            if (arch, seed) not in networks:
                block = stage_settings(exp, arch, "pretrain")
                networks[arch, seed] = add(name, "pretrain", f"{name}_{arch}", "ordinary", block["steps"],
                                           block["batch_size"])
        for arch, seed, beta in dict.fromkeys(dirs):
            if beta is None:
                block, tasks = stage_settings(exp, arch, "mask"), module.MASK_TASKS
            else:
                block, tasks = sweep_mask_settings(exp, arch, beta), module.SHARING_TASKS
            for _ in tasks:
                add(name, "train_mask", f"{name}_{arch}", "mask", block["steps"], block["batch_size"],
                    networks[arch, seed])
            count("evaluate")

    block = config.get("permuted_mnist")
    if block:  # one job per (variant, seed) runs every task
        train = block["train"]
        for _variant in block["variants"]:
            for _seed in seeds(block):
                add("permuted_mnist", "permuted_mnist_run", "permuted_mnist", "mask",
                    int(block["tasks"]) * int(train["steps"]), train["batch_size"])

    block = config.get("scan")
    if block:
        splits = scan_experiment.SPLITS
        for arch in block["architectures"]:
            pre, mask = stage_settings(block, arch, "pretrain"), stage_settings(block, arch, "mask")
            for _seed in seeds(block):
                ids = {s: add("scan", "scan_network", f"scan_{arch}", "ordinary", pre["steps"], pre["batch_size"])
                       for s in splits}
                for _split in splits:
                    add("scan", "scan_mask", f"scan_{arch}", "mask", mask["steps"], mask["batch_size"],
                        ids[scan_experiment.IID])
                count("scan_evaluate")

    block = config.get("cifar10")
    if block:
        stab = block["stability"]
        main = [(arch, seed) for arch in block["architectures"] for seed in seeds(block)]
        stability = [(stab["architecture"], seed) for seed in range(int(stab["networks"]))]
        networks = {}
        for arch, seed in dict.fromkeys(main + stability):
            pre = stage_settings(block, arch, "pretrain")
            networks[arch, seed] = add("cifar10", "cifar10_network", f"cifar10_{network_spec(block, arch)['model']}",
                                       "ordinary", pre["steps"], pre["batch_size"])
        for arch, seed in main:
            mask = stage_settings(block, arch, "mask")
            case = f"cifar10_{network_spec(block, arch)['model']}"
            control = add("cifar10", "cifar10_mask", case, "mask", mask["steps"], mask["batch_size"],
                          networks[arch, seed])
            for _class in cifar_experiment.CLASSES:  # each removal mask keeps the control's output layer
                add("cifar10", "cifar10_mask", case, "mask", mask["steps"], mask["batch_size"], control)
            count("cifar10_evaluate")
        for arch, seed in stability:
            mask = stage_settings(block, arch, "mask")
            for _ in range(2 * int(stab["pairs"])):
                add("cifar10", "cifar10_stability_mask", f"cifar10_{network_spec(block, arch)['model']}", "mask",
                    mask["steps"], mask["batch_size"], networks[arch, seed])
            count("cifar10_stability")

    block = config.get("mathematics")
    if block:
        for task in block["tasks"]:
            pre = mathematics_experiment.stage_settings(block, task, "pretrain")
            mask = mathematics_experiment.stage_settings(block, task, "mask")
            for _seed in seeds(block):
                network = add("mathematics", "mathematics_network", "mathematics", "ordinary", pre["steps"],
                              pre["batch_size"])
                for _subset in math_experiment.SUBSETS:
                    add("mathematics", "mathematics_mask", "mathematics", "mask", mask["steps"], mask["batch_size"],
                        network)
                count("mathematics_evaluate")
    return jobs, untimed


def paper_step_ms(phase: dict, batch: int) -> float | None:
    """ms of one step at ``batch`` of the paper's network, from a measured phase: linear in the batch when the
    paper's network was measured (``flops_ms_per_example`` None); else the measured (tiny) step's time, taken
    as per-step overhead, plus ``flops_ms_per_example`` x batch (the paper network's FLOPs at the measured
    matmul rate)."""
    if "ms" not in phase:
        return None
    per_example = phase.get("flops_ms_per_example")
    if per_example is None:
        return phase["ms"] * batch / phase["batch"]
    return phase["ms"] + per_example * batch


def job_seconds(job: dict, timing: dict) -> float:
    """Seconds of one job: steps x the paper network's ms per step at the job's batch (:func:`paper_step_ms`),
    plus the first step's extra time (compilation, autotuning)."""
    phase = timing[job["phase"]]
    return job["steps"] * paper_step_ms(phase, job["batch"]) / 1e3 + phase.get("startup_s", 0.0)


def schedule(durations: dict[str, float], after: dict[str, str | None], slots: int) -> float:
    """Makespan of a list schedule on ``slots`` devices: whenever a device is free it takes the ready job
    with the longest chain of work still behind it (critical path first)."""
    children: dict[str, list[str]] = {}
    for job, parent in after.items():
        if parent is not None:
            children.setdefault(parent, []).append(job)
    tail: dict[str, float] = {}
    for job in reversed(list(durations)):  # parents are listed before their children
        tail[job] = durations[job] + max((tail[c] for c in children.get(job, [])), default=0.0)
    ready = [(-tail[j], i, j) for i, j in enumerate(durations) if after.get(j) is None]
    heapq.heapify(ready)
    running: list[tuple[float, str]] = []
    now, free, order = 0.0, slots, len(durations)
    while ready or running:
        while free and ready:
            _, _, job = heapq.heappop(ready)
            heapq.heappush(running, (now + durations[job], job))
            free -= 1
        now, job = heapq.heappop(running)
        free += 1
        for child in children.get(job, []):
            order += 1
            heapq.heappush(ready, (-tail[child], order, child))
    return now


def estimate_costs(jobs: list[dict], timings: dict[str, dict], slots: int, untimed: dict | None = None) -> dict:
    """Job-hours per experiment and in all, and the wall time on ``slots`` devices.

    ``timings[case][phase]`` holds ``ms`` (per step), ``batch`` (measured at), optionally
    ``flops_ms_per_example`` (a tiny network's: see :func:`paper_step_ms`) and ``startup_s``. Jobs whose network has no timing are counted as missing (the sums leave them out).
    """
    per_experiment: dict[str, dict] = {}
    durations, after = {}, {}
    for job in jobs:
        entry = per_experiment.setdefault(job["experiment"], {"jobs": 0, "steps": 0, "job_hours": 0.0,
                                                              "missing": {}, "rules": {}})
        entry["rules"][job["rule"]] = entry["rules"].get(job["rule"], 0) + 1
        timing = timings.get(job["case"], {})
        if job["phase"] not in timing or "ms" not in timing[job["phase"]]:
            entry["missing"][job["case"]] = entry["missing"].get(job["case"], 0) + 1
            continue
        seconds = job_seconds(job, timing)
        entry["jobs"] += 1
        entry["steps"] += job["steps"]
        entry["job_hours"] += seconds / 3600
        durations[job["id"]] = seconds
    ids = set(durations)
    for job in jobs:  # a job after a missing one starts at once (its parent's time is unknown)
        if job["id"] in ids:
            after[job["id"]] = job["after"] if job["after"] in ids else None
    total = sum(durations.values()) / 3600
    longest = 0.0
    if durations:
        # the longest dependency chain
        chain: dict[str, float] = {}
        for job_id, seconds in durations.items():
            chain[job_id] = seconds + (chain[after[job_id]] if after[job_id] else 0.0)
        longest = max(chain.values()) / 3600
    return {"experiments": per_experiment, "total_job_hours": total, "slots": slots,
            "critical_path_hours": longest,
            "wall_hours_lower_bound": max(total / slots, longest) if durations else 0.0,
            "wall_hours_scheduled": schedule(durations, after, slots) / 3600 if durations else 0.0,
            "complete": all(not e["missing"] for e in per_experiment.values()),
            "untimed_gpu_jobs": dict(untimed or {})}


GPU_RULES = ("pretrain", "train_mask", "evaluate", "permuted_mnist_run", "scan_network", "scan_mask",
             "scan_evaluate", "cifar10_network", "cifar10_mask", "cifar10_stability_mask", "cifar10_evaluate",
             "cifar10_stability", "mathematics_network", "mathematics_mask", "mathematics_evaluate")


def dag_job_counts(config_path: Path, timeout: float = 300) -> dict[str, int] | str:
    """Job counts per rule of ``snakemake -n figures/all`` (a dry run: nothing is built or locked), or why not."""
    exe = shutil.which("snakemake") or (str(Path(sys.executable).parent / "snakemake")
                                        if (Path(sys.executable).parent / "snakemake").exists() else None)
    if exe is None:
        return "snakemake is not installed here"
    try:
        done = subprocess.run([exe, "-n", "figures/all", "--configfile", str(config_path), "--nolock", "--quiet",
                               "rules"], cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return f"snakemake -n took over {timeout:.0f} s"
    text = done.stdout + done.stderr
    if "Job stats:" not in text:
        return f"snakemake -n failed (exit {done.returncode}): {text[-300:]}"
    return parse_job_stats(text)


def compare_with_dag(jobs: list[dict], untimed: dict, dag: dict[str, int]) -> dict:
    ours: dict[str, int] = dict(untimed)
    for job in jobs:
        ours[job["rule"]] = ours.get(job["rule"], 0) + 1
    rules = sorted(set(GPU_RULES) & (set(ours) | set(dag)))
    return {rule: {"counted": ours.get(rule, 0), "dag": dag.get(rule, 0)} for rule in rules}


# =========================================================================================================
# reporting
# =========================================================================================================

def _fmt_ms(value) -> str:
    if value is None:
        return "-"
    return f"{value:.0f}" if value >= 100 else (f"{value:.1f}" if value >= 10 else f"{value:.2f}")


def _fmt_hours(hours: float) -> str:
    if hours >= 100:
        return f"{hours:,.0f}"
    return f"{hours:.1f}" if hours >= 1 else f"{hours:.2f}"


def merge_results(parts: list[dict]) -> dict:
    """Several runs on one kind of device and size as one: a network comes from the first run that timed it
    (e.g. a GPU run cut short by its budget, then a run of the networks it skipped); the estimate is
    recomputed from the merged timings."""
    first = parts[0]
    for other in parts[1:]:
        if (other["device"]["type"], other["size"]) != (first["device"]["type"], first["size"]):
            raise ValueError("can only merge runs on the same kind of device at the same --size")
    merged = copy.deepcopy(first)
    merged["checks"] = [c for part in parts for c in part["checks"]]
    merged["parts"] = []
    merged["models"] = {}
    for part in parts:
        taken = [n for n, e in part["models"].items() if n not in merged["models"]
                 and all("ms" in e.get(p, {}) for p in ("ordinary", "mask"))]
        merged["models"].update({n: part["models"][n] for n in taken})
        merged["parts"].append({"date": part["date"], "device": part["device"], "settings": part["settings"],
                                "argv": part["argv"], "models": taken})
    for part in parts:  # networks no run timed: keep the first run's record (skipped or failed)
        for name, entry in part["models"].items():
            merged["models"].setdefault(name, entry)
    config = load_config(first.get("config") if Path(first.get("config", "")).exists() else DEFAULT_CONFIG)
    jobs, untimed = paper_jobs(config)
    paper = first["size"] == "paper"
    timings = {name: {p: entry[p] for p in ("ordinary", "mask")
                      if "ms" in entry.get(p, {}) and (paper or entry[p].get("flops_ms_per_example") is not None)}
               for name, entry in merged["models"].items()}
    slots = first["settings"]["gpus"] if first["device"]["type"] == "cuda" else 1
    merged["estimate"] = estimate_costs(jobs, timings, slots, untimed)
    merged["passed"] = all(part.get("passed", True) for part in parts)
    return merged


def markdown_report(data: dict) -> str:
    """The markdown tables of a result JSON (what --markdown prints and the README carries)."""
    device = data["device"]
    cuda = device["type"] == "cuda"
    unit = "GPU" if cuda else "CPU"
    lines = []
    tiny = data["size"] == "tiny"
    parts = data.get("parts") or [{"date": data["date"], "device": device, "settings": data["settings"],
                                   "models": list(data.get("models", {}))}]
    for part in parts:
        which = f" ({', '.join(f'`{m}`' for m in part['models'])})" if len(parts) > 1 else ""
        lines.append(f"{'- ' if len(parts) > 1 else ''}Measured {part['date']} on {part['device']['name']} "
                     f"({part['device']['detail']}){which}, `--size {data['size']}`, {part['settings']['reps']} "
                     f"timed steps after {part['settings']['warmup']} warm-up, mask kernels "
                     f"`{part['settings']['kernels']}`.")
    lines.append("")
    models = data.get("models", {})
    if models:
        memory = " peak GPU MB (ordinary / mask) + data set |" if cuda else ""
        lines.append(f"| network | batch, K | ms / ordinary step | ms / mask step |{memory} a job asks |")
        lines.append("|---|---|---|---|---|" + ("---|" if cuda else ""))
        for name, entry in models.items():
            ordinary, mask = entry.get("ordinary", {}), entry.get("mask", {})
            if "ms" not in ordinary and "ms" not in mask:
                lines.append(f"| {entry['label']} (`{name}`) | - | {entry.get('skipped') or 'failed'} | |"
                             + (" |" if cuda else "") + " |")
                continue

            def cell(phase):
                if "ms" not in phase:
                    return "failed"
                text = _fmt_ms(phase["ms"])
                if phase["batch"] != phase["paper_batch"] or phase.get("flops_ms_per_example") is not None:
                    text += f" (at batch {phase['batch']}; paper ≈ {_fmt_ms(phase.get('paper_ms'))})"
                return text

            k = mask.get("mask_samples") or ""
            batch = f"{ordinary.get('paper_batch', '-')} / {mask.get('paper_batch', '-')}, K={k}"
            mem = ""
            if cuda:
                mem = " / ".join(f"{p['peak_gpu_mb']:.0f}" if "peak_gpu_mb" in p else "-" for p in (ordinary, mask))
                data_mb = max(p.get("dataset_mb") or 0.0 for p in (ordinary, mask))
                mem = f" {mem}" + (f" + {data_mb:.0f}" if data_mb else "") + " |"
            asks = mask.get("resources") or ordinary.get("resources") or {}
            ask = f"{asks.get('mem_mb')} MB, {asks.get('gpu')} GPU"
            joint = " (joint)" if entry["phase2"] == "joint" else ""
            lines.append(f"| {entry['label']} | {batch} | {cell(ordinary)} | {cell(mask)}{joint} |{mem} {ask} |")
        lines.append("")
        if not cuda:
            rss = max((p.get("max_rss_mb") or 0.0) for e in models.values() for p in (e.get("ordinary", {}),
                                                                                       e.get("mask", {})))
            lines.append(f"Memory on a CPU: the measuring process peaked at {rss:,.0f} MB resident (all networks "
                         f"of a run, one after another).")
            lines.append("")
    estimate = data.get("estimate")
    if estimate:
        hours = f"{unit}-hours"
        lines.append(f"| experiment of `figures/all` (paper scale) | training jobs | steps | {hours} |")
        lines.append("|---|---|---|---|")
        for name, entry in estimate["experiments"].items():
            missing = sum(entry["missing"].values())
            note = f" (+{missing} jobs of unmeasured networks)" if missing else ""
            lines.append(f"| {name} | {entry['jobs']}{note} | {entry['steps']:,} | {_fmt_hours(entry['job_hours'])} |")
        lines.append(f"| **all** | {sum(e['jobs'] for e in estimate['experiments'].values())} | "
                     f"{sum(e['steps'] for e in estimate['experiments'].values()):,} | "
                     f"**{_fmt_hours(estimate['total_job_hours'])}** |")
        lines.append("")
        slots = estimate["slots"]
        where = f"{slots} GPUs (`--resources gpu={slots}`)" if cuda else \
            f"{slots} job at a time (each measured step used all {device.get('threads')} threads)"
        untimed = sum(estimate["untimed_gpu_jobs"].values())
        lines.append(f"Wall time on {where}: about **{_fmt_hours(estimate['wall_hours_scheduled'])} h** "
                     f"(critical-path-first schedule; lower bound {_fmt_hours(estimate['wall_hours_lower_bound'])} h, "
                     f"longest chain {_fmt_hours(estimate['critical_path_hours'])} h). Not included: "
                     f"{untimed} evaluation jobs, data generation, process start-up and data loading"
                     + ("" if estimate["complete"] else "; experiments with unmeasured networks are partial") + ".")
        how = ("Extrapolated: ms per step from the timed steps × the paper's steps per job × the jobs of the "
               "DAG; a step timed at a smaller batch is scaled linearly to the paper's batch")
        if tiny:
            how += (f". Tiny networks were timed, not the paper's: a paper step is taken as the tiny step's time "
                    f"(per-step overhead) plus the paper network's forward + backward FLOPs (torch.utils.flop_counter) "
                    f"at this device's float32 matmul rate ({data['settings'].get('matmul_gflops') or 0:.0f} GFLOP/s "
                    f"measured); memory-bound work (the mask sampling, K x the weights) is not in it, so mask steps "
                    f"of the big FNNs come out too cheap: a rough figure, not a measurement")
        lines.append(how + ".")
    return "\n".join(lines)


def checks_table(data: dict) -> str:
    lines = ["| check | result | detail |", "|---|---|---|"]
    for check in data["checks"]:
        result = "skipped" if check["passed"] is None else ("pass" if check["passed"] else "**FAIL**")
        lines.append(f"| {check['name']} | {result} | {check['detail']} |")
    return "\n".join(lines)


# =========================================================================================================
# main
# =========================================================================================================

def matmul_gflops(device) -> float:
    """This device's float32 matrix-product rate (default precision flags), for the tiny extrapolation."""
    size = 4096 if device.type == "cuda" else 384
    a, b = torch.randn(size, size, device=device), torch.randn(size, size, device=device)
    a @ b
    sync(device)
    reps, start = 0, time.perf_counter()
    while reps < 3 or time.perf_counter() - start < 0.2:
        a @ b
        reps += 1
        sync(device)
    return 2 * size ** 3 * reps / (time.perf_counter() - start) / 1e9


def device_info(device) -> dict:
    info = {"type": device.type, "torch": torch.__version__, "threads": torch.get_num_threads(),
            "platform": platform.platform(), "cpus": os.cpu_count(),
            "tf32": {"matmul": torch.backends.cuda.matmul.allow_tf32, "cudnn": torch.backends.cudnn.allow_tf32}}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(name=props.name, detail=f"{props.total_memory / 2 ** 30:.0f} GiB, torch {torch.__version__}",
                    total_mb=props.total_memory / 2 ** 20, capability=list(torch.cuda.get_device_capability(device)),
                    count=torch.cuda.device_count())
        with contextlib.suppress(ImportError):
            import triton
            info["triton"] = triton.__version__
    else:
        load = os.getloadavg() if hasattr(os, "getloadavg") else None
        info.update(name=f"CPU ({platform.processor() or platform.machine()})",
                    detail=f"{os.cpu_count()} cores, {torch.get_num_threads()} torch threads, "
                           f"load average {load[0]:.1f} at the start" if load else f"{os.cpu_count()} cores",
                    load_average=load)
    return info


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=("tiny", "paper"), help="tiny (default on a CPU) or paper (default on a GPU)")
    parser.add_argument("--device", help="cuda, cuda:N or cpu (default: cuda when there is one)")
    parser.add_argument("--models", default="all",
                        help="comma-separated network names (e.g. addmul_fnn,scan_lstm), 'required' (the issue's "
                             "seven) or 'all' (default; every network the paper-scale DAG trains)")
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="the paper-scale config")
    parser.add_argument("--out", type=Path, help="JSON output (default benchmarks/results/gpu_check_<device>.json)")
    parser.add_argument("--warmup", type=int, help="warm-up steps per phase (default: 3 on a GPU, 1 on a CPU)")
    parser.add_argument("--reps", type=int, help="timed steps per phase (default: 15 on a GPU, 2 on a CPU, 3 tiny)")
    parser.add_argument("--kernels", choices=("auto", "eager", "compiled"), default="auto",
                        help="mask kernels of the timed mask steps (default: auto, as the config: compiled from "
                             "2^18 masked elements x K, so tiny networks run eager)")
    parser.add_argument("--check-compiled", action=argparse.BooleanOptionalAction, default=None,
                        help="check the compiled kernels too (default: on a GPU only)")
    parser.add_argument("--full-batch", action="store_true",
                        help=f"on a CPU at --size paper, also measure {', '.join(CPU_BATCH_DIVISOR)} at the paper's "
                             f"batch (default: divided by {CPU_BATCH_DIVISOR}, scaled back linearly)")
    parser.add_argument("--threads", type=int,
                        help="torch threads (default: 1 at --size tiny on a CPU, where tiny steps on a shared "
                             "machine lose more to thread hand-offs than they gain; else torch's default)")
    parser.add_argument("--gpus", type=int, default=2, help="GPUs for the wall-time estimate (--resources gpu=N)")
    parser.add_argument("--budget-s", type=float,
                        help="stop starting new networks after this many seconds (default: 420 on a GPU, none on "
                             "a CPU); those left are reported as skipped")
    parser.add_argument("--skip", default="", help="comma-separated parts to leave out: kernels, locks, models")
    parser.add_argument("--dag-check", action=argparse.BooleanOptionalAction, default=None,
                        help="compare the job counts with `snakemake -n figures/all` (default: at --size paper, "
                             "where snakemake is installed)")
    parser.add_argument("--markdown", type=Path, nargs="+", metavar="JSON",
                        help="print the README tables of a result file and exit; several files (same device kind "
                             "and size) are merged, each network from the first file that timed it")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.markdown:
        parts = [json.loads(path.read_text()) for path in args.markdown]
        print(markdown_report(parts[0] if len(parts) == 1 else merge_results(parts)))
        return 0
    started = time.perf_counter()
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    cuda = device.type == "cuda"
    args.size = args.size or ("paper" if cuda else "tiny")
    paper = args.size == "paper"
    threads = args.threads or (1 if not cuda and not paper else None)
    if threads:
        torch.set_num_threads(threads)
    args.matmul_gflops = matmul_gflops(device)
    args.warmup = args.warmup if args.warmup is not None else (3 if cuda else 1)
    args.reps = args.reps if args.reps is not None else (15 if cuda else (2 if paper else 3))
    compiled = args.check_compiled if args.check_compiled is not None else cuda
    budget = args.budget_s if args.budget_s is not None else (420.0 if cuda else None)
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    out = args.out or ROOT / "benchmarks" / "results" / f"gpu_check_{device.type}.json"

    config = load_config(args.config)
    now = datetime.datetime.now(datetime.timezone.utc)
    report = Report(out, {
        "format": FORMAT, "created": now.isoformat(timespec="seconds"), "date": now.date().isoformat(),
        "argv": sys.argv[1:] if argv is None else list(argv), "size": args.size, "device": device_info(device),
        "config": str(args.config), "config_validated": CONFIG_VALIDATED,
        "settings": {"warmup": args.warmup, "reps": args.reps, "kernels": args.kernels, "check_compiled": compiled,
                     "threads": torch.get_num_threads(), "matmul_gflops": args.matmul_gflops,
                     "budget_s": budget, "gpus": args.gpus, "full_batch": args.full_batch,
                     "tolerances": {"prob_max_z": PROB_MAX_Z, "flip_fraction": FLIP_FRACTION, "kernel_rel": KERNEL_REL,
                                    "loop_rel": LOOP_REL, "device_rel": DEVICE_REL}}})
    print(f"gpu_check: {report.data['device']['name']} ({report.data['device']['detail']}), --size {args.size}, "
          f"config {args.config}" + ("" if CONFIG_VALIDATED else " (jsonschema missing: not validated)"), flush=True)

    sections = report.data["section_s"] = {}
    mark = time.perf_counter()
    if "kernels" not in skip:
        print("== sampling kernels and masked passes", flush=True)
        try:
            run_kernel_checks(report, device, compiled, args.size)
        except Exception as error:  # noqa: BLE001
            report.check("sampling kernel checks ran", False, f"{type(error).__name__}: {error}"[:300])
        sections["kernels"], mark = time.perf_counter() - mark, time.perf_counter()
        report.save()
    if "locks" not in skip:
        print("== device locks (subprocesses)", flush=True)
        try:
            report.data["locks"] = run_lock_checks(report, device)
        except Exception as error:  # noqa: BLE001
            report.check("device lock checks ran", False, f"{type(error).__name__}: {error}"[:300])
        sections["locks"], mark = time.perf_counter() - mark, time.perf_counter()
        report.save()

    cases = all_cases(config)
    if args.models == "required":
        chosen = [n for n in cases if cases[n].required]
    elif args.models == "all":
        chosen = list(cases)
    else:
        chosen = [m.strip() for m in args.models.split(",") if m.strip()]
        unknown = [m for m in chosen if m not in cases]
        if unknown:
            raise SystemExit(f"unknown network(s) {unknown}; known: {', '.join(cases)}")
    if "models" not in skip:
        print(f"== networks ({'paper scale' if paper else 'tiny'}): {', '.join(chosen)}", flush=True)
        for name in chosen:
            case = cases[name]
            divisor = CPU_BATCH_DIVISOR.get(name, 1) if paper and not cuda and not args.full_batch else 1
            configure(case, args.size, divisor)
            if budget is not None and time.perf_counter() - started > budget:
                report.data["models"][name] = {"label": case.label, "experiment": case.experiment,
                                               "required": case.required, "phase2": case.phase2,
                                               "skipped": f"time budget of {budget:.0f} s spent"}
                report.check(f"steps run: {name}", None, f"skipped: the time budget of {budget:.0f} s was spent")
                continue
            report.data["models"][name] = run_model(report, config, case, device, args, paper)
            report.save()
        if cuda and args.kernels != "eager":
            report.check("compiled kernels ran compiled in the timed mask steps", not gumbel.KERNELS.compile_failed,
                         "no fallback to eager" if not gumbel.KERNELS.compile_failed else
                         "torch.compile failed: the mask steps above ran eager kernels")

        sections["models"], mark = time.perf_counter() - mark, time.perf_counter()
    print("== estimate of the paper-scale figures/all", flush=True)
    jobs, untimed = paper_jobs(config)
    timings = {name: {p: entry[p] for p in ("ordinary", "mask")
                      if "ms" in entry.get(p, {}) and (paper or entry[p].get("flops_ms_per_example") is not None)}
               for name, entry in report.data["models"].items()}
    slots = args.gpus if cuda else 1
    report.data["estimate"] = estimate_costs(jobs, timings, slots, untimed)
    report.data["estimate"]["method"] = (
        "job seconds = steps x paper ms per step + startup_s; paper ms per step = measured ms x job batch / "
        "measured batch (the paper's network measured), or measured ms + job batch x paper FLOPs per example / "
        "measured matmul FLOP/s (a tiny network measured)")
    dag_check = args.dag_check if args.dag_check is not None else paper
    if dag_check:
        dag = dag_job_counts(args.config)
        if isinstance(dag, str):
            report.data["dag_check"] = {"skipped": dag}
            report.check("job counts == snakemake -n figures/all", None, dag, kind="estimate")
        else:
            compared = compare_with_dag(jobs, untimed, dag)
            report.data["dag_check"] = compared
            wrong = {r: c for r, c in compared.items() if c["counted"] != c["dag"]}
            report.check("job counts == snakemake -n figures/all", not wrong,
                         f"{sum(c['dag'] for c in compared.values())} GPU jobs in {len(compared)} rules"
                         + (f"; differ: {wrong}" if wrong else ""), kind="estimate")
    sections["estimate"] = time.perf_counter() - mark
    report.data["elapsed_s"] = time.perf_counter() - started
    failed = [c["name"] for c in report.data["checks"]
              if c["kind"] in ("correctness", "estimate") and c["passed"] is False]
    report.data["passed"] = not failed
    report.save()

    print("\n## Checks\n")
    print(checks_table(report.data))
    print("\n## What paper scale costs\n")
    print(markdown_report(report.data))
    print(f"\n{len(report.data['checks'])} checks, {len(failed)} failed; {report.data['elapsed_s']:.0f} s; "
          f"JSON: {out}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
