"""Write float16 copies of trained runs' weights into results/ (half the size; they load back as float32).

    python results/half_copies.py SRC_RUN DST_DIR [SRC_RUN DST_DIR ...]

DST_DIR gets model.safetensors and cfg.json; the run's other files (metrics, tokenizer.json) are copied by
the run scripts. Used for the small checkpoints committed beside the cpu-scale results.
"""

import sys

import torch

from moex import GPT

args = sys.argv[1:]
if not args or len(args) % 2:
    sys.exit(__doc__)
for src, dst in zip(args[::2], args[1::2]):
    GPT.from_pretrained(src).save_pretrained(dst, dtype=torch.float16)
    print(f"{src} -> {dst} (float16)")
