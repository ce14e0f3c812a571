"""The teacher (``annotate.py``): a job in :mod:`.annotator`, backends in :mod:`.openai` and :mod:`.hf`, answers
cached by :mod:`.cache`."""
