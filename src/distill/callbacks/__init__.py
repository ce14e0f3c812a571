"""Lightning callbacks of a run, one per file."""
