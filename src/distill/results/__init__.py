"""The results package behind ``python -m distill.aggregate``: ``identity`` (the fields that name a
result, shared with ``results.json``), ``runs`` (reading run directories, sweeps and W&B projects),
``tables`` (configurations, paired differences, Markdown and CSV on pandas), ``plots`` (matplotlib
figures) and ``labels`` (display names)."""
