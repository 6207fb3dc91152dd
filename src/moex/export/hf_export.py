"""A moex run or checkpoint -> a Hugging Face model directory that transformers loads without moex.

``export_hf(checkpoint, out)`` writes ``config.json`` (``model_type: moex``, with ``auto_map`` to the shipped
code), ``model.safetensors`` (float32), ``generation_config.json``, the tokenizer (``tokenizer.json`` +
``tokenizer_config.json``: the chess character vocabulary, the run's own BPE, or GPT-2's BPE) and the
modeling code (``modeling_moex.py`` and the ``mlp_ops.py`` it imports), so that
``AutoModelForCausalLM.from_pretrained(out, trust_remote_code=True)`` and ``AutoTokenizer.from_pretrained(out,
trust_remote_code=True)`` (it reads ``config.json`` too) give the model and its tokenizer. The directory is written beside ``out`` and moved into place whole.

Weights keep moex's names under ``transformer.``, except where transformers has a layout for the kind:
MoE experts (``w_enc`` (E, d, D) -> ``experts.up_proj`` (E, D, d), ``w_dec`` (E, D, d) ->
``experts.down_proj`` (E, d, D), ``router.w_g`` -> ``gate``) and GEGLU (``w_gate``/``w_in``/``c_proj`` ->
``gate_proj``/``up_proj``/``down_proj``).
"""

from __future__ import annotations

import shutil
from pathlib import Path

from torch import Tensor

from ..artifacts import CFG_JSON, read_json
from ..data.chess.vocab import CHARS
from ..data.text.tokenizer import EOT, EOT_TEXT, GPT2_PATTERN, VOCAB_SIZE, load_tokenizer, ranks_path
from ..errors import MoexError
from ..model import GPT
from ..model.config import ModelConfig
from ..model.mlp import GegluMLP
from ..model.moe import MoE
from ..model.monet import MonetMLP

MODELING_FILES = ("modeling_moex.py", "mlp_ops.py")  # shipped from moex/model/, imported by transformers
EXPORT_KEY = "moex_export"  # config.json entry that marks a directory as written by export_hf


class ExportError(MoexError):
    """A directory that is not a moex run, a model kind the exported code does not know, or an output
    directory that holds something else."""


def hf_config(cfg: ModelConfig, source: str, eos_token_id: int | None = None):
    """The ``MoexConfig`` of a moex model config (widths resolved, ``auto_map`` to the shipped code)."""
    from ..model.modeling_moex import MoexConfig

    if cfg.mlp == "geglu":
        d_mlp, d_expert = GegluMLP.code_width(cfg), 0
    elif cfg.mlp == "moe":
        d_mlp, d_expert = cfg.d_mlp, MoE.expert_width(cfg)
    elif cfg.mlp.startswith("monet"):
        d_mlp, d_expert = cfg.d_mlp, MonetMLP.expert_width(cfg)
    else:
        d_mlp, d_expert = cfg.d_mlp, cfg.d_expert
    eos = {"eos_token_id": eos_token_id, "pad_token_id": eos_token_id} if eos_token_id is not None else {}
    return MoexConfig(
        vocab_size=cfg.vocab_size, n_layer=cfg.n_layer, n_head=cfg.n_head, d_model=cfg.d_model, ctx=cfg.ctx,
        bias=cfg.bias, mlp=cfg.mlp, d_mlp=d_mlp, topk_k=cfg.topk_k, gelu_approx=cfg.gelu_approx,
        n_experts=cfg.n_experts, d_expert=d_expert, moe_top_k=cfg.moe_top_k, expert_act=cfg.expert_act,
        router=cfg.router, router_std=cfg.router_std, router_eps=cfg.router_eps, moe_heads=cfg.moe_heads,
        d_key=cfg.d_key, tie_word_embeddings=cfg.tie_embeddings, architectures=["MoexForCausalLM"],
        auto_map={"AutoConfig": "modeling_moex.MoexConfig", "AutoModelForCausalLM": "modeling_moex.MoexForCausalLM"},
        **{EXPORT_KEY: {"source": source, "moex_config": cfg.to_dict()}}, **eos)


def hf_state_dict(model: GPT) -> dict[str, Tensor]:
    """moex GPT weights under the exported model's names (float32, contiguous)."""
    out = {}
    for name, value in model.state_for_saving().items():
        value = value.float() if value.is_floating_point() else value
        if name == "lm_head.weight":
            out[name] = value
            continue
        prefix, _, leaf = name.rpartition(".mlp.")
        if prefix and model.cfg.mlp == "moe":
            leaf = {"w_enc": "experts.up_proj", "w_dec": "experts.down_proj", "router.w_g.weight": "gate.weight"}[leaf]
            value = value.transpose(1, 2) if leaf.startswith("experts.") else value
        elif prefix and model.cfg.mlp == "geglu":
            layer, _, param = leaf.partition(".")
            leaf = {"w_gate": "gate_proj", "w_in": "up_proj", "c_proj": "down_proj"}[layer] + "." + param
        out["transformer." + (f"{prefix}.mlp.{leaf}" if prefix else name)] = value.contiguous()
    return out


def chess_tokenizer():
    """The 32-character chess vocabulary as a tokenizers ``Tokenizer``: one token per character, id = index."""
    from tokenizers import Tokenizer, decoders, models

    tok = Tokenizer(models.BPE(vocab={c: i for i, c in enumerate(CHARS)}, merges=[]))
    tok.decoder = decoders.Fuse()
    return tok


def run_tokenizer(checkpoint: Path, cfg: ModelConfig):
    """(tokenizers ``Tokenizer``, end-of-text token or None) of a run: its own BPE (``tokenizer.json``), GPT-2's
    BPE for the GPT-2 vocabulary, the chess characters for the 32-token vocabulary."""
    text = load_tokenizer(checkpoint)
    if text.bpe is not None:
        if text.vocab_size != cfg.vocab_size:
            raise ExportError(f"{checkpoint}: its tokenizer.json has {text.vocab_size} tokens, the model "
                              f"{cfg.vocab_size}")
        return text.bpe, EOT_TEXT
    if cfg.vocab_size == VOCAB_SIZE:
        from transformers.convert_slow_tokenizer import TikTokenConverter

        return TikTokenConverter(vocab_file=str(ranks_path()), pattern=GPT2_PATTERN,
                                 extra_special_tokens={EOT_TEXT: EOT}).converted(), EOT_TEXT
    if cfg.vocab_size == len(CHARS):
        return chess_tokenizer(), None
    raise ExportError(f"{checkpoint}: no tokenizer.json, and vocab_size={cfg.vocab_size} is neither the chess "
                      f"vocabulary ({len(CHARS)}) nor GPT-2's ({VOCAB_SIZE})")


def is_export(path: Path) -> bool:
    cfg = path / "config.json"
    try:
        return cfg.is_file() and EXPORT_KEY in read_json(cfg)
    except (MoexError, ValueError, OSError):
        return False


def export_hf(checkpoint: str | Path, out: str | Path) -> Path:
    """Write the model of ``checkpoint`` (a moex run or ``ckpt-*`` directory) as a transformers model directory
    ``out`` (see the module docstring); an earlier export there is replaced, anything else is refused."""
    try:
        from transformers import PreTrainedTokenizerFast

        from ..model.modeling_moex import MLPS, MoexForCausalLM
    except ImportError as e:
        raise ExportError(f"moex export hf needs transformers >= 5 ({e}): pip install 'moex[hf]'") from None

    checkpoint, out = Path(checkpoint), Path(out)
    if not (checkpoint / CFG_JSON).is_file():
        raise ExportError(f"{checkpoint}: not a moex run or checkpoint directory (no {CFG_JSON})")
    model = GPT.from_pretrained(checkpoint)
    if model.cfg.mlp not in MLPS:
        raise ExportError(f"{checkpoint}: mlp={model.cfg.mlp!r} ({type(model.h[0].mlp).__name__}) cannot be "
                          f"exported: the exported modeling code has the kinds {', '.join(MLPS)}")
    if out.exists() and not (out.is_dir() and (is_export(out) or not any(out.iterdir()))):
        raise ExportError(f"{out} exists and is not a moex export: choose a new directory")
    tokenizer, eos = run_tokenizer(checkpoint, model.cfg)
    eos_id = tokenizer.token_to_id(eos) if eos else None
    hf = MoexForCausalLM(hf_config(model.cfg, str(checkpoint), eos_id))
    missing, unexpected = hf.load_state_dict(hf_state_dict(model), strict=False)
    missing = [k for k in missing if not (model.cfg.tie_embeddings and k == "lm_head.weight")]
    if missing or unexpected:  # the modeling code and the conversion disagree: a bug, not bad input
        raise AssertionError(f"export of mlp={model.cfg.mlp}: missing {missing}, unexpected {unexpected}")
    if model.cfg.tie_embeddings:
        hf.tie_weights()
    tmp = out.parent / f".{out.name}.tmp-export"
    shutil.rmtree(tmp, ignore_errors=True)
    hf.save_pretrained(tmp)
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, model_max_length=model.cfg.ctx,
                                   **({"eos_token": eos} if eos else {}))
    fast.save_pretrained(tmp)
    for name in MODELING_FILES:
        shutil.copyfile(Path(__file__).parent.parent / "model" / name, tmp / name)
    old = out.parent / f".{out.name}.old-export"
    if out.exists():  # the earlier export steps aside until the new one is in place
        shutil.rmtree(old, ignore_errors=True)
        out.rename(old)
    tmp.rename(out)
    shutil.rmtree(old, ignore_errors=True)
    return out
