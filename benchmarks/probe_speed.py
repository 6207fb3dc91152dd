"""``moex probe`` speed: k-sparse probing of every expert on part-of-speech concepts, before and after the
concepts share their captures, against collecting the activations alone (issue: the probes on all experts
of a layer should cost a small multiple of collecting the activations).

    python benchmarks/probe_speed.py --conllu ../shared/data/text/ud-english-ewt/en_ewt-ud-dev.conllu \
        --out benchmarks/results/probe_speed_cpu.json

Model: a random-weight OLMoE of 2 layers, d 64, 8 experts of 32 units, top-2 (a real transformers class),
read through moex's Hugging Face reader; texts tokenised with GPT-2 BPE (vocabulary 50,257). Timed in one
process: ``collect`` (one capture per text and layer, what any probing must do), ``per concept`` (the old
path: ``probe_concept`` per concept, each capturing its texts again) and ``shared`` (``probe_concepts``:
one capture per text and layer for all concepts). Both probe paths must give the same F1s.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from moex.analysis.probing import probe_concept, probe_concepts
from moex.data.text.concepts import concept_sets, read_conllu
from moex.data.text.tokenizer import gpt2_offsets
from moex.interp.hf_readers import HFModel


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--conllu", required=True)
    ap.add_argument("--concepts", nargs="+", help="default: every part-of-speech tag with enough tokens")
    ap.add_argument("--max-tokens", type=int, default=5000)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    import transformers

    torch.manual_seed(0)
    cfg = transformers.AutoConfig.for_model("olmoe", vocab_size=50304, hidden_size=64, intermediate_size=32,
                                            num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                            num_experts=8, num_experts_per_tok=2)
    hf = HFModel(transformers.AutoModelForCausalLM.from_config(cfg).float())
    sets = concept_sets(read_conllu(args.conllu), gpt2_offsets, args.concepts, max_tokens=args.max_tokens, seed=42)
    layers = [0, 1]
    texts = {tuple(ids) for cs in sets.values() for ids in cs.tokens}
    report = {"benchmark": "probe_speed", "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S"),
              "machine": platform.processor() or platform.machine(), "threads": args.threads,
              "torch": torch.__version__, "concepts": len(sets), "unique_texts": len(texts),
              "texts_over_concepts": sum(len(cs.tokens) for cs in sets.values())}
    t0 = time.perf_counter()
    with torch.no_grad():
        for layer in layers:
            for ids in texts:
                cap = hf.capture(torch.tensor([ids]), layer)
                [cap.expert_units(e) for e in range(cap.n_experts)]
    report["collect_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    before = {name: probe_concept(hf, cs, layers) for name, cs in sets.items()}
    report["per_concept_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    after = probe_concepts(hf, sets, layers)
    report["shared_s"] = time.perf_counter() - t0
    same = all(a.experts[e]["f1"] == b.experts[e]["f1"] for name in sets
               for a, b in zip(before[name], after[name]) for e in a.experts) and \
        all(sorted(a.experts) == sorted(b.experts) for name in sets for a, b in zip(before[name], after[name]))
    report.update({"same_f1": same, "per_concept_over_shared": report["per_concept_s"] / report["shared_s"],
                   "shared_over_collect": report["shared_s"] / report["collect_s"]})
    print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in report.items()}, indent=1))
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
