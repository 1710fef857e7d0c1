"""Benchmarks of keras-captioning against the study's pipeline (see README.md)."""
