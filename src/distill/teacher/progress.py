"""The :class:`~distill.teacher.backend.Events` the annotator hands a backend: each finished request goes into
the cache before anything else, then into the answers and the progress bar (failures and retries as postfix)."""

from __future__ import annotations

from collections import Counter
from collections.abc import MutableMapping

from tqdm.auto import tqdm

from distill.teacher.backend import Request, reason_class
from distill.teacher.cache import Answer, AnswerCache


class Progress:
    def __init__(self, cache: AnswerCache, answers: MutableMapping[str, Answer], total: int,
                 enabled: bool = True, desc: str = "teacher"):
        self.cache, self.answers = cache, answers
        self.done: set[str] = set()  # keys answered (or failed for good) in this run
        self.failed = self.retries = 0
        self.retry_reasons: Counter[str] = Counter()
        self.bar = tqdm(total=total, desc=desc, unit="req", disable=not enabled, dynamic_ncols=True,
                        mininterval=0.5, smoothing=0.1)

    def answered(self, request: Request, answer: Answer) -> None:
        self.cache.put(request.key, answer, sample=request.sample)
        self.answers[request.key] = answer
        self.done.add(request.key)
        if not answer.ok:
            self.failed += 1
            self.bar.set_postfix(failed=self.failed, retries=self.retries, refresh=False)
        self.bar.update(1)

    def retried(self, request: Request, reason: str) -> None:
        self.retries += 1
        self.retry_reasons[reason_class(reason)] += 1
        self.bar.set_postfix(failed=self.failed, retries=self.retries, refresh=False)

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        self.bar.close()
