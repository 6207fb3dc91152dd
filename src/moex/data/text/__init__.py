"""Natural-language data: GPT-2 BPE tokenisation and token shards."""
