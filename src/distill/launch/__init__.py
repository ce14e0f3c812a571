"""Launching: cluster environments, submitit-local ranks, sweep resume."""
