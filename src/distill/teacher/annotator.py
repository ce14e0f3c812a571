"""Step 1 of Distilling Step-by-Step: :func:`annotate` asks a backend for a slice of a split with the benchmark's
few-shot chain of thought, caching each answer as it arrives, and writes the release layout, a sidecar and a
report; a failed item is an empty placeholder the report names (docs/teachers.md). :func:`run`: ``annotate.py``."""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.utils import instantiate
from omegaconf import DictConfig

from distill.benchmarks.base import Benchmark, Example, Exemplar
from distill.data.files import load_file
from distill.teacher.backend import Backend, Request, TeacherConfigError, reason_class
from distill.teacher.cache import Answer, AnswerCache, request_key
from distill.teacher.output import write_atomic, write_teacher_dir
from distill.teacher.progress import Progress
from distill.teacher.report import Report, format_rows
from distill.teacher.vote import majority_vote

log = logging.getLogger(__name__)


class IncompleteShardsError(RuntimeError):
    """merge=true found rows that no shard job has answered."""


@dataclass(frozen=True)
class Settings:
    """Everything of a run that is not the backend or the benchmark."""

    name: str  # benchmark name: the directory under data_dir / out_dir
    split: str
    data_dir: Path
    out_dir: Path
    teacher_name: str
    cache_dir: Path
    shard: int = 0
    num_shards: int = 1
    num_samples: int = 1
    offset: int = 0
    limit: int | None = None
    shard_size: int = 1000
    filter_gold: bool = False
    retry_failed: bool = True
    merge: bool = False
    strict: bool = False
    progress: bool = True
    fsync: bool = True

    def __post_init__(self) -> None:
        if not 0 <= self.shard < self.num_shards:
            raise ValueError(f"teacher.shard must be in [0, teacher.num_shards={self.num_shards}), got {self.shard}")
        if self.num_samples < 1:
            raise ValueError(f"teacher.samples must be >= 1, got {self.num_samples}")
        if self.offset < 0 or (self.limit is not None and self.limit < 0):
            raise ValueError("offset and limit must be >= 0")
        if "/" in self.teacher_name or not self.teacher_name:
            raise ValueError(f"teacher.name names one directory; got {self.teacher_name!r}")


def shard_range(start: int, stop: int, shard: int, num_shards: int) -> tuple[int, int]:
    """The ``shard``-th of ``num_shards`` contiguous, near-equal slices of ``[start, stop)``."""
    n = stop - start
    return start + shard * n // num_shards, start + (shard + 1) * n // num_shards


@dataclass
class Item:
    row: int
    example: Example
    keys: list[str]  # one per sample


def build_requests(benchmark: Benchmark, backend: Backend, rows: Sequence[tuple[int, Example]],
                   num_samples: int) -> tuple[list[Item], dict[str, Request]]:
    """One request per row and sample; identical prompts share one request (and one key)."""
    stop = tuple(benchmark.stop_sequences if backend.stop is None else backend.stop)
    identity = {"backend": backend.kind, "model": backend.model, "chat": backend.chat,
                "sampling": backend.sampling(), "stop": list(stop)}
    items, requests = [], {}
    for row, example in rows:
        prompt = benchmark.build_prompt(example, chat=backend.chat)
        keys = []
        for s in range(num_samples):
            key = request_key({**identity, "prompt": prompt, "sample": s})
            requests.setdefault(key, Request(key, prompt, stop, s))
            keys.append(key)
        items.append(Item(row, example, keys))
    return items, requests


def _label_only(benchmark: Benchmark, example: Example, label: str) -> str:
    """An answer with the label and no rationale, as the parser reads it ("" if it cannot be written)."""
    try:
        text = benchmark.format_exemplar(Exemplar(benchmark.prompt_input(example), "", label)).strip()
    except ValueError:
        return ""
    return text if benchmark.parse_completion(text).label == label else ""


def assemble(benchmark: Benchmark, items: Sequence[Item], answers: Mapping[str, Answer], settings: Settings,
             report: Report) -> tuple[list[str], list[dict[str, Any]], list[list[str]]]:
    """Every item's completion and sidecar record, and every sample's completions, counting into ``report``."""
    k = settings.num_samples
    completions, sidecar, per_sample = [], [], [[] for _ in range(k)]
    failures: Counter[str] = Counter()
    sample_correct, agreement = [0] * k, []
    for item in items:
        ex, samples = item.example, [answers[key] for key in item.keys]
        parsed = [benchmark.parse_completion(a.text) if a.ok else None for a in samples]
        votes = [p.label if p is not None and p.ok and benchmark.label_fits(p.label, ex) else None for p in parsed]
        vote = majority_vote(votes, benchmark.score)
        for s, a in enumerate(samples):
            per_sample[s].append(a.text.lstrip() if a.ok else "")
            report.prompt_tokens += a.prompt_tokens or 0
            report.completion_tokens += a.completion_tokens or 0
        if k > 1:
            if ex.gold is not None:
                for s, p in enumerate(parsed):
                    sample_correct[s] += bool(p is not None and p.ok and benchmark.score(p.label, ex.gold))
            agreement.append(max((c for _, c in vote.counts), default=0) / k)  # the share voting with the majority
        # no valid label: keep the first sample with text, so its fault shows
        chosen = vote.chosen if vote.chosen is not None else next((i for i, a in enumerate(samples) if a.ok), 0)
        answer = samples[chosen]
        # leading whitespace is the prompt's doing (the answer cue ends before a space): dropped
        text = answer.text.lstrip() if answer.ok else ""
        p = benchmark.parse_completion(text)
        fits = p.ok and benchmark.label_fits(p.label, ex)
        correct = None if ex.gold is None else bool(p.ok and benchmark.score(p.label, ex.gold))
        rec: dict[str, Any] = {"row": item.row, "uid": ex.uid, "gold": ex.gold, "completion": text,
                               "rationale": p.rationale, "label": p.label, "parse_error": p.error,
                               "error": answer.error, "placeholder": not answer.ok, "label_fits": fits,
                               "correct": correct}
        if answer.ok:
            report.answered += 1
            report.parse_failures += not p.ok
        else:
            report.failed += 1
            report.placeholder_rows.append(item.row)
            failures[reason_class(answer.error or "")] += 1
        report.out_of_label_space += p.ok and not fits
        if correct is not None:
            report.with_gold += 1
            report.teacher_correct += correct
        if settings.filter_gold and correct is False and p.ok:
            rec["filtered"], rec["unfiltered"] = True, text
            text = _label_only(benchmark, ex, p.label) if fits else ""
            rec["completion"], rec["rationale"] = text, benchmark.parse_completion(text).rationale
            report.filtered += 1
        if k > 1:
            rec.update(sample=chosen, votes=[list(c) for c in vote.counts],
                       samples=[{"label": v, "error": a.error or (q.error if q else None)}
                                for v, a, q in zip(votes, samples, parsed)])
        rec.update(latency_s=answer.latency_s, attempts=answer.attempts, prompt_tokens=answer.prompt_tokens,
                   completion_tokens=answer.completion_tokens, finish_reason=answer.finish_reason)
        completions.append(text)
        sidecar.append(rec)
    report.failure_reasons = dict(failures.most_common())
    if k > 1:
        if report.with_gold:
            report.sample_accuracy = [c / report.with_gold for c in sample_correct]
        report.agreement = sum(agreement) / len(agreement) if agreement else None
        report.unanimous = sum(a == 1.0 for a in agreement)
    return completions, sidecar, per_sample


def annotate(settings: Settings, benchmark: Benchmark, backend: Backend) -> Report:
    """Run (or merge) one teacher job; returns its report (the caller decides the exit status)."""
    t0 = time.monotonic()
    # the data layer's reader: same rows, same uids ({name}/{split}/{index}) as training sees
    examples, _ = load_file(benchmark, settings.data_dir, settings.split, teacher=None, logical=settings.split)
    start = min(settings.offset, len(examples))
    stop = len(examples) if settings.limit is None else min(len(examples), start + settings.limit)
    if not settings.merge:
        start, stop = shard_range(start, stop, settings.shard, settings.num_shards)
    items, requests = build_requests(benchmark, backend, [(r, examples[r]) for r in range(start, stop)],
                                     settings.num_samples)
    report = Report(benchmark.name, settings.split, settings.teacher_name, backend.describe(), (start, stop),
                    items=len(items), samples_per_item=settings.num_samples, requests=len(requests))
    if settings.num_samples > 1 and backend.sampling().get("temperature", 1) == 0:
        log.warning("teacher.samples=%d with temperature 0: every sample gets the same answer", settings.num_samples)

    writer = f"{settings.split}.{settings.teacher_name}.{settings.shard}-of-{settings.num_shards}"
    cache = AnswerCache(settings.cache_dir / settings.name, writer, fsync=settings.fsync)
    if settings.merge:
        answers = cache.load(requests)
        _check_complete(items, answers, settings, start, stop)
        report.from_cache = len(requests)
    else:
        with cache:
            answers = cache.load(requests)
            pending = [r for k, r in requests.items()
                       if k not in answers or (settings.retry_failed and not answers[k].ok)]
            report.from_cache, report.asked = len(requests) - len(pending), len(pending)
            log.info("%s/%s rows [%d, %d): %d requests, %d from cache, asking %s for %d", settings.name,
                     settings.split, start, stop, len(requests), report.from_cache, backend.describe(), len(pending))
            g0 = time.monotonic()
            with Progress(cache, answers, total=len(pending), enabled=settings.progress,
                          desc=f"{settings.name}/{settings.split}") as progress:
                try:
                    backend.generate(pending, progress)
                except TeacherConfigError as err:
                    raise TeacherConfigError(
                        f"{err}\nStopped after {len(progress.done)} of {len(pending)} request(s); nothing was "
                        f"written. The answers that arrived stay in {cache.directory}: a rerun asks only for "
                        "the rest.") from err
            report.generate_s = round(time.monotonic() - g0, 3)
            report.retries = progress.retries
            report.retry_reasons = dict(progress.retry_reasons.most_common())
            report.attempts = getattr(backend, "requests_sent", report.asked)

    completions, sidecar, per_sample = assemble(benchmark, items, answers, settings, report)
    out = settings.out_dir / settings.name / settings.teacher_name
    if settings.merge or settings.num_shards == 1:
        paths = write_teacher_dir(out, settings.split, completions, per_sample if settings.num_samples > 1 else [],
                                  sidecar, settings.shard_size)
        report.files = [str(p) for p in paths]
        report_path = out / f"{settings.split}_report.json"
    else:  # one shard of many: the cache holds the answers; the merge writes the files
        report_path = out / "shards" / f"{settings.split}.{settings.shard}-of-{settings.num_shards}.report.json"
    report.files.append(str(report_path))
    report.wall_s = round(time.monotonic() - t0, 3)
    write_atomic(report_path, (json.dumps(report.to_dict(), ensure_ascii=False, indent=2) + "\n").encode("utf-8"))
    return report


def _check_complete(items: Sequence[Item], answers: Mapping[str, Answer], settings: Settings,
                    start: int, stop: int) -> None:
    """Raise IncompleteShardsError naming the shard jobs to rerun when a row has no answer (merge=true)."""
    missing_rows = [it.row for it in items if any(k not in answers for k in it.keys)]
    if not missing_rows:
        return
    shards = [(s, *shard_range(start, stop, s, settings.num_shards)) for s in range(settings.num_shards)]
    lines = [f"  teacher.shard={s} (rows [{a}, {b})): {n} of {b - a} rows unanswered"
             for s, a, b in shards if (n := sum(1 for r in missing_rows if a <= r < b))]
    hint = (" No row has an answer: were the shard jobs run with the same teacher settings "
            "(model, sampling, stop, samples) and cache_dir?" if len(missing_rows) == len(items) else "")
    raise IncompleteShardsError(
        f"merge: {len(missing_rows)} of {len(items)} rows of {settings.name}/{settings.split} have no answer "
        f"in {settings.cache_dir / settings.name}; rerun these shards:\n" + "\n".join(lines) + hint)


def settings_from_config(cfg: DictConfig, benchmark: Benchmark) -> Settings:
    t = cfg.teacher
    data_dir = Path(cfg.data.get("data_dir") or cfg.paths.data_dir)
    return Settings(
        name=benchmark.name, split=str(cfg.split), data_dir=data_dir,
        out_dir=Path(cfg.get("out_dir") or data_dir), teacher_name=str(t.name), cache_dir=Path(t.cache_dir),
        shard=int(t.shard), num_shards=int(t.num_shards), num_samples=int(t.samples),
        offset=int(cfg.offset), limit=None if cfg.limit is None else int(cfg.limit), shard_size=int(cfg.shard_size),
        filter_gold=bool(cfg.filter_gold), retry_failed=bool(cfg.retry_failed), merge=bool(cfg.merge),
        strict=bool(cfg.strict), progress=bool(cfg.progress), fsync=bool(t.get("fsync", True)),
    )


def build_backend(backend_cfg: DictConfig) -> Backend:
    """The backend ``teacher.backend`` names (its ``_target_`` and arguments)."""
    return instantiate(backend_cfg, _convert_="all")


def build_benchmark(data_cfg: DictConfig) -> Benchmark:
    if "benchmark" not in data_cfg:
        raise ValueError("the data config has no 'benchmark' node (a _target_ naming a Benchmark class)")
    return instantiate(data_cfg.benchmark, _convert_="all")


def run(cfg: DictConfig) -> Report:
    """``annotate.py``'s body: build, run, report; SystemExit (status 1) when the run stopped or an item failed."""
    benchmark = build_benchmark(cfg.data)
    backend = build_backend(cfg.teacher.backend)
    settings = settings_from_config(cfg, benchmark)
    try:
        report = annotate(settings, benchmark, backend)
    except TeacherConfigError as err:
        raise SystemExit(f"teacher run stopped: {err}") from None
    log.info("\n%s", report.format())
    if settings.strict and (report.failed or report.parse_failures or report.out_of_label_space):
        raise SystemExit(f"strict=true: {report.failed} failed, {report.parse_failures} unparsed, "
                         f"{report.out_of_label_space} out of label space")
    if report.failed:
        raise SystemExit(
            f"{report.failed} of {report.items} item(s) failed ({report.failure_reasons}): their completions are "
            f"empty placeholders that keep the files aligned, rows {format_rows(report.placeholder_rows)} (see "
            f"{report.files[-1]}). Rerun the same command to ask for them again (the answers are cached).")
    return report
