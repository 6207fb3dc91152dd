"""Automated interpretability (Paulo et al. 2024; METHODS sec 6) as stages: examples (sampler), prompts,
reply parsing, scoring and metrics. The LLM backends, the activation cache and the command come next."""
