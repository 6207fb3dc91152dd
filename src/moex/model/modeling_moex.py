"""moex models in transformers: ``MoexConfig`` and ``MoexForCausalLM``.

``moex export hf`` writes this file and ``mlp_ops.py`` (the MLP math, shared with moex's own layers) beside
an exported model's weights, so that ``AutoModelForCausalLM.from_pretrained(dir, trust_remote_code=True)``
loads it with torch and transformers (>= 5) alone, moex not installed.

Module names follow moex's GPT (GPT-2's): ``transformer.wte / wpe / h[i].{ln_1, attn.{c_attn, c_proj}, ln_2,
mlp} / ln_f`` and ``lm_head``. The MLP of each kind:
- gelu, relu, topk, solu: ``c_fc``, ``c_proj`` (+ ``ln`` for SoLU), GPT-2's layout;
- geglu: ``gate_proj``, ``up_proj``, ``down_proj`` (Llama's layout, GELU gate);
- moe (Switch, MoE-X): ``gate`` (the router: a linear one, or MoE-X's parameter-free sparsity-aware router
  reading the experts' encoders) and ``experts`` in transformers' non-gated experts layout: ``up_proj``
  (E, D, d), ``down_proj`` (E, d, D), ``act_fn``, called as ``experts(x, top_k_index, top_k_weights)``;
- monet-hd, monet-vd, peer: moex's own module layout (no transformers layout holds product-key experts).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from transformers import GenerationMixin, PretrainedConfig, PreTrainedModel
from transformers.modeling_outputs import CausalLMOutputWithPast

from .mlp_ops import (
    ACTIVATIONS, dense_hidden, monet_code, monet_decode, monet_gate, monet_threshold, peer_retrieve,
    sparsity_logits, sparsity_moments,
)

try:  # transformers >= 5: the experts kernels (grouped_mm, batched_mm) become selectable
    from transformers.integrations.moe import use_experts_implementation
except ImportError:  # pragma: no cover - older transformers: the eager loop below
    def use_experts_implementation(cls=None, **_):
        return cls if cls is not None else (lambda c: c)

_CACHE_FIELD = "cache" if "cache" in CausalLMOutputWithPast.__dataclass_fields__ else "past_key_values"


class MoexConfig(PretrainedConfig):
    """A moex model's shape. Widths are resolved: ``d_mlp`` is the dense MLP's (GEGLU's) hidden width,
    ``d_expert`` an MoE expert's (Monet: a half-expert's) width."""

    model_type = "moex"
    attribute_map = {"hidden_size": "d_model", "num_hidden_layers": "n_layer", "num_attention_heads": "n_head",
                     "max_position_embeddings": "ctx", "intermediate_size": "d_mlp",
                     "num_experts": "n_experts", "num_experts_per_tok": "moe_top_k"}

    def __init__(self, vocab_size: int = 32, n_layer: int = 4, n_head: int = 4, d_model: int = 128, ctx: int = 255,
                 bias: bool = False, mlp: str = "gelu", d_mlp: int = 1024, topk_k: int = 64,
                 gelu_approx: str = "none", n_experts: int = 8, d_expert: int = 512, moe_top_k: int = 2,
                 expert_act: str = "relu", router: str = "sparsity", router_std: str = "sqrt",
                 router_eps: float = 1e-6, moe_heads: int = 8, d_key: int = 128, initializer_range: float = 0.02,
                 tie_word_embeddings: bool = True, **kwargs):
        self.vocab_size, self.n_layer, self.n_head, self.d_model, self.ctx = vocab_size, n_layer, n_head, d_model, ctx
        self.bias, self.mlp, self.d_mlp, self.topk_k, self.gelu_approx = bias, mlp, d_mlp, topk_k, gelu_approx
        self.n_experts, self.d_expert, self.moe_top_k, self.expert_act = n_experts, d_expert, moe_top_k, expert_act
        self.router, self.router_std, self.router_eps = router, router_std, router_eps
        self.moe_heads, self.d_key, self.initializer_range = moe_heads, d_key, initializer_range
        super().__init__(tie_word_embeddings=tie_word_embeddings, **kwargs)


class MoexAttention(nn.Module):
    def __init__(self, config: MoexConfig, layer_idx: int):
        super().__init__()
        self.n_head, self.layer_idx = config.n_head, layer_idx
        self.c_attn = nn.Linear(config.d_model, 3 * config.d_model, bias=config.bias)
        self.c_proj = nn.Linear(config.d_model, config.d_model, bias=config.bias)

    def forward(self, x: Tensor, mask: Tensor | None, cache=None) -> Tensor:
        b, t, c = x.shape
        q, k, v = self.c_attn(x).split(c, dim=2)
        q, k, v = (u.view(b, t, self.n_head, c // self.n_head).transpose(1, 2) for u in (q, k, v))
        if cache is not None:
            k, v = cache.update(k, v, self.layer_idx)
        if mask is None:  # no cached keys, no padding: plain causal attention
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.c_proj(y.transpose(1, 2).reshape(b, t, c))


class MoexDenseMLP(nn.Module):
    """gelu, relu, topk or solu: c_proj(act(c_fc x)), SoLU with a LayerNorm on its hidden units."""

    def __init__(self, config: MoexConfig):
        super().__init__()
        self.kind, self.topk_k, self.gelu_approx = config.mlp, config.topk_k, config.gelu_approx
        self.c_fc = nn.Linear(config.d_model, config.d_mlp, bias=config.bias)
        self.c_proj = nn.Linear(config.d_mlp, config.d_model, bias=config.bias)
        self.ln = nn.LayerNorm(config.d_mlp, bias=config.bias) if config.mlp == "solu" else None

    def forward(self, x: Tensor) -> Tensor:
        h = dense_hidden(self.kind, self.c_fc(x), self.topk_k, self.gelu_approx)
        return self.c_proj(self.ln(h) if self.ln is not None else h)


class MoexGegluMLP(nn.Module):
    """down_proj(GELU(gate_proj x) * up_proj x)."""

    def __init__(self, config: MoexConfig):
        super().__init__()
        self.gate_proj = nn.Linear(config.d_model, config.d_mlp, bias=config.bias)
        self.up_proj = nn.Linear(config.d_model, config.d_mlp, bias=config.bias)
        self.down_proj = nn.Linear(config.d_mlp, config.d_model, bias=config.bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.down_proj(F.gelu(self.gate_proj(x)) * self.up_proj(x))


class MoexTopKRouter(nn.Module):
    """Gate logits l (N, E) -> (l, top-k weights softmax(TopK(l)) (N, k), top-k experts (N, k)). Linear router:
    l = x W_g^T with ``weight`` (E, d). Sparsity-aware router: no parameters; l_j = -erf(mu_h / (sqrt2 s_h))
    from the column statistics of expert j's encoder ``up_proj[j]`` (D, d)."""

    def __init__(self, config: MoexConfig):
        super().__init__()
        self.top_k, self.kind = config.moe_top_k, config.router
        self.eps, self.literal = config.router_eps, config.router_std == "literal"
        self.weight = nn.Parameter(torch.empty(config.n_experts, config.d_model)) if self.kind == "linear" else None

    def forward(self, x: Tensor, up_proj: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        if self.weight is not None:
            logits = F.linear(x, self.weight).float()
        else:
            logits = sparsity_logits(*sparsity_moments(x, up_proj, 1, self.eps, self.literal))
        top, index = logits.topk(self.top_k, dim=-1)
        return logits, torch.softmax(top, dim=-1), index


@use_experts_implementation(has_gate=False)
class MoexExperts(nn.Module):
    """E experts f_j(x) = down_proj[j] act(up_proj[j] x); the output is sum over a token's k experts of its
    router weight x f_j(x)."""

    def __init__(self, config: MoexConfig):
        super().__init__()
        self.num_experts = config.n_experts
        self.up_proj = nn.Parameter(torch.empty(config.n_experts, config.d_expert, config.d_model))
        self.down_proj = nn.Parameter(torch.empty(config.n_experts, config.d_model, config.d_expert))
        self.act_fn = ACTIVATIONS[config.expert_act]

    def forward(self, hidden_states: Tensor, top_k_index: Tensor, top_k_weights: Tensor) -> Tensor:
        out = torch.zeros_like(hidden_states)
        for e in top_k_index.unique().tolist():
            token, slot = torch.where(top_k_index == e)
            y = F.linear(self.act_fn(F.linear(hidden_states[token], self.up_proj[e])), self.down_proj[e])
            out.index_add_(0, token, y * top_k_weights[token, slot, None].to(y.dtype))
        return out


class MoexSparseMoeBlock(nn.Module):
    def __init__(self, config: MoexConfig):
        super().__init__()
        self.gate = MoexTopKRouter(config)
        self.experts = MoexExperts(config)

    def forward(self, x: Tensor) -> Tensor:
        x2 = x.reshape(-1, x.shape[-1])
        _, weights, index = self.gate(x2, self.experts.up_proj)
        return self.experts(x2, index, weights).reshape(x.shape).to(x.dtype)


class MoexMonetRouter(nn.Module):
    def __init__(self, config: MoexConfig):
        super().__init__()
        heads, n = config.moe_heads, config.n_experts
        self.w1 = nn.Linear(config.d_model, heads * n, bias=False)
        self.w2 = nn.Linear(config.d_model, heads * n, bias=False)
        self.norm1 = nn.BatchNorm1d(heads, affine=False)
        self.norm2 = nn.BatchNorm1d(heads, affine=False)


class MoexMonetMLP(nn.Module):
    """Monet-HD / -VD (see moex's ``monet.py``): E x E experts composed from two sets of E half-experts."""

    def __init__(self, config: MoexConfig):
        super().__init__()
        self.vertical = config.mlp == "monet-vd"
        self.heads, self.n = config.moe_heads, config.n_experts
        self.act = ACTIVATIONS[config.expert_act]
        self.threshold = monet_threshold(config.moe_top_k, config.n_experts)
        self.router = MoexMonetRouter(config)
        d, width = config.d_model, config.n_experts * config.d_expert
        if self.vertical:
            self.u1 = nn.Linear(d, width // 2, bias=config.bias)
            self.u2 = nn.Linear(d, width // 2, bias=config.bias)
            self.v = nn.Parameter(torch.empty(4, width // 2, d // 2))
        else:
            self.u = nn.Linear(d, width, bias=config.bias)
            self.v = nn.Parameter(torch.empty(width, d))

    def forward(self, x: Tensor) -> Tensor:
        x2 = x.reshape(-1, x.shape[-1])
        r, dtype = self.router, self.router.norm1.running_mean.dtype
        g1, g2 = (monet_gate(w(x2).to(dtype).reshape(-1, self.heads, self.n), norm, self.threshold).to(x.dtype)
                  for w, norm in ((r.w1, r.norm1), (r.w2, r.norm2)))
        units = (self.u1, self.u2) if self.vertical else (self.u,)
        z = monet_code(g1, g2, tuple(self.act(u(x2)).unflatten(-1, (self.n, -1)) for u in units))
        return monet_decode(z, self.v, self.vertical).reshape(x.shape)


class MoexPeerMLP(nn.Module):
    """PEER (see moex's ``peer.py``): product-key retrieval of h x k single-neuron experts per token."""

    def __init__(self, config: MoexConfig):
        super().__init__()
        self.heads, self.top_k, self.d_key = config.moe_heads, config.moe_top_k, config.d_key
        self.act = ACTIVATIONS[config.expert_act]
        self.query = nn.Linear(config.d_model, self.heads * self.d_key, bias=False)
        self.query_norm = nn.BatchNorm1d(self.heads * self.d_key)
        self.keys = nn.Parameter(torch.empty(2, self.heads, math.isqrt(config.n_experts), self.d_key // 2))
        self.u = nn.Parameter(torch.empty(config.n_experts, config.d_model))
        self.v = nn.Parameter(torch.empty(config.n_experts, config.d_model))

    def forward(self, x: Tensor) -> Tensor:
        x2 = x.reshape(-1, x.shape[-1])
        dtype = self.query_norm.running_mean.dtype
        q = self.query_norm(self.query(x2).to(dtype)).reshape(-1, self.heads, self.d_key)
        experts, gates = peer_retrieve(q, self.keys.to(dtype), self.top_k)
        pre = torch.einsum("td,tsd->ts", x2, F.embedding(experts, self.u.to(x2.dtype)))
        y = F.embedding_bag(experts, self.v.to(x2.dtype), per_sample_weights=gates.to(x2.dtype) * self.act(pre),
                            mode="sum")
        return y.reshape(x.shape)


MLPS = {"gelu": MoexDenseMLP, "relu": MoexDenseMLP, "topk": MoexDenseMLP, "solu": MoexDenseMLP,
        "geglu": MoexGegluMLP, "moe": MoexSparseMoeBlock, "monet-hd": MoexMonetMLP, "monet-vd": MoexMonetMLP,
        "peer": MoexPeerMLP}


class MoexBlock(nn.Module):
    def __init__(self, config: MoexConfig, layer_idx: int):
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.d_model, bias=config.bias)
        self.attn = MoexAttention(config, layer_idx)
        self.ln_2 = nn.LayerNorm(config.d_model, bias=config.bias)
        self.mlp = MLPS[config.mlp](config)

    def forward(self, x: Tensor, mask: Tensor | None, cache=None) -> Tensor:
        x = x + self.attn(self.ln_1(x), mask, cache)
        return x + self.mlp(self.ln_2(x))


class MoexPreTrainedModel(PreTrainedModel):
    config_class = MoexConfig
    base_model_prefix = "transformer"
    _no_split_modules = ["MoexBlock"]

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        """GPT-2's initialisation; random weights only matter for ``from_config`` (loading reads them all)."""
        super()._init_weights(module)
        std = self.config.initializer_range
        if isinstance(module, (MoexExperts, MoexMonetMLP, MoexPeerMLP, MoexTopKRouter)):
            for name, p in module.named_parameters(recurse=False):
                std_p = 1.0 / math.sqrt(module.d_key) if name == "keys" else std
                nn.init.normal_(p, std=std_p)


class MoexModel(MoexPreTrainedModel):
    def __init__(self, config: MoexConfig):
        super().__init__(config)
        self.wte = nn.Embedding(config.vocab_size, config.d_model)
        self.wpe = nn.Embedding(config.ctx, config.d_model)
        self.h = nn.ModuleList(MoexBlock(config, i) for i in range(config.n_layer))
        self.ln_f = nn.LayerNorm(config.d_model, bias=config.bias)
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.wte

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.wte = value

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None, position_ids: Tensor | None = None,
                cache=None) -> Tensor:
        """Final hidden states (B, T, d) of ``input_ids`` continuing what ``cache`` holds. ``attention_mask``
        (B, past + T), 1 for real tokens: left padding is never attended to, and positions count from each
        row's first real token."""
        b, t = input_ids.shape
        past = cache.get_seq_length() if cache is not None else 0
        total = past + t
        if total > self.config.ctx:
            raise ValueError(f"sequence of length {total} exceeds the model's context {self.config.ctx}")
        if attention_mask is not None and attention_mask.dim() != 2:
            raise ValueError(f"attention_mask must be (batch, length), got shape {tuple(attention_mask.shape)}")
        padded = attention_mask is not None and not bool(attention_mask.all())
        if position_ids is None:
            if padded:
                position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)[:, past:total]
            else:
                position_ids = torch.arange(past, total, device=input_ids.device)[None]
        mask = None
        if padded or past:
            q = torch.arange(past, total, device=input_ids.device)[:, None]
            k = torch.arange(total, device=input_ids.device)[None, :]
            seen = (k <= q)[None]
            if padded:  # a padding query sees only itself, so no row of the softmax is empty
                seen = (seen & attention_mask[:, None, :total].bool()) | (k == q)[None]
            mask = seen[:, None]
        x = self.wte(input_ids) + self.wpe(position_ids)
        for block in self.h:
            x = block(x, mask, cache)
        return self.ln_f(x)


class MoexForCausalLM(MoexPreTrainedModel, GenerationMixin):
    _tied_weights_keys = {"lm_head.weight": "transformer.wte.weight"}

    def __init__(self, config: MoexConfig):
        super().__init__(config)
        self.transformer = MoexModel(config)
        self.lm_head = nn.Linear(config.d_model, config.vocab_size, bias=False)
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.transformer.wte

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.transformer.wte = value

    def get_output_embeddings(self) -> nn.Linear:
        return self.lm_head

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None, position_ids: Tensor | None = None,
                cache=None, past_key_values=None, use_cache: bool | None = None, labels: Tensor | None = None,
                logits_to_keep: int = 0, **kwargs) -> CausalLMOutputWithPast:
        """Logits (B, T, V); with ``labels``, the mean next-token cross-entropy (labels shifted inside, -100
        ignored). ``cache`` (``past_key_values`` in transformers < 5.24) holds earlier positions' keys."""
        from transformers import DynamicCache

        cache = cache if cache is not None else past_key_values
        if use_cache and cache is None:
            cache = DynamicCache(config=self.config)
        hidden = self.transformer(input_ids, attention_mask, position_ids, cache)
        logits = self.lm_head(hidden[:, -logits_to_keep:] if logits_to_keep else hidden)
        loss = None
        if labels is not None:
            loss = F.cross_entropy(logits[:, :-1].float().reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1),
                                   ignore_index=-100)
        return CausalLMOutputWithPast(loss=loss, logits=logits, **{_CACHE_FIELD: cache if use_cache else None})
