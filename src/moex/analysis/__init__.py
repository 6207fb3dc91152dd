"""Expert-level analysis ("The Expert Strikes Back"): k-sparse probing of dense vs expert neurons."""
