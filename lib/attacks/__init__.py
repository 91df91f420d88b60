"""Attacks that try to recover forgotten data: membership inference, quantization, relearning, sampling."""
