"""Benchmarks: each module's main() prints ratios against reference tools run alongside."""
