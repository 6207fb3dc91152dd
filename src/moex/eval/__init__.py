"""Language-model evaluation: perplexity (sliding window) and LAMBADA."""
