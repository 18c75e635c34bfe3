"""Benchmarks: `make bench` runs bench/speed.py (speed and memory as ratios against baselines timed in the same run)."""
