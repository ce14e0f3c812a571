"""method.shared_input: x computed once for both step-by-step tasks (src/distill/data/shared_input.py).

Exact: the losses and gradients of the one pass equal those of the same tokens through separate
passes (``x m_label y`` and ``x m_rationale r`` as two causal sequences; the prefix-free encoder run
once per decoder task), for a causal student, a seq2seq one and a LoRA adapter, on the plain and
fast paths. Isolated: scrambling the other branch moves no loss of a branch, and no x or marker
token is ever a target. End to end: train.py runs in the layout and its checkpoint predicts what
the run wrote, and a model whose attention leaks across branches is caught on the first step."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from distill.models.checkpoints import load_module
from distill.data.encoding import marker_ids
from distill.data.shared_input import branch_attention_mask, pad_decoder_task, pad_shared_causal
from distill.models import losses
from distill.models.inference import predict
from distill.models.losses import combine_losses, shared_task_losses, unshared_task_losses
from distill.utils.speed import PLAIN, Speed
from distill.training import train
from train_utils import QUICK, REPO, compose_train, module_and_train_batch, subprocess_env

TINY_CAUSAL = {"kind": "tiny_causal", "name_or_path": None, "short_name": "tiny_causal", "hidden_size": 64,
               "intermediate_size": 128, "num_layers": 2, "num_heads": 4}
LORA = {**TINY_CAUSAL, "lora": {"r": 4, "alpha": 8, "dropout": 0.0, "target_modules": ["q_proj", "v_proj"]}}
TINY = {"kind": "tiny", "name_or_path": None, "short_name": "tiny"}
STUDENTS = {"tiny_causal": TINY_CAUSAL, "tiny": TINY, "lora": LORA}
SPEEDS = {"plain": PLAIN, "target_only": Speed(target_only_logits=True)}


def test_branch_mask_sees_x_and_its_own_branch_only():
    # one row: x = 3 tokens, label branch 2, rationale branch 2, then 1 pad
    allowed = branch_attention_mask(torch.tensor([[3, 2, 2]]), width=8)[0, 0]
    x, label, rationale, pad = [0, 1, 2], [3, 4], [5, 6], [7]
    for q in range(8):
        for k in range(8):
            if q in pad:
                expected = k == q
            elif q in x:
                expected = k <= q
            else:
                branch = label if q in label else rationale
                expected = k in x or (k in branch and k <= q)
            assert bool(allowed[q, k]) == expected, (q, k)


def test_the_layout_places_targets_in_their_branches_at_continued_positions():
    batch = pad_shared_causal([[11, 12, 13], [21]], [91], [[1, 2], [3]], [92, 93], [[4, 5, 6], []], pad_token_id=0)
    assert batch["input_ids"].tolist() == [[11, 12, 13, 91, 1, 2, 92, 93, 4, 5, 6], [21, 91, 3, 0, 0, 0, 0, 0, 0, 0, 0]]
    assert batch["position_ids"][0].tolist() == [0, 1, 2, 3, 4, 5, 3, 4, 5, 6, 7]  # both branches start at len(x)
    assert batch["spans"].tolist() == [[3, 3, 5], [1, 2, 0]]
    # each target is predicted from the column before it, inside its own branch; no x or marker token is a target
    assert batch["label_ids"].tolist() == [1, 2, 3] and batch["label_positions"].tolist() == [[0, 3], [0, 4], [1, 1]]
    assert batch["rationale_ids"].tolist() == [4, 5, 6] and batch["rationale_positions"].tolist() == [[0, 7], [0, 8], [0, 9]]
    decoder = pad_decoder_task([91, 92], [[1, 2], []])
    assert decoder["decoder_sequence"].tolist() == [[91, 92, 1, 2], [-100] * 4]
    assert decoder["labels"].tolist() == [[-100, -100, 1, 2], [-100] * 4]
    assert decoder["target_positions"].tolist() == [[0, 2], [0, 3]]


def test_an_empty_marker_is_refused():
    from distill.models.student import load_student

    tokenizer = load_student(**TINY).tokenizer
    assert marker_ids(tokenizer, "[label] ")
    with pytest.raises(ValueError, match="non-empty task marker"):
        marker_ids(tokenizer, "")


def _gradients(model, loss):
    model.zero_grad()
    loss.backward()
    return {name: p.grad.detach().clone() for name, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("speed", list(SPEEDS))
@pytest.mark.parametrize("student", list(STUDENTS))
def test_one_pass_equals_separate_passes_in_loss_and_gradients(student, speed):
    module, batch = module_and_train_batch(STUDENTS[student], SPEEDS[speed], shared_input=True)
    assert "shared" in batch
    pad = module.tokenizer.pad_token_id
    shared = module.compute_losses(batch)
    unshared = unshared_task_losses(module.model, batch, pad)
    expected = combine_losses(unshared["label"], unshared["rationale"], rationale_weight=1.0)
    for name, value in (("loss_label", unshared["label"]), ("loss_rationale", unshared["rationale"]), ("loss", expected)):
        assert torch.allclose(shared[name], value, rtol=1e-5, atol=1e-6), (name, shared[name], value)
    got = _gradients(module.model, shared["loss"])
    want = _gradients(module.model, combine_losses(*unshared_task_losses(module.model, batch, pad).values()))
    assert got.keys() == want.keys() and got
    if student == "lora":
        assert all("lora_" in name for name in got), "only the adapter trains"
    for name in want:
        assert torch.allclose(got[name], want[name], rtol=1e-4, atol=1e-6), name


@pytest.mark.parametrize("student", ["tiny_causal", "tiny"])
def test_a_branch_loss_ignores_the_other_branch(student):
    module, batch = module_and_train_batch(STUDENTS[student], Speed(target_only_logits=True), shared_input=True)
    generator = torch.Generator().manual_seed(0)
    vocab = module.tokenizer.vocab_size

    def scrambled(task: str) -> dict:
        changed = dict(batch)
        if student == "tiny_causal":
            shared = dict(batch["shared"])
            ids = shared["input_ids"].clone()
            spans = shared["spans"]
            for row, (n, n_label, n_rationale) in enumerate(spans.tolist()):
                start, length = (n, n_label) if task == "label" else (n + n_label, n_rationale)
                ids[row, start : start + length] = torch.randint(5, vocab, (length,), generator=generator)
            shared["input_ids"] = ids
            changed["shared"] = shared
        else:
            decoder = dict(batch[task])
            sequence = decoder["decoder_sequence"].clone()
            sequence[sequence != -100] = torch.randint(5, vocab, (int((sequence != -100).sum()),), generator=generator)
            decoder["decoder_sequence"] = sequence
            changed[task] = decoder
        return changed

    with torch.no_grad():
        base = shared_task_losses(module.model, batch)
        after_label = shared_task_losses(module.model, scrambled("label"))
        after_rationale = shared_task_losses(module.model, scrambled("rationale"))
    assert torch.allclose(after_label["rationale"], base["rationale"], rtol=1e-6, atol=1e-7)
    assert torch.allclose(after_rationale["label"], base["label"], rtol=1e-6, atol=1e-7)
    # and the scrambles did reach the model: each moves its own branch's loss
    assert not torch.allclose(after_label["label"], base["label"])
    assert not torch.allclose(after_rationale["rationale"], base["rationale"])


def test_a_model_whose_attention_leaks_across_branches_is_caught(monkeypatch, caplog):
    module, batch = module_and_train_batch(TINY_CAUSAL, Speed(target_only_logits=True), shared_input=True)
    # a kernel that ignored the branch mask would let the rationale branch read the label branch
    monkeypatch.setattr(losses, "attention_mask_for", lambda model, allowed: torch.ones_like(allowed).tril())
    module.check_first_batch(batch)
    assert "disagrees with separate passes" in caplog.text and "does not keep the branches apart" in caplog.text
    got = module.compute_losses(batch)
    want = unshared_task_losses(module.model, batch, module.tokenizer.pad_token_id)
    assert torch.allclose(got["loss_rationale"], want["rationale"]) and torch.allclose(got["loss_label"], want["label"])


def test_the_first_batch_check_allows_bf16_rounding_and_still_catches_a_leak(monkeypatch, caplog):
    """Under bf16 autocast (the grid's precision; forced here on any CPU) the one pass and the separate
    passes round differently (SmolLM2 on SVAMP: 1.2626 against 1.2602), which must not turn the
    shared pass off; a leak across branches is still caught in bf16."""
    module, batch = module_and_train_batch(TINY_CAUSAL, Speed(target_only_logits=True), shared_input=True)
    assert losses.loss_tolerance(module.model) == 1e-3
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert losses.loss_tolerance(module.model) == 2 * torch.finfo(torch.bfloat16).eps
        module.check_first_batch(batch)
        assert module._shared_pass and "disagrees" not in caplog.text
        monkeypatch.setattr(losses, "attention_mask_for", lambda model, allowed: torch.ones_like(allowed).tril())
        module.check_first_batch(batch)
    assert not module._shared_pass and "does not keep the branches apart" in caplog.text


@pytest.mark.parametrize("model", ["tiny_causal", "tiny"])
def test_train_in_the_shared_layout_and_predict_from_its_checkpoint(model, tmp_path):
    """train.py in the layout; distill.predict and eval.py on its checkpoint write the run's predictions
    (both give the label marker after x, as the run did)."""
    overrides = [o if o != "model=tiny" else f"model={model}" for o in QUICK]
    arith = ["data.benchmark.train_size=32", "data.benchmark.test_size=8"]
    run_dir = tmp_path / "run"
    train(compose_train([*overrides, *arith, "method.shared_input=true", "optimizer.lr=1e-5"], run_dir))
    results = json.loads((run_dir / "results.json").read_text())
    assert results["status"] == "ok" and results["global_step"] == 4 and results["config"]["shared_input"] is True
    module = load_module(results["best_checkpoint"])
    assert module.settings.shared_input
    written = (run_dir / "predictions_test.jsonl").read_text()
    records = [json.loads(line) for line in written.splitlines()]
    got = predict(module.model, module.tokenizer, module.settings, [r["input"] for r in records])
    assert [g["prediction"] for g in got] == [r["prediction"] for r in records]
    if model == "tiny_causal":  # eval.py's own data module lays x out as the run did
        subprocess.run(
            [sys.executable, "eval.py", f"ckpt_path={results['best_checkpoint']}", "split=test", *arith,
             f"hydra.run.dir={tmp_path / 'eval'}", "data.eval_batch_size=8"],
            cwd=REPO, env=subprocess_env(), check=True, capture_output=True, timeout=300,
        )
        assert (tmp_path / "eval" / "predictions_test.jsonl").read_text() == written


@pytest.mark.parametrize("model, decoder_only", [
    ("tiny", False), ("minilm", False), ("hf", False), ("t5_v1_1_base", False), ("flan_t5_small", False),
    ("tiny_causal", True), ("smollm2", True), ("causal", True)])
def test_step_by_step_defaults_to_the_shared_input_for_decoder_only_students(model, decoder_only, tmp_path):
    """The default layout follows model.decoder_only (experiments/README: repro_smollm2_shared); the
    grid that measured the paper's layout keeps it, and an override still wins."""
    cfg = compose_train([f"model={model}", "method=step_by_step"], tmp_path)
    assert cfg.model.decoder_only is decoder_only and cfg.method.shared_input is decoder_only
    assert compose_train([f"model={model}", "method=step_by_step", "method.shared_input=false"],
                         tmp_path).method.shared_input is False


def test_the_reproduction_grid_keeps_the_paper_layout_and_its_shared_twin_does_not(tmp_path):
    grid = compose_train(["experiment=repro_smollm2", "method=step_by_step", "repro_cell=svamp"], tmp_path)
    shared = compose_train(["experiment=repro_smollm2_shared", "repro_cell=svamp"], tmp_path)
    assert (grid.model.decoder_only, grid.method.shared_input, shared.method.shared_input) == (True, False, True)


def test_load_student_refuses_a_decoder_only_flag_that_does_not_match_the_model():
    from distill.models.student import load_student

    assert load_student(**TINY_CAUSAL, decoder_only=True).kind == "causal"
    with pytest.raises(ValueError, match=r"model.decoder_only=True but model.kind=tiny built a seq2seq"):
        load_student(**TINY, decoder_only=True)
    with pytest.raises(ValueError, match=r"set model.decoder_only=True"):
        load_student(**TINY_CAUSAL, decoder_only=False)
