"""Pieces of `make tables` (bench/make_tables.py) kept apart so each stays small:

- stats.py: Student-t distribution and the paired t-test (standard library only, no scipy);
- readings.py: the claim of every ablation table (CLAIMS, the one place they are defined) and the
  reading line decided from a paired test across seeds;
- samples.py: the README sample picture (conditioning frame, truth, causal and full rollouts).
"""
