"""The README's "Supported modules" table: the path MaskedModel takes for each family of modules, and
what a mask-training step costs next to an ordinary training step of the same model.

    python benchmarks/supported_modules.py                  # print the table (markdown)
    python benchmarks/supported_modules.py --write-readme   # and put it into README.md
    python benchmarks/supported_modules.py --paths-only     # the path column only, no timing

Every row is a small model of that family, frozen, in eval mode, batch 64, K = 4 mask samples, CPU,
one thread. Per row, median CPU time per step over ``--reps`` steps after ``--warmup``:

* ordinary: forward, loss, backward, Adam on the weights (the same model and batch, eval mode);
* mask step: ``MaskedModel`` forward (the path the engine takes), loss + regulariser, backward, Adam
  on the mask logits;
* K passes: the same with ``MaskedModel.forward_loop`` (K separate single-mask passes).

Process CPU time, not wall time, so that other jobs on a shared machine distort it less. Each family
runs in a fresh process with the default sampling kernels (compiled above 2^18 noise elements).
``tests/test_supported_modules.py`` checks that the table's path column is what the engine reports
(it never checks timings).
"""
from __future__ import annotations

import argparse
import json
import re
import subprocess
import statistics
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from modmask import MaskedModel, WeightMask  # noqa: E402
from modmask.masked_model import PerSampleFallbackWarning  # noqa: E402
from modmask.seq2seq import LSTMSeq2Seq  # noqa: E402

BATCH, K = 64, 4
README = ROOT / "README.md"
START, END = "<!-- supported-modules:start -->", "<!-- supported-modules:end -->"


@dataclass
class Case:
    """A model with inputs; ``output`` reduces its output to the tensor the loss reads."""

    model: nn.Module
    args: tuple
    kwargs: dict
    batch_dim: int = 0
    output_batch_dim: int | None = None
    output: Callable = lambda out: out


@dataclass
class Family:
    name: str
    modules: str
    build: Callable[[], Case]
    needs: str | None = None   # an optional package


# ---- the models --------------------------------------------------------------------------------

def _mlp():
    return Case(nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 10)),
                (torch.randn(BATCH, 64),), {})


def _cnn():
    def block(i, o):
        return [nn.Conv2d(i, o, 3, padding=1), nn.BatchNorm2d(o), nn.ReLU(), nn.MaxPool2d(2)]
    model = nn.Sequential(*block(3, 16), *block(16, 32), *block(32, 64), nn.Flatten(), nn.Linear(64 * 2 * 2, 10))
    return Case(model, (torch.randn(BATCH, 3, 16, 16),), {})


class _Tokens(nn.Module):
    def __init__(self):
        super().__init__()
        self.embedding, self.norm = nn.Embedding(100, 64), nn.LayerNorm(64)
        self.hidden, self.out = nn.Linear(64, 128), nn.Linear(128, 100)

    def forward(self, ids):
        return self.out(torch.relu(self.hidden(self.norm(self.embedding(ids)))))


def _tokens():
    return Case(_Tokens(), (torch.randint(0, 100, (BATCH, 20)),), {})


class _Recurrent(nn.Module):
    def __init__(self, rnn):
        super().__init__()
        self.rnn, self.out = rnn, nn.Linear(rnn.hidden_size * (2 if rnn.bidirectional else 1), 10)

    def forward(self, x):
        return self.out(self.rnn(x)[0])


def _recurrent(cls, **options):
    return lambda: Case(_Recurrent(cls(32, 128, **options)), (torch.randn(20, BATCH, 32),), {}, batch_dim=1)


class _CellLoop(nn.Module):
    def __init__(self):
        super().__init__()
        self.cell, self.out = nn.LSTMCell(32, 128), nn.Linear(128, 10)

    def forward(self, x):
        state = None
        for step in x.unbind(0):
            state = self.cell(step, state)
        return self.out(state[0])


def _cells():
    return Case(_CellLoop(), (torch.randn(20, BATCH, 32),), {}, batch_dim=1)


class _Attention(nn.Module):
    def __init__(self):
        super().__init__()
        self.attn, self.out = nn.MultiheadAttention(64, 4, batch_first=True), nn.Linear(64, 10)

    def forward(self, x, padding):
        return self.out(self.attn(x, x, x, key_padding_mask=padding, need_weights=False)[0])


def _padding(batch, steps):
    return torch.arange(steps)[None, :] >= (torch.arange(batch) % steps + 1)[:, None]


def _attention():
    return Case(_Attention(), (torch.randn(BATCH, 20, 64), _padding(BATCH, 20)), {})


class _Encoder(nn.Module):
    def __init__(self):
        super().__init__()
        layer = nn.TransformerEncoderLayer(64, 4, 256, dropout=0.1, batch_first=True)
        self.encoder, self.out = nn.TransformerEncoder(layer, 2), nn.Linear(64, 10)

    def forward(self, x, padding):
        return self.out(self.encoder(x, src_key_padding_mask=padding))


def _encoder():
    return Case(_Encoder(), (torch.randn(BATCH, 20, 64), _padding(BATCH, 20)), {})


class _Transformer(nn.Module):
    def __init__(self):
        super().__init__()
        self.transformer = nn.Transformer(64, 4, 2, 2, 256, dropout=0.1)
        self.out = nn.Linear(64, 10)

    def forward(self, src, tgt):
        mask = nn.Transformer.generate_square_subsequent_mask(tgt.shape[0])
        return self.out(self.transformer(src, tgt, tgt_mask=mask))


def _transformer():
    return Case(_Transformer(), (torch.randn(12, BATCH, 64), torch.randn(16, BATCH, 64)), {}, batch_dim=1)


# SCAN's LSTM: modmask.seq2seq (a Python cell, one step at a time) and the same network with nn.LSTM
SCAN_IN, SCAN_OUT, SCAN_SRC, SCAN_TGT = 17, 10, 9, 24


def _scan_batch():
    g = torch.Generator().manual_seed(0)
    return (torch.randint(4, SCAN_IN, (SCAN_SRC, BATCH), generator=g),
            torch.randint(4, SCAN_OUT, (SCAN_TGT, BATCH), generator=g))


def _scan_cell():
    src, tgt = _scan_batch()
    model = LSTMSeq2Seq(SCAN_IN, SCAN_OUT, hidden=200, layers=2, embedding=16, dropout=0.0)
    return Case(model, (src, None, tgt), {}, batch_dim=1)


class NNLSTMSeq2Seq(nn.Module):
    """``modmask.seq2seq.LSTMSeq2Seq``'s network (2 x 200 encoder and decoder, embeddings of 16, the
    encoder's final states start the decoder) with ``nn.LSTM``, teacher forced: for timing only (no
    padding handling, so equal-length batches)."""

    def __init__(self, in_vocab, out_vocab, hidden=200, layers=2, embedding=16):
        super().__init__()
        self.source_embedding, self.encoder = nn.Embedding(in_vocab, embedding), nn.LSTM(embedding, hidden, layers)
        self.target_embedding, self.decoder = nn.Embedding(out_vocab, embedding), nn.LSTM(embedding, hidden, layers)
        self.output = nn.Linear(hidden, out_vocab)

    def forward(self, src, tgt_in):
        _, state = self.encoder(self.source_embedding(src))
        return self.output(self.decoder(self.target_embedding(tgt_in), state)[0])


def _scan_nn_lstm():
    src, tgt = _scan_batch()
    return Case(NNLSTMSeq2Seq(SCAN_IN, SCAN_OUT), (src, tgt), {}, batch_dim=1)


def _hf_gpt2(padding: bool):
    def build():
        import transformers
        transformers.logging.set_verbosity_error()
        config = transformers.GPT2Config(n_layer=2, n_embd=64, n_head=4, vocab_size=100, n_positions=32,
                                         bos_token_id=0, eos_token_id=0, use_cache=False)
        ids = torch.randint(0, 100, (BATCH, 20))
        kwargs = {"attention_mask": (~_padding(BATCH, 20)).long()} if padding else {}
        return Case(transformers.GPT2LMHeadModel(config), (ids,), kwargs, output=lambda out: out.logits)
    return build


def _hf_bert(padding: bool):
    def build():
        import transformers
        transformers.logging.set_verbosity_error()
        config = transformers.BertConfig(num_hidden_layers=2, hidden_size=64, num_attention_heads=4,
                                         intermediate_size=256, vocab_size=100, max_position_embeddings=32)
        ids = torch.randint(0, 100, (BATCH, 20))
        kwargs = {"attention_mask": (~_padding(BATCH, 20)).long()} if padding else {}
        return Case(transformers.BertForSequenceClassification(config), (ids,), kwargs, output=lambda out: out.logits)
    return build


class _Square(torch.autograd.Function):
    """An autograd.Function without vmap support (no ``setup_context``)."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x * x

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return 2 * x * grad


class _Custom(nn.Module):
    def __init__(self):
        super().__init__()
        self.hidden, self.out = nn.Linear(64, 256), nn.Linear(256, 10)

    def forward(self, x):
        return self.out(_Square.apply(self.hidden(x)))


def _custom():
    return Case(_Custom(), (torch.randn(BATCH, 64),), {})


FAMILIES = [
    Family("MLP", "`nn.Linear`", _mlp),
    Family("CNN", "`nn.Conv2d`, `nn.BatchNorm2d` (eval), `nn.MaxPool2d`", _cnn),
    Family("token model", "`nn.Embedding` (never masked), `nn.LayerNorm`, `nn.Linear`", _tokens),
    Family("LSTM", "`nn.LSTM` (2 layers)", _recurrent(nn.LSTM, num_layers=2)),
    Family("bidirectional GRU", "`nn.GRU` (bidirectional)", _recurrent(nn.GRU, bidirectional=True)),
    Family("RNN", "`nn.RNN`", _recurrent(nn.RNN)),
    Family("LSTM cell loop", "`nn.LSTMCell` (also `nn.GRUCell`, `nn.RNNCell`) called per time step", _cells),
    Family("self-attention", "`nn.MultiheadAttention` (key padding mask)", _attention),
    Family("Transformer encoder", "`nn.TransformerEncoder` of `nn.TransformerEncoderLayer`", _encoder),
    Family("Transformer", "`nn.Transformer` (`nn.TransformerDecoderLayer` too)", _transformer),
    Family("SCAN LSTM, Python cell", "`modmask.seq2seq.LSTMSeq2Seq` (`nn.Linear` gates, one step at a time)",
           _scan_cell),
    Family("SCAN LSTM with nn.LSTM", "the same network with `nn.LSTM` (benchmark only)", _scan_nn_lstm),
    Family("GPT-2", "Hugging Face `GPT2LMHeadModel` (tiny, no padding mask)", _hf_gpt2(False), "transformers"),
    Family("GPT-2 with padding mask", "the same with `attention_mask` (SDPA attention)", _hf_gpt2(True),
           "transformers"),
    Family("BERT", "Hugging Face `BertForSequenceClassification` (tiny, no padding mask)", _hf_bert(False),
           "transformers"),
    Family("BERT with padding mask", "the same with `attention_mask`", _hf_bert(True), "transformers"),
    Family("custom op", "an `autograd.Function` without vmap support", _custom),
]


def available(family: Family) -> bool:
    if family.needs is None:
        return True
    try:
        __import__(family.needs)
    except ImportError:
        return False
    return True


def _masked(case: Case, kernels: str = "auto") -> MaskedModel:
    model = case.model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return MaskedModel(model, WeightMask.for_module(model), mask_samples=K, batch_dim=case.batch_dim,
                       output_batch_dim=case.output_batch_dim, seed=0, kernels=kernels)


def engine_path(family: Family) -> str:
    """The path MaskedModel takes for this family (after one forward, which settles a fallback)."""
    torch.manual_seed(0)
    case = family.build()
    masked = _masked(case, kernels="eager")   # the path does not depend on the sampling kernels
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PerSampleFallbackWarning)
        warnings.filterwarnings("ignore", message="There is a performance drop")
        with torch.no_grad():
            masked(*case.args, **case.kwargs)
    return masked.path


def _cpu_ms(step, warmup: int, reps: int) -> float:
    for _ in range(warmup):
        step()
    times = []
    for _ in range(reps):
        start = time.process_time()
        step()
        times.append((time.process_time() - start) * 1e3)
    return statistics.median(times)


def measure(family: Family, warmup: int, reps: int) -> dict:
    torch.manual_seed(0)
    case = family.build()
    model = case.model.eval()
    params = [p for p in model.parameters()]
    opt = torch.optim.Adam(params, lr=1e-4)

    def loss_of(out):
        return case.output(out).float().square().mean()

    def ordinary():
        opt.zero_grad(set_to_none=True)
        loss_of(model(*case.args, **case.kwargs)).backward()
        opt.step()

    ordinary_ms = _cpu_ms(ordinary, warmup, reps)
    masked = _masked(case)
    mopt = torch.optim.Adam(masked.mask.trainable_parameters(), lr=1e-2)

    def mask_step(forward):
        def step():
            mopt.zero_grad(set_to_none=True)
            (loss_of(forward(*case.args, **case.kwargs)) + masked.regularizer(1e-4, BATCH)).backward()
            mopt.step()
        return step

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PerSampleFallbackWarning)
        warnings.filterwarnings("ignore", message="There is a performance drop")
        mask_ms = _cpu_ms(mask_step(masked), warmup, reps)
        loop_ms = _cpu_ms(mask_step(masked.forward_loop), warmup, reps)
    return {"family": family.name, "modules": family.modules, "path": masked.path, "ordinary_ms": ordinary_ms,
            "mask_ms": mask_ms, "loop_ms": loop_ms}


def table(rows: list[dict]) -> str:
    lines = ["| family | modules | path | mask step ÷ ordinary step | K passes ÷ ordinary step |",
             "|---|---|---|---|---|"]
    for r in rows:
        if "mask_ms" in r:
            ratios = f"{r['mask_ms'] / r['ordinary_ms']:.2f}× | {r['loop_ms'] / r['ordinary_ms']:.2f}×"
        else:
            ratios = "– | –"
        lines.append(f"| {r['family']} | {r['modules']} | {r['path']} | {ratios} |")
    return "\n".join(lines)


def readme_rows(text: str) -> list[dict]:
    """The table between the markers in README.md, as rows {family, modules, path, mask, passes}."""
    body = text[text.index(START) + len(START):text.index(END)]
    rows = []
    for line in body.strip().splitlines()[2:]:
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        rows.append({"family": cells[0], "modules": cells[1], "path": cells[2], "mask": cells[3],
                     "passes": cells[4]})
    return rows


def write_readme(markdown: str) -> None:
    text = README.read_text()
    start, end = text.index(START) + len(START), text.index(END)
    README.write_text(text[:start] + "\n" + markdown + "\n" + text[end:])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--reps", type=int, default=10)
    parser.add_argument("--only", help="a regular expression on family names")
    parser.add_argument("--paths-only", action="store_true", help="the path column only, no timing")
    parser.add_argument("--write-readme", action="store_true", help="replace the table in README.md")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    if args.child:   # one family, JSON on stdout
        print(json.dumps(measure({f.name: f for f in FAMILIES}[args.child], args.warmup, args.reps)))
        return
    rows = []
    for family in FAMILIES:
        if args.only and not re.search(args.only, family.name):
            continue
        if not available(family):
            print(f"skipping {family.name}: {family.needs} is not installed", file=sys.stderr)
            continue
        if args.paths_only:
            rows.append({"family": family.name, "modules": family.modules, "path": engine_path(family)})
        else:
            # each family in a fresh process: its own compiled sampling kernels, no state from the others
            cmd = [sys.executable, __file__, "--child", family.name, "--warmup", str(args.warmup),
                   "--reps", str(args.reps)]
            done = subprocess.run(cmd, check=True, capture_output=True, text=True)
            rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
            r = rows[-1]
            print(f"{family.name}: {r['path']}, ordinary {r['ordinary_ms']:.1f} ms, mask step {r['mask_ms']:.1f} ms, "
                  f"K passes {r['loop_ms']:.1f} ms", file=sys.stderr)
    markdown = table(rows)
    print(markdown)
    if args.write_readme:
        write_readme(markdown)


if __name__ == "__main__":
    main()
