"""The teacher: few-shot chain-of-thought prompting of an LLM for rationales and labels.

``annotate.py`` (Hydra) drives :func:`distill.teacher.annotator.run`; backends live in
:mod:`distill.teacher.openai` (any OpenAI-compatible server) and :mod:`distill.teacher.hf`
(a local transformers model); answers are cached durably by :mod:`distill.teacher.cache`.
Prompts live with each benchmark (``Benchmark.build_prompt`` and its ``exemplars``).
"""
