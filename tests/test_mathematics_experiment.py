"""The Mathematics Dataset experiment: packing, the exact-match shortcut, masks on the tied Transformer,
and a toy run of the whole procedure (pretrain on all levels, control and easy masks, evaluation)."""
from __future__ import annotations

import logging

import pandas as pd
import pytest
import torch

from modmask.data.vocab import EOS_ID, PAD_ID, SOS_ID, UnknownTokenError
from modmask.experiments import mathematics as math_exp
from modmask.masked_model import MaskedModel
from modmask.masks import BinaryMask, WeightMask
from modmask.experiments.scan import decode_with_mask
from modmask.training import TrainSettings

LOG = logging.getLogger("test")
TINY = {"model": "transformer", "d_model": 16, "heads": 2, "d_ff": 24, "encoder_layers": 2, "decoder_layers": 2,
        "dropout": 0.0}
ROWS = pd.DataFrame({"question": ["What is 2 + 3?", "Sort -2, 5, 1.", "Let x = 4*y. Solve 2*x = 8 for y."],
                     "answer": ["5", "-2, 1, 5", "1"], "level": ["easy", "medium", "hard"]})


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny matrices: threads only add overhead (and contention on a shared machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_one_character_vocabulary_the_generators_printable_ascii():
    vocab = math_exp.vocabulary()
    assert vocab.level == "char" and len(vocab) == 4 + 95
    assert vocab.itos[4] == " " and vocab.itos[-1] == "~" and "?" in vocab and "*" in vocab
    assert vocab == math_exp.vocabulary()  # the same ids every time
    with pytest.raises(UnknownTokenError):
        math_exp.encode(pd.DataFrame({"question": ["What is 2 × 3?"], "answer": ["6"]}), vocab)


def test_encode_packs_questions_and_answers_and_unpack_recovers_them():
    vocab = math_exp.vocabulary()
    packed = math_exp.encode(ROWS, vocab)
    assert packed.shape == (3, math_exp.QUESTION_WIDTH + len("-2, 1, 5") + 1)
    src, tgt_in, tgt_out = math_exp.unpack(packed[[0, 2]])  # cut to the longest of these two
    assert src.shape == (len("Let x = 4*y. Solve 2*x = 8 for y."), 2) and tgt_out.shape == (2, 2)
    assert vocab.decode_batch(src) == [ROWS["question"][0], ROWS["question"][2]]
    assert vocab.decode_batch(tgt_out) == ["5", "1"]
    assert tgt_out[:, 0].tolist() == [vocab.stoi["5"], EOS_ID]
    assert src[len("What is 2 + 3?"):, 0].eq(PAD_ID).all()
    assert tgt_in[0].tolist() == [SOS_ID, SOS_ID] and torch.equal(tgt_in[1:], tgt_out[:-1])
    # the training tensors: the packed examples, and their answers as targets
    inputs, targets = math_exp.training_tensors(ROWS, vocab)
    assert torch.equal(inputs, packed) and torch.equal(targets, packed[:, math_exp.QUESTION_WIDTH:])


def test_encode_respects_the_source_width():
    vocab = math_exp.vocabulary()
    with pytest.raises(ValueError, match="at most 10"):
        math_exp.encode(ROWS, vocab, source_width=10)
    long = pd.DataFrame({"question": ["1" * 161], "answer": ["1"]})
    with pytest.raises(ValueError, match="at most 160"):
        math_exp.encode(long, vocab)
    packed = math_exp.encode(ROWS, vocab, source_width=40)
    src, _, tgt_out = math_exp.unpack(packed, source_width=40)
    assert vocab.decode_batch(src) == list(ROWS["question"]) and vocab.decode_batch(tgt_out) == list(ROWS["answer"])


def test_the_mask_holds_no_embedding_and_no_read_out():
    model = math_exp.build_network({k: v for k, v in TINY.items() if k != "dropout"}, seed=0)
    assert model.tie_embeddings  # the block did not ask: tied by default
    names = dict(model.named_parameters())
    assert "embedding.weight" in names and not any("output.weight" == n.split("decoder.")[-1] for n in names)
    mask = WeightMask.for_module(model, math_exp.SELECTION)
    assert mask.names and not any("embedding" in n for n in mask.names)
    assert not any(n.startswith("decoder.output") for n in mask.names)
    assert not any(n.endswith("bias") or "norm" in n for n in mask.names)
    # every masked tensor is a weight matrix of an attention or feed-forward map, none shares storage with the
    # embedding (which is the read-out)
    embedding = model.embedding.weight
    assert all(names[n].dim() == 2 and names[n].data_ptr() != embedding.data_ptr() for n in mask.names)
    # an untied model's separate output layer is excluded by name
    untied = math_exp.build_network({**TINY, "tie_embeddings": False}, seed=0)
    assert "decoder.output.weight" in dict(untied.named_parameters())
    assert not any("output.weight" in n and n.startswith("decoder.output") for n in
                   WeightMask.for_module(untied, math_exp.SELECTION).names)


def test_the_paper_network_has_the_paper_shape():
    spec = {"model": "transformer", "d_model": 256, "heads": 4, "d_ff": 512, "encoder_layers": 3, "decoder_layers": 3}
    model = math_exp.build_network(spec, seed=0)
    assert model.embedding.weight.shape == (99, 256)
    assert len(model.encoder.layers) == 3 and len(model.decoder.layers) == 3
    assert model.encoder.layers[0].feedforward.hidden.weight.shape == (512, 256)


def _random_mask(model, seed=0):
    mask = WeightMask.for_module(model, math_exp.SELECTION, 2.0)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for logit in mask.trainable_parameters():
            logit.copy_(torch.randn(logit.shape, generator=g) + 1.5)
    return mask


def test_vectorised_mask_samples_equal_a_loop_over_samples():
    torch.manual_seed(0)
    model = math_exp.build_network(TINY, seed=0).eval()
    vocab = math_exp.vocabulary()
    rows = pd.DataFrame({"question": ["12+3", "What is 7?", "9", "Sort 3, 1, 2.", "x", "44*2", "1-1", "a"],
                         "answer": ["15", "7", "9", "1, 2, 3", "x", "88", "0", "a"]})
    packed = math_exp.encode(rows, vocab)
    masked = MaskedModel(model, _random_mask(model), mask_samples=4, batch_dim=1, seed=3)
    noise = masked.draw_noise()
    _, _, tgt_out = math_exp.unpack(packed)
    results = []
    for forward in (masked.forward, masked.forward_loop):
        out = math_exp.teacher_forced(lambda *a, **kw: forward(*a, noise=noise, **kw), packed)
        math_exp.loss(out, packed[:, math_exp.QUESTION_WIDTH:]).backward()
        grads = [p.grad.clone() for p in masked.mask.trainable_parameters()]
        for p in masked.mask.trainable_parameters():
            p.grad = None
        results.append((out.detach(), grads))
    (out_v, grads_v), (out_l, grads_l) = results
    assert out_v.shape == (tgt_out.shape[0], 8, len(vocab))
    torch.testing.assert_close(out_v, out_l, rtol=1e-5, atol=1e-6)
    for a, b in zip(grads_v, grads_l):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-7)
    # chunk k ran with sample k: examples 2 and 3 (chunk 1) under sample 1's weights
    weights = {n: w[1] for n, w in masked.sample_weights(noise).items()}
    src, tgt_in, _ = math_exp.unpack(packed)
    alone = torch.func.functional_call(model, weights, (src[:, 2:4], None, tgt_in[:, 2:4]), strict=False)
    torch.testing.assert_close(out_v[:, 2:4], alone, rtol=1e-5, atol=1e-6)


# ---- a toy run of the whole procedure ---------------------------------------------------------------

def reverse_task(seed: int, per_level: int) -> pd.DataFrame:
    """Reverse a digit string; easy: 2 digits, medium: 3, hard: 4."""
    g = torch.Generator().manual_seed(seed)
    rows = []
    for level, length in (("easy", 2), ("medium", 3), ("hard", 4)):
        for _ in range(per_level):
            digits = "".join(str(int(d)) for d in torch.randint(10, (length,), generator=g))
            rows.append({"question": f"rev {digits}", "answer": digits[::-1], "level": level})
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def toy_run():
    """A tiny Transformer pretrained on all levels of 12 reversals, a control mask and an easy mask on it."""
    torch.manual_seed(0)
    train = reverse_task(0, per_level=4)
    settings = TrainSettings(steps=150, lr=1e-2, batch_size=16, log_every=50, warmup=10, adam_betas=(0.9, 0.995),
                             adam_eps=1e-9)
    model, history = math_exp.pretrain(train, TINY, settings, seed=0, device="cpu", log=LOG)
    mask_settings = TrainSettings(steps=60, lr=0.1, batch_size=16, mask_samples=8, beta=1e-3, log_every=20)
    masks = {name: math_exp.train_level_mask(model, train, mask_settings, seed=i + 1, device="cpu", log=LOG,
                                             levels=levels)[0]
             for i, (name, levels) in enumerate(math_exp.SUBSETS.items())}
    return train, model, history, masks


def test_toy_network_learns_its_training_set(toy_run):
    train, model, history, _ = toy_run
    assert history.rows[-1]["loss"] < 0.1 * history.rows[0]["loss"]
    assert math_exp.exact_match(model, None, math_exp.encode(train, math_exp.vocabulary()), "cpu").all()
    assert all(not p.requires_grad for p in model.parameters())  # the masks froze it


def test_toy_masks_and_accuracy_rows(toy_run):
    train, model, _, masks = toy_run
    binary = {name: mask.binary() for name, mask in masks.items()}
    for mask in binary.values():
        assert not any("embedding" in n or n.startswith("decoder.output") for n in mask.names)
        assert mask.count() < 0.95 * sum(mask.sizes().values())  # the regulariser pruned something
    assert binary["control"].names == binary["easy"].names
    assert any(not torch.equal(binary["control"].bits[n], binary["easy"].bits[n]) for n in binary["easy"].names)
    test = pd.concat([train, reverse_task(1, per_level=3)], ignore_index=True)  # 7 rows per level
    rows = math_exp.accuracy_rows(model, {"none": None, **binary}, test, "cpu", task="reverse", seed=0)
    assert [(r["mask"], r["test_level"], r["total"]) for r in rows] == [
        (m, level, 7) for m in math_exp.MASKS for level in math_exp.LEVELS]
    assert all(r["task"] == "reverse" and r["seed"] == 0 for r in rows)
    assert all(r["accuracy"] == pytest.approx(r["correct"] / r["total"]) for r in rows)
    by = {(r["mask"], r["test_level"]): r for r in rows}
    assert by[("none", "easy")]["correct"] >= 4  # its own training rows at least
    # the counts agree with exact_match on each level's rows
    hard = math_exp.encode(test[test["level"] == "hard"], math_exp.vocabulary())
    assert by[("easy", "hard")]["correct"] == int(math_exp.exact_match(model, binary["easy"], hard, "cpu").sum())
    # only some levels, e.g. Fig. 5's hard
    only_hard = math_exp.accuracy_rows(model, {"none": None}, test, "cpu", levels=["hard"])
    assert [(r["mask"], r["test_level"], r["correct"]) for r in only_hard] == [
        ("none", "hard", by[("none", "hard")]["correct"])]


def test_level_subset_and_missing_levels():
    table = reverse_task(0, per_level=2)
    assert list(math_exp.level_subset(table, ["easy"])["level"]) == ["easy", "easy"]
    assert math_exp.level_subset(table, None) is table
    with pytest.raises(ValueError, match="no rows of level"):
        math_exp.level_subset(table[table["level"] != "easy"], ["easy"])
    model = math_exp.build_network(TINY, seed=0)
    with pytest.raises(ValueError, match="no rows of level"):
        math_exp.accuracy_rows(model, {"none": None}, table[table["level"] != "hard"], "cpu")


def test_every_weight_removed_answers_nothing(toy_run):
    train, model, _, masks = toy_run
    empty = BinaryMask({n: torch.zeros_like(b) for n, b in masks["control"].binary().bits.items()})
    assert not math_exp.exact_match(model, empty, math_exp.encode(train, math_exp.vocabulary()), "cpu").any()


def test_exact_match_equals_greedy_decoding(toy_run):
    """The teacher-forced shortcut agrees with step-by-step greedy decoding, with and without a mask.

    Targets: for most questions the true reversal (the trained network gets its training rows right and
    most new ones wrong), for every third one whose output ended, the network's own output (a match).
    """
    train, model, _, masks = toy_run
    vocab = math_exp.vocabulary()
    questions = pd.concat([train, reverse_task(2, per_level=8)], ignore_index=True)
    src = math_exp.unpack(math_exp.encode(questions, vocab))[0]
    for binary in (None, masks["control"].binary(), masks["easy"].binary(), _random_mask(model).binary()):
        decoded = decode_with_mask(model, binary, src, None, max_len=8)
        answers = []
        for i, (column, truth) in enumerate(zip(decoded.t().tolist(), questions["answer"])):
            own = column[:column.index(EOS_ID)] if EOS_ID in column else None
            use_own = i % 3 == 0 and own is not None and all(t >= 4 for t in own)
            answers.append(vocab.decode(own) if use_own else truth)
        table = questions.assign(answer=answers)
        by_decoding = torch.tensor([column[:len(a) + 1] == vocab.encode(a, eos=True)
                                    for column, a in zip(decoded.t().tolist(), answers)])
        by_shortcut = math_exp.exact_match(model, binary, math_exp.encode(table, vocab), "cpu", chunk=7)
        assert torch.equal(by_shortcut, by_decoding)
        assert 0 < int(by_shortcut.sum()) < len(answers)  # both outcomes occur


# ---- the workflow steps -----------------------------------------------------------------------------

BLOCK = {"data": {"tasks": ["reverse"], "seed": 0}, "network": TINY,
         "pretrain": {"steps": 30, "lr": 1e-2, "batch_size": 8, "log_every": 10, "adam_betas": [0.9, 0.995],
                      "adam_eps": 1e-9, "warmup": 5},
         "mask": {"steps": 10, "lr": 0.1, "batch_size": 8, "mask_samples": 8, "beta": 1e-3, "log_every": 5},
         "task_settings": {"reverse": {"mask": {"beta": 2e-3}}}}


def test_stage_settings_merge_the_task_overrides_and_the_hash_follows_them():
    from modmask import steps

    assert math_exp.stage_settings(BLOCK, "reverse", "mask")["beta"] == 2e-3
    assert math_exp.stage_settings(BLOCK, "other", "mask")["beta"] == 1e-3
    assert math_exp.stage_settings(BLOCK, "reverse", "pretrain") == BLOCK["pretrain"]

    def prov(block, stage, **columns):
        return steps.run_provenance("mathematics", block, "task", "reverse", 0, stage, "smoke", "v0", **columns)

    network, mask = prov(BLOCK, "network"), prov(BLOCK, "mask", mask="easy")
    assert (network["experiment"], network["task"], network["seed"], mask["mask"]) == ("mathematics", "reverse", 0,
                                                                                         "easy")
    changed = {**BLOCK, "task_settings": {"reverse": {"mask": {"beta": 3e-3}}}}
    # a mask setting changes the masks' hash, not the network's
    assert prov(changed, "network") == network
    assert prov(changed, "mask", mask="easy") != mask


def test_steps_write_a_network_masks_and_the_accuracy_table(tmp_path):
    from modmask import steps
    from modmask.io import read_parquet, read_parquet_metadata, write_parquet
    from step_jobs import run_step, snakemake_job

    write_parquet(reverse_task(0, per_level=4), tmp_path / "train.parquet")
    write_parquet(reverse_task(1, per_level=3), tmp_path / "test.parquet")
    torch.manual_seed(0)

    def prov(stage, **columns):
        return steps.run_provenance("mathematics", BLOCK, "task", "reverse", 0, stage, "smoke", "v0", **columns)

    run_step("network", experiment="mathematics", input={"train": tmp_path / "train.parquet"},
             output={"network": tmp_path / "network.pt"}, arch=math_exp.network_spec(BLOCK),
             settings=math_exp.stage_settings(BLOCK, "reverse", "pretrain"), provenance=prov("network"))
    model, contents = steps.load_network(tmp_path / "network.pt", "mathematics")
    assert contents["vocabulary"] == math_exp.vocabulary().to_dict() and model.tie_embeddings and not model.training
    mask_job = dict(experiment="mathematics", input={"train": tmp_path / "train.parquet",
                                                     "network": tmp_path / "network.pt"},
                    settings=math_exp.stage_settings(BLOCK, "reverse", "mask"))
    for subset in math_exp.SUBSETS:
        run_step("mask", **mask_job, output={"mask": tmp_path / f"mask_{subset}.pt"}, mask=subset,
                 provenance=prov("mask", mask=subset))
        assert not (tmp_path / f"mask_{subset}.pt.ckpt").exists()
    with pytest.raises(ValueError, match="unknown mask subset"):
        run_step("mask", **mask_job, output={"mask": tmp_path / "mask_hard.pt"}, mask="hard",
                 provenance=prov("mask", mask="hard"))
    out = tmp_path / "accuracy.parquet"
    run_step("evaluate", experiment="mathematics", output={"accuracy": out}, provenance=prov("evaluate"),
             input={"network": tmp_path / "network.pt", "test": tmp_path / "test.parquet",
                    "masks": [tmp_path / f"mask_{s}.pt" for s in math_exp.SUBSETS]})
    table = read_parquet(out)
    assert list(table.columns) == ["experiment", "scale", "task", "seed", "config_hash", "code_version", "mask",
                                   "test_level", "correct", "total", "accuracy"]
    assert list(zip(table["mask"], table["test_level"])) == [(m, level) for m in math_exp.MASKS
                                                             for level in math_exp.LEVELS]
    assert (table["total"] == 3).all() and (table["task"] == "reverse").all()
    assert read_parquet_metadata(out)["config_hash"] == prov("evaluate")["config_hash"]
    # Fig. 5 needs the hard level only
    step = steps.load_step(steps.Job.from_snakemake(snakemake_job(
        experiment="mathematics", input={"network": tmp_path / "network.pt", "test": tmp_path / "test.parquet",
                                         "masks": [tmp_path / "mask_easy.pt"]})), math_exp, 0, "cpu", LOG)
    hard = math_exp.evaluate(step, levels=["hard"])["accuracy"]
    assert list(zip(hard["mask"], hard["test_level"])) == [("none", "hard"), ("easy", "hard")]
    with pytest.raises(ValueError, match="is not a saved mathematics network"):
        steps.load_network(tmp_path / "mask_easy.pt", "mathematics")
