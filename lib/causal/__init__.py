"""Causal-LM track: memorization metrics, unlearning methods and evaluation for decoder-only models."""
