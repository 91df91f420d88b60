"""Public unlearning benchmarks (TOFU, LUME): loaders, QA scoring, metrics."""
