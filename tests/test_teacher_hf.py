"""teacher=hf with tiny randomly initialised models: gibberish answers, but the path runs end to
end and every failure is counted."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from teacher_server import read_sidecar, settings, write_svamp_like  # noqa: E402

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from distill.benchmarks import get_benchmark  # noqa: E402
from distill.models.loaders import minilm_tokenizer  # noqa: E402
from distill.teacher.annotator import annotate  # noqa: E402
from distill.teacher.backend import Request, TeacherConfigError  # noqa: E402
from distill.teacher.hf import HFBackend  # noqa: E402


@pytest.fixture(scope="module")
def tiny_causal(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny_gpt2")
    tok = minilm_tokenizer()
    torch.manual_seed(0)
    config = transformers.GPT2Config(vocab_size=len(tok), n_positions=1024, n_embd=16, n_layer=1, n_head=2,
                                     bos_token_id=tok.cls_token_id, eos_token_id=tok.sep_token_id)
    transformers.GPT2LMHeadModel(config).save_pretrained(path)
    tok.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def tiny_seq2seq(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny_t5")
    tok = minilm_tokenizer()
    torch.manual_seed(0)
    config = transformers.T5Config(vocab_size=len(tok), d_model=16, d_ff=32, d_kv=8, num_layers=1, num_heads=2,
                                   decoder_start_token_id=tok.pad_token_id, pad_token_id=tok.pad_token_id,
                                   eos_token_id=tok.sep_token_id)
    transformers.T5ForConditionalGeneration(config).save_pretrained(path)
    tok.save_pretrained(path)
    return path


def test_tiny_causal_lm_runs_and_counts_failures(tmp_path, tiny_causal):
    bench = get_benchmark("svamp")
    write_svamp_like(tmp_path / "data", n=5)
    backend = HFBackend(str(tiny_causal), device="cpu", batch_size=2, max_tokens=6)
    report = annotate(settings(tmp_path), bench, backend)
    side = read_sidecar(tmp_path / "out/svamp/fake/test_annotations.jsonl")
    assert report.items == len(side) == 5 and report.asked == 5
    assert report.answered + report.failed == 5
    # gibberish never reads "... The answer is (...)": every item is a counted failure of some kind
    assert report.failed + report.parse_failures == 5
    assert report.teacher_correct == 0 and report.with_gold == 5
    for rec in side:
        assert (rec["error"] is None) == bool(rec["completion"])
        assert rec["parse_error"] is not None
        assert rec["prompt_tokens"] > 100 and rec["completion_tokens"] <= 6
    # the cache makes a rerun free: nothing is generated again
    again = annotate(settings(tmp_path), bench, backend)
    assert again.asked == 0 and again.from_cache == 5


def test_k_samples_are_drawn_with_num_return_sequences(tmp_path, tiny_causal, monkeypatch):
    bench = get_benchmark("svamp")
    write_svamp_like(tmp_path / "data", n=3)
    calls = []
    generate = transformers.GPT2LMHeadModel.generate

    def spy(self, *args, **kwargs):
        calls.append((kwargs["input_ids"].shape[0], kwargs.get("num_return_sequences", 1)))
        return generate(self, *args, **kwargs)

    monkeypatch.setattr(transformers.GPT2LMHeadModel, "generate", spy)
    sampled = HFBackend(str(tiny_causal), device="cpu", batch_size=8, max_tokens=4, temperature=1.0)
    report = annotate(settings(tmp_path, num_samples=4), bench, sampled)
    # 8 sequences a batch: two prompts x 4 samples, then the third prompt
    assert calls == [(2, 4), (1, 4)] and report.asked == 12 and sampled.requests_sent == 12
    side = read_sidecar(tmp_path / "out/svamp/fake/test_annotations.jsonl")
    assert all(len(rec["samples"]) == 4 for rec in side)
    calls.clear()
    greedy = HFBackend(str(tiny_causal), device="cpu", batch_size=8, max_tokens=4)  # one decode gives all samples
    annotate(settings(tmp_path / "greedy", data_dir=tmp_path / "data", num_samples=4), bench, greedy)
    assert calls == [(3, 1)]


def test_left_padding_gives_each_prompt_its_own_continuation(tiny_causal):
    """Batched greedy generation equals generating each prompt alone (left padding is right)."""
    bench = get_benchmark("svamp")
    texts = ["Q: short?\nA:", "Q: a much longer question with many more words in it than the other one?\nA:"]

    class Keep:
        def __init__(self):
            self.got = {}

        def answered(self, r, a):
            self.got[r.key] = a

        def retried(self, r, reason):
            raise AssertionError(reason)

    batched, alone = Keep(), Keep()
    HFBackend(str(tiny_causal), device="cpu", batch_size=2, max_tokens=5, stop=[]).generate(
        [Request(str(i), t) for i, t in enumerate(texts)], batched)
    for i, t in enumerate(texts):
        HFBackend(str(tiny_causal), device="cpu", batch_size=1, max_tokens=5, stop=[]).generate(
            [Request(str(i), t)], alone)
    assert {k: (a.text, a.error) for k, a in batched.got.items()} == {k: (a.text, a.error) for k, a in alone.got.items()}
    assert bench  # the benchmark is irrelevant here; prompts are given directly


def test_tiny_seq2seq_runs(tmp_path, tiny_seq2seq):
    bench = get_benchmark("svamp")
    write_svamp_like(tmp_path / "data", n=3)
    backend = HFBackend(str(tiny_seq2seq), device="cpu", batch_size=3, max_tokens=4)
    report = annotate(settings(tmp_path), bench, backend)
    assert backend.is_seq2seq
    assert report.items == 3 and report.failed + report.parse_failures == 3


def test_chat_without_a_template_is_a_config_error(tiny_causal):
    backend = HFBackend(str(tiny_causal), device="cpu", chat=True)
    with pytest.raises(TeacherConfigError, match="no chat template"):
        backend.generate([Request("k", [{"role": "user", "content": "hi"}])], None)
