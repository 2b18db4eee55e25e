"""A CPU PyTorch twin of the MDLM / SDTT reference DIT (kuleshov-group/mdlm:models/dit.py = jdeschena/sdtt:
src/sdtt/models/dit_orig.py) with Di4C's lambda token (sony/di4c:sdtt/src/sdtt/models/dit_orig.py), module and
parameter names as released; the two flash-attn calls are replaced by their CPU equivalents (rotate-half rotary,
scaled_dot_product_attention). Used by tests/test_interop_mdlm.py (which skips without torch)."""
import math

import numpy as np
import torch

nn, F = torch.nn, torch.nn.functional

V, L, D, BLOCKS, HEADS, C = 50, 16, 64, 2, 4, 32


# ------------------------------------------------------------------ the reference DIT (CPU, fp32), names as released

def rotate_half(x):
    x1, x2 = x[..., : x.shape[-1] // 2], x[..., x.shape[-1] // 2:]
    return torch.cat((-x2, x1), dim=-1)


def apply_rotary_emb_qkv_(qkv, cos, sin):
    """flash-attn's non-interleaved rotary on q and k of qkv [B, S, 3, H, d], cos/sin [S, d/2]."""
    cos, sin = torch.cat([cos, cos], -1)[None, :, None, :], torch.cat([sin, sin], -1)[None, :, None, :]
    q, k = qkv[:, :, 0], qkv[:, :, 1]
    return torch.stack([q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin, qkv[:, :, 2]], dim=2)


class Rotary(nn.Module):
    def __init__(self, dim, base=10_000):
        super().__init__()
        self.register_buffer("inv_freq", 1.0 / (base ** (torch.arange(0, dim, 2).float() / dim)))

    def forward(self, x):
        t = torch.arange(x.shape[1]).type_as(self.inv_freq)
        freqs = torch.einsum("i,j->ij", t, self.inv_freq.clone())
        return freqs.cos(), freqs.sin()  # what apply_rotary_pos_emb keeps of the cached tables


class LayerNorm(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.weight, self.dim = nn.Parameter(torch.ones([dim])), dim

    def forward(self, x):
        return F.layer_norm(x.float(), [self.dim]) * self.weight[None, None, :]


def modulate(x, shift, scale):
    return x * (1 + scale) + shift


class TimestepEmbedder(nn.Module):
    def __init__(self, hidden_size, frequency_embedding_size=256):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(frequency_embedding_size, hidden_size), nn.SiLU(),
                                 nn.Linear(hidden_size, hidden_size))
        self.frequency_embedding_size = frequency_embedding_size

    @staticmethod
    def timestep_embedding(t, dim, max_period=10000):
        half = dim // 2
        freqs = torch.exp(-math.log(max_period) * torch.arange(start=0, end=half, dtype=torch.float32) / half)
        args = t[:, None].float() * freqs[None]
        return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)

    def forward(self, t):
        return self.mlp(self.timestep_embedding(t, self.frequency_embedding_size))


class DDiTBlock(nn.Module):
    def __init__(self, dim, n_heads, cond_dim, mlp_ratio=4, dropout=0.1):
        super().__init__()
        self.n_heads = n_heads
        self.norm1 = LayerNorm(dim)
        self.attn_qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.attn_out = nn.Linear(dim, dim, bias=False)
        self.dropout1 = nn.Dropout(dropout)
        self.norm2 = LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp_ratio * dim, bias=True), nn.GELU(approximate="tanh"),
                                 nn.Linear(mlp_ratio * dim, dim, bias=True))
        self.dropout2 = nn.Dropout(dropout)
        self.adaLN_modulation = nn.Linear(cond_dim, 6 * dim, bias=True)

    def forward(self, x, rotary_cos_sin, c, exclude_last_token=False):
        b, s = x.shape[0], x.shape[1]
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = self.adaLN_modulation(c)[:, None].chunk(6, 2)
        x_skip = x
        qkv = self.attn_qkv(modulate(self.norm1(x), shift_msa, scale_msa))
        qkv = qkv.view(b, s, 3, self.n_heads, -1)  # einops 'b s (three h d) -> b s three h d'
        cos, sin = rotary_cos_sin
        if exclude_last_token:
            qkv[:, :-1] = apply_rotary_emb_qkv_(qkv[:, :-1].clone(), cos, sin)
        else:
            qkv = apply_rotary_emb_qkv_(qkv, cos, sin)
        q, k, v = (qkv[:, :, i].transpose(1, 2) for i in range(3))  # flash varlen attention, one sequence per row
        x = F.scaled_dot_product_attention(q, k, v, is_causal=False).transpose(1, 2).reshape(b, s, -1)
        x = x_skip + gate_msa * self.attn_out(x)
        return x + gate_mlp * self.mlp(modulate(self.norm2(x), shift_mlp, scale_mlp))


class EmbeddingLayer(nn.Module):
    def __init__(self, dim, vocab_dim):
        super().__init__()
        self.embedding = nn.Parameter(torch.empty((vocab_dim, dim)))

    def forward(self, x):
        return self.embedding[x]


class DDitFinalLayer(nn.Module):
    def __init__(self, hidden_size, out_channels, cond_dim):
        super().__init__()
        self.norm_final = LayerNorm(hidden_size)
        self.linear = nn.Linear(hidden_size, out_channels)
        self.adaLN_modulation = nn.Linear(cond_dim, 2 * hidden_size, bias=True)

    def forward(self, x, c):
        shift, scale = self.adaLN_modulation(c)[:, None].chunk(2, dim=2)
        return self.linear(modulate(self.norm_final(x), shift, scale))


def transformer_timestep_embedding(timesteps, embedding_dim, max_positions=10000):
    half_dim = embedding_dim // 2
    emb = math.log(max_positions) / (half_dim - 1)
    emb = torch.exp(torch.arange(half_dim, dtype=torch.float32) * -emb)
    emb = timesteps.float()[:, None] * emb[None, :]
    return torch.cat([torch.sin(emb), torch.cos(emb)], dim=1)


class DIT(nn.Module):
    """forward(indices, sigma, lam=None): lam None on a Di4C model draws torch.rand(B) as the reference does."""

    def __init__(self, is_di4c=False):
        super().__init__()
        self.vocab_embed = EmbeddingLayer(D, V)
        self.sigma_map = TimestepEmbedder(C)
        self.rotary_emb = Rotary(D // HEADS)
        self.blocks = nn.ModuleList([DDiTBlock(D, HEADS, C) for _ in range(BLOCKS)])
        self.output_layer = DDitFinalLayer(D, V, C)
        self.is_di4c = is_di4c
        if is_di4c:
            self.latent_projection = nn.Sequential(nn.Linear(128, 512), nn.GELU(), nn.Linear(512, D))

    def forward(self, indices, sigma, lam=None):
        x = self.vocab_embed(indices)
        c = F.silu(self.sigma_map(sigma))
        rotary_cos_sin = self.rotary_emb(x)
        if self.is_di4c:
            z = torch.rand(x.size(0)) if lam is None else lam
            z_emb = self.latent_projection(transformer_timestep_embedding(z.view(-1) * 1000, 128))
            x = torch.cat([x, z_emb[:, None, :]], dim=1)
        for block in self.blocks:
            x = block(x, rotary_cos_sin, c, exclude_last_token=self.is_di4c)
        return self.output_layer(x, c)[:, :indices.size(1), :]


class Holder(nn.Module):
    """The Lightning module / HF wrapper: one child `backbone` (twice for the backbone.backbone. variant)."""

    def __init__(self, backbone):
        super().__init__()
        self.backbone = backbone


def randomise(model, seed):
    """Every parameter random and non-zero, at scales that keep activations O(1)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            r = torch.randn(p.shape, generator=g)
            if name.endswith("norm1.weight") or name.endswith("norm2.weight") or name.endswith("norm_final.weight"):
                p.copy_(1 + 0.2 * r)
            elif name.endswith("embedding"):
                p.copy_(r)
            elif name.endswith("bias"):
                p.copy_(0.1 * r)
            else:
                p.copy_(r / math.sqrt(p.shape[1]) * (0.5 if "adaLN" in name else 1.0))
    return model.eval()
