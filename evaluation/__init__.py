"""Offline evaluation on real and synthetic logs: importers to the landing contract, metrics,
baselines (and, on top of them, the harness and its report)."""
