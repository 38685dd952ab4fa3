"""Benchmarks of Conduit RT that print ratios against baselines (see ``bench/README.md``)."""
