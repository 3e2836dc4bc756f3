"""Benchmarks: `make bench` (or `python -m bench [name ...]`). Figures, never assertions."""
