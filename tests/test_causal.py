"""Decoder-only (causal) students, unit level: the prompt -> completion layout of both tasks, the loss
identity (the module's loss is L_label + lambda * L_rationale, each the cross-entropy computed here
from the logits over completion tokens only) on the plain path and every exact speed lever, proof
that prompt and padding positions do not enter the loss, left-padded generation, and LoRA."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from distill.data.collate import Collator
from distill.data.padding import IGNORE_INDEX
from distill.data.encoding import Encoder, encode_inputs
from distill.models.loaders import load_tiny, load_tiny_causal
from distill.models.losses import fast_losses_agree
from distill.models.student import CAUSAL, SEQ2SEQ, kind_of, load_student
from distill.utils.speed import PLAIN, Speed
from train_utils import module_and_train_batch

TINY_CAUSAL = {"kind": "tiny_causal", "name_or_path": None, "short_name": "tiny_causal"}
LORA = {"r": 4, "alpha": 8, "dropout": 0.0, "target_modules": ["q_proj", "v_proj"]}

SPEEDS = {"plain": PLAIN, "target_only": Speed(target_only_logits=True)}


@pytest.fixture(scope="module", params=list(SPEEDS))
def module_batch_dm(request):
    return module_and_train_batch(TINY_CAUSAL, SPEEDS[request.param], with_datamodule=True)


@pytest.fixture
def module_and_batch(module_batch_dm):
    return module_batch_dm[:2]


def completion_loss(model, task) -> torch.Tensor:
    """Mean cross-entropy over completion tokens, by hand: the output at column c predicts the
    token at column c + 1; only columns whose label is a completion token count."""
    logits = model(input_ids=task["input_ids"], attention_mask=task["attention_mask"]).logits
    predicted, targets = logits[:, :-1], task["labels"][:, 1:]
    counted = targets != IGNORE_INDEX
    return F.cross_entropy(predicted[counted].float(), targets[counted])


def test_the_kind_is_read_from_the_model():
    assert kind_of(load_tiny_causal(hidden_size=16, intermediate_size=32, num_layers=1)[0]) == CAUSAL
    assert kind_of(load_tiny(d_model=16, d_ff=32, num_layers=1)[0]) == SEQ2SEQ


def test_tiny_causal_is_seedable_and_its_tokenizer_pads_on_the_left():
    a, tokenizer = load_tiny_causal(seed=3)
    b, _ = load_tiny_causal(seed=3)
    c, _ = load_tiny_causal(seed=4)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    assert not torch.equal(a.lm_head.weight, c.lm_head.weight)
    assert tokenizer.padding_side == "left"
    assert (tokenizer.bos_token, tokenizer.eos_token, tokenizer.pad_token) == ("[CLS]", "[SEP]", "[PAD]")
    assert a.generation_config.eos_token_id == tokenizer.eos_token_id
    assert a.generation_config.pad_token_id == tokenizer.pad_token_id
    # a text starts with [CLS] and has no [SEP] after it: [SEP] ends completions alone
    assert tokenizer("two plus two")["input_ids"] == [tokenizer.cls_token_id, *tokenizer("two plus two", add_special_tokens=False)["input_ids"]]


def test_tiny_causal_takes_grouped_query_attention():
    """SmolLM2's shape, narrowed: 9 query heads sharing 3 key/value heads; the loss has a gradient."""
    model, tokenizer = load_tiny_causal(hidden_size=72, intermediate_size=96, num_layers=1, num_heads=9,
                                        num_key_value_heads=3)
    attention = model.model.layers[0].self_attn
    assert model.config.num_key_value_heads == 3
    assert (attention.q_proj.out_features, attention.k_proj.out_features, attention.v_proj.out_features) == (72, 24, 24)
    ids = tokenizer(["[label] 2 + 3 = 5"], return_tensors="pt")["input_ids"]
    model(input_ids=ids, labels=ids).loss.backward()
    assert attention.k_proj.weight.grad.abs().sum() > 0
    assert load_tiny_causal(num_layers=1)[0].config.num_key_value_heads == 4  # default: one per query head
    with pytest.raises(ValueError, match="must divide model.num_heads"):
        load_tiny_causal(num_heads=9, num_key_value_heads=2)


def test_prompt_completion_layout():
    """Each row is prompt + completion + eos, right-padded; labels hold the completion (with its eos)
    and -100 on every prompt and padding column; a target's position is the column before it."""
    _, tokenizer = load_tiny_causal(hidden_size=16, intermediate_size=32, num_layers=1)
    encoder = Encoder(tokenizer, "[label] ", "[rationale] ", 32, 8, 16, rationale_task=True, student_kind="causal")
    rows = encoder({"input": ["Ann has 3 apples and gets 2 more. How many?", "Bo has 7 pens."],
                    "target": ["(3 + 2)", "(7)"], "rationale": ["Ann has 3 + 2 apples.", None]})
    for prompt, completion in zip(rows["label_input_ids"], rows["label_ids"]):
        assert prompt[0] == tokenizer.cls_token_id and tokenizer.eos_token_id not in prompt
        assert completion[-1] == tokenizer.eos_token_id
    assert rows["rationale_ids"][1] == []  # no rationale: no target
    assert rows["label_input_ids"][0] == encode_inputs(tokenizer, ["[label] " + "Ann has 3 apples and gets 2 more. How many?"], 32, "causal")[0]
    batch = Collator(tokenizer.pad_token_id, train=True, rationale_task=True, student_kind="causal")(
        [{"uid": str(i), **{k: v[i] for k, v in rows.items()}} for i in range(2)]
    )
    for task in ("label", "rationale"):
        t = batch[task]
        assert t["labels"].shape == t["input_ids"].shape
        for row in range(2):
            prompt, completion = rows[f"{task}_input_ids"][row], rows[f"{task}_ids"][row]
            n = len(prompt) + len(completion)
            assert t["input_ids"][row, :n].tolist() == prompt + completion
            assert t["attention_mask"][row].tolist() == [1] * n + [0] * (t["input_ids"].shape[1] - n)
            assert (t["labels"][row, : len(prompt)] == IGNORE_INDEX).all()
            assert (t["labels"][row, n:] == IGNORE_INDEX).all()
            assert t["labels"][row, len(prompt) : n].tolist() == completion
        rows_, cols = t["target_positions"].unbind(1)
        assert torch.equal(t["labels"][rows_, cols + 1], t["target_ids"])
    # evaluation: the prompts alone, left-padded, ready to be continued
    eval_batch = Collator(tokenizer.pad_token_id, train=False, student_kind="causal")(
        [{"uid": str(i), "input": "", "gold": "", **{k: v[i] for k, v in rows.items()}} for i in range(2)]
    )["label"]
    for row, prompt in enumerate(rows["label_input_ids"]):
        assert eval_batch["input_ids"][row, -len(prompt):].tolist() == prompt
        assert eval_batch["attention_mask"][row].tolist()[-len(prompt):] == [1] * len(prompt)
        assert eval_batch["attention_mask"][row, : eval_batch["input_ids"].shape[1] - len(prompt)].sum() == 0


@pytest.mark.parametrize("rationale_weight", [1.0, 0.5])
def test_causal_loss_is_label_plus_lambda_rationale_over_completion_tokens(module_and_batch, rationale_weight):
    module, batch = module_and_batch
    module.rationale_weight, module.alpha = rationale_weight, None
    with torch.no_grad():
        losses = module.compute_losses(batch)
        label = completion_loss(module.model, batch["label"])
        rationale = completion_loss(module.model, batch["rationale"])
    assert torch.allclose(losses["loss_label"], label, atol=1e-5)
    assert torch.allclose(losses["loss_rationale"], rationale, atol=1e-5)
    assert torch.allclose(losses["loss"], label + rationale_weight * rationale, atol=1e-5)


def test_causal_official_alpha_form(module_and_batch):
    module, batch = module_and_batch
    module.rationale_weight, module.alpha = 1.0, 0.3
    try:
        with torch.no_grad():
            loss = module.compute_losses(batch)["loss"]
            expected = 0.3 * completion_loss(module.model, batch["label"]) + 0.7 * completion_loss(module.model, batch["rationale"])
    finally:
        module.alpha = None
    assert torch.allclose(loss, expected, atol=1e-5)


def _keep_masks(batch, dataset) -> dict[tuple[int, int], torch.Tensor]:
    """Per forward shape (label, rationale): the outputs that predict a completion
    token, from the encoded prompt and completion lengths alone (not from the batch's labels)."""
    rows = {row["uid"]: row for row in dataset}
    keeps = []
    for task in ("label", "rationale"):
        keep = torch.zeros_like(batch[task]["input_ids"], dtype=torch.bool)
        for r, uid in enumerate(batch["uid"]):
            prompt, completion = len(rows[uid][f"{task}_input_ids"]), len(rows[uid][f"{task}_ids"])
            keep[r, prompt - 1 : prompt + completion - 1] = True  # the output at c predicts the token at c + 1
        keeps.append(keep)
    masks = {}
    for keep in keeps:
        assert tuple(keep.shape) not in masks, "two forwards of one shape: the test cannot tell them apart"
        masks[tuple(keep.shape)] = keep
    return masks


def test_prompt_and_padding_positions_do_not_enter_the_loss(module_batch_dm):
    """Scramble the final hidden state at every position that predicts a prompt token or padding
    (the prompt's own next-token targets): the losses do not move. Scramble one position that
    predicts a completion token: they do. So the loss sees completion tokens and nothing else."""
    module, batch, dm = module_batch_dm
    module.rationale_weight, module.alpha = 1.0, None
    masks = _keep_masks(batch, dm.dataset("train"))
    scramble = {"where": None}

    def hook(_module, _args, hidden):
        where = scramble["where"](masks[tuple(hidden.shape[:2])])
        return hidden + 100.0 * torch.randn_like(hidden) * where.unsqueeze(-1)

    with torch.no_grad():
        reference = module.compute_losses(batch)
        handle = module.model.model.norm.register_forward_hook(hook)
        try:
            scramble["where"] = lambda keep: ~keep
            outside = module.compute_losses(batch)
            first_target = lambda keep: keep & (keep.cumsum(1) == 1) & (torch.arange(len(keep)) == 0).unsqueeze(1)  # noqa: E731
            scramble["where"] = first_target
            inside = module.compute_losses(batch)
        finally:
            handle.remove()
    for name in ("loss", "loss_label", "loss_rationale"):
        assert torch.allclose(outside[name], reference[name], atol=1e-6), name
    assert not torch.allclose(inside["loss_label"], reference["loss_label"], atol=1e-3)
    # and the prompts really are long: most predicting positions are excluded
    label = batch["label"]
    assert (label["labels"] == IGNORE_INDEX).sum() > 2 * (label["labels"] != IGNORE_INDEX).sum()


@pytest.mark.parametrize("lora", [None, LORA], ids=["full", "lora"])
def test_fast_path_check_accepts_a_causal_student(lora):
    """The first-step check of the fast path passes (no fallback to plain), LoRA adapter or not."""
    module, batch = module_and_train_batch({**TINY_CAUSAL, "lora": lora}, SPEEDS["target_only"])
    tasks = {"label": batch["label"], "rationale": batch["rationale"]}
    assert fast_losses_agree(module.model, tasks) is None


@pytest.mark.parametrize("method", ["standard", "single_task"])
def test_single_task_methods_take_the_label_loss_alone(method):
    module, batch = module_and_train_batch(TINY_CAUSAL, SPEEDS["target_only"], method=method)
    assert "rationale" not in batch
    with torch.no_grad():
        losses = module.compute_losses(batch)
        expected = completion_loss(module.model, batch["label"])
    assert "loss_rationale" not in losses
    assert torch.allclose(losses["loss"], expected, atol=1e-5)


def test_target_only_gradients_equal_the_plain_ones_for_a_causal_student():
    grads = {}
    for name in ("plain", "target_only"):
        module, batch = module_and_train_batch(TINY_CAUSAL, SPEEDS[name])
        module.compute_losses(batch)["loss"].backward()
        grads[name] = {n: p.grad.clone() for n, p in module.model.named_parameters() if p.grad is not None}
    assert grads["plain"].keys() == grads["target_only"].keys()
    for n, g in grads["plain"].items():
        assert torch.allclose(g, grads["target_only"][n], atol=1e-6, rtol=1e-4), n


def test_left_padded_batch_generation_equals_one_prompt_at_a_time():
    """Generation continues each left-padded prompt as if it were alone, and returns only the new text."""
    from distill.models.inference import generate_from_texts

    model, tokenizer = load_tiny_causal(seed=1)
    model.eval()
    texts = ["a short one?", "a much longer prompt with many more words in it than the first?", "mid length prompt?"]
    together = generate_from_texts(model, tokenizer, texts, "[label] ", 64, 6, batch_size=3)
    alone = [generate_from_texts(model, tokenizer, [t], "[label] ", 64, 6)[0] for t in texts]
    assert together == alone
    assert all(together) and not any(t.startswith("[ label ]") for t in together)


def test_lora_trains_only_the_adapter():
    student = load_student(**TINY_CAUSAL, lora=LORA)
    trainable = {n: p.numel() for n, p in student.model.named_parameters() if p.requires_grad}
    total = student.num_parameters
    assert trainable and all("lora_" in n for n in trainable)
    # 2 layers x (q_proj, v_proj) x (A: r x 64 + B: 64 x r)
    assert sum(trainable.values()) == student.num_trainable_parameters == 2 * 2 * (4 * 64 + 64 * 4) == 2048
    assert total == sum(p.numel() for p in load_tiny_causal()[0].parameters()) + 2048
    assert student.kind == CAUSAL


def test_lora_on_a_seq2seq_student():
    lora = {"r": 2, "alpha": 4, "target_modules": ["q", "v"]}
    module, batch = module_and_train_batch({"kind": "tiny", "lora": lora}, SPEEDS["target_only"])
    student = module.student
    assert student.kind == SEQ2SEQ
    assert student.num_trainable_parameters == sum(p.numel() for n, p in student.model.named_parameters() if "lora_" in n)
    assert 0 < student.num_trainable_parameters < student.num_parameters / 100
    tasks = {"label": batch["label"], "rationale": batch["rationale"]}
    assert fast_losses_agree(module.model, tasks) is None
    from distill.models.checkpoints import plain_model

    merged = plain_model(module.model)
    assert type(merged).__name__ == "T5ForConditionalGeneration" and hasattr(module.model, "peft_config")


def test_model_causal_loads_a_local_directory_and_model_hf_points_to_it(tmp_path):
    """model=causal takes any local AutoModelForCausalLM directory; model=hf (seq2seq) names the
    override to use instead of failing inside transformers."""
    model, tokenizer = load_tiny_causal(hidden_size=16, intermediate_size=32, num_layers=1)
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    student = load_student(kind="causal", name_or_path=str(tmp_path))
    assert student.kind == CAUSAL and student.tokenizer.padding_side == "left"
    assert student.tokenizer("a b")["input_ids"] == tokenizer("a b")["input_ids"]
    assert all(torch.equal(p, q) for p, q in zip(student.model.parameters(), model.parameters()))
    with pytest.raises(ValueError, match="model=causal"):
        load_student(kind="auto", name_or_path=str(tmp_path))
    # and the other way round: an encoder-decoder given to model=causal is refused from its config
    seq2seq, seq2seq_tokenizer = load_tiny(d_model=16, d_ff=32, num_layers=1)
    seq2seq.save_pretrained(tmp_path / "t5")
    seq2seq_tokenizer.save_pretrained(tmp_path / "t5")
    with pytest.raises(ValueError, match="is an encoder-decoder: use model=hf"):
        load_student(kind="causal", name_or_path=str(tmp_path / "t5"))


def test_a_hub_models_sampling_settings_do_not_reach_greedy_evaluation(tmp_path):
    """A chat model's generation_config (sampling, repetition penalty) is replaced by plain greedy
    settings with the tokenizer's eos and pad, so evaluation and the export decode greedily."""
    from transformers import GenerationConfig

    model, tokenizer = load_tiny_causal(hidden_size=16, intermediate_size=32, num_layers=1)
    model.generation_config = GenerationConfig(do_sample=True, temperature=0.7, repetition_penalty=1.3, eos_token_id=5)
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    loaded = load_student(kind="causal", name_or_path=str(tmp_path)).model.generation_config
    assert not loaded.do_sample and loaded.repetition_penalty in (None, 1.0)
    assert (loaded.eos_token_id, loaded.pad_token_id) == (tokenizer.eos_token_id, tokenizer.pad_token_id)
