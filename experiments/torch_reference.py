"""PyTorch side of `experiments.bench_step`: our DiT as a torch module, and the sdtt Di4C loss and training step
written the way the reference PyTorch code writes them.

Model: `DiT` mirrors di4c_jax/models/dit.py op for op (same parameters, names and shapes; `load_jax_params` copies
a JAX params dict in): token embedding, rotary attention (GPT-NeoX rotate-half), adaLN modulation
`c = silu(time_out(silu(time_in(sinusoid(1000 t)))))`, LayerNorm without bias, GELU(tanh) MLP, dropout on the branch
outputs, and the lambda token ('token' style): kept as a separate row z [R, 1, H] that the D tokens see through a
gated extra key (`att + gate p_z (v_z - att)`, gate 1 = the reference's concatenated extra token) and that attends to
all D + 1 keys itself.

Loss and step: `reference_di4c_loss` follows `di4c_loss` of sony/di4c:sdtt/src/sdtt/core/distill/multi_round_sdtt.py
(its ancestral teacher step is sony/di4c:sdtt/src/sdtt/core/sampling/ancestral.py): one t for the whole batch (with
probability 0.3 in [0, 0.02), snapped to 1/1024), rows repeated with `repeat_interleave(N)` (row b N + k is copy k of
item b), the SUBS parameterisation with -1e6, one ancestral teacher step per copy, the student's u-side pass under
`no_grad` in eval mode and its t-side pass in train mode (dropout), `torch.logsumexp` over the N copies, advanced-
index gathers at x0 and (in a Python loop over the N composition samples) at x_hat, and a Python branch on t between
the distillation and the consistency term. `ReferenceStep` adds a plain `loss.backward()`, global-norm clipping at
1.0, `AdamW.step()` with linear warm-up, and an EMA updated by a Python loop over the parameters (warm-up decay
min(0.9999, (1 + n) / (10 + n)), as sony/di4c:sdtt/src/sdtt/models/ema.py).
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

NEG_INF = -1e6  # log-prob of impossible classes (the sdtt reference's `neg_infinity`)


def sinusoid(x: torch.Tensor, dim: int) -> torch.Tensor:
    """[R] -> [R, dim]: [sin(x f_j)]_j ++ [cos(x f_j)]_j, f_j = exp(-j ln(1e4) / (dim/2 - 1))."""
    half = dim // 2
    freqs = torch.exp(-math.log(1e4) * torch.arange(half, dtype=torch.float32) / (half - 1))
    args = x.float()[:, None] * freqs[None, :]
    return torch.cat([torch.sin(args), torch.cos(args)], dim=-1)


def rotary_tables(length: int, head_dim: int, base: float = 1e4):
    inv_freq = 1.0 / base ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)
    emb = torch.outer(torch.arange(length, dtype=torch.float32), inv_freq).repeat(1, 2)
    return emb.cos(), emb.sin()


def apply_rotary(x, cos, sin):
    """x [R, L, heads, head_dim] -> x cos + rotate_half(x) sin."""
    x1, x2 = x.chunk(2, dim=-1)
    return x * cos[None, :, None, :] + torch.cat([-x2, x1], dim=-1) * sin[None, :, None, :]


def attention(q, k, v, scale: float):
    """q, k, v [R, L, heads, hd] -> (out [R, L, heads, hd], logsumexp of the scores [R, heads, L])."""
    s = torch.einsum("bqhd,bkhd->bhqk", q, k) * scale
    m = s.amax(dim=-1, keepdim=True).detach()
    p = torch.exp(s - m)
    total = p.sum(dim=-1)
    out = torch.einsum("bhqk,bkhd->bqhd", p, v) / total.transpose(1, 2)[..., None]
    return out, m[..., 0] + total.log()


def modulate(x, shift, scale):
    return x * (1 + scale) + shift


def _zero(linear: nn.Linear) -> nn.Linear:
    nn.init.zeros_(linear.weight)
    nn.init.zeros_(linear.bias)
    return linear


class Block(nn.Module):
    def __init__(self, hidden: int, heads: int, mlp_dim: int, cond_dim: int, dropout: float, lam_token: bool):
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(hidden, eps=1e-5, bias=False)
        self.norm2 = nn.LayerNorm(hidden, eps=1e-5, bias=False)
        self.qkv = nn.Linear(hidden, 3 * hidden, bias=False)
        self.attn_out = nn.Linear(hidden, hidden, bias=False)
        self.mlp_in = nn.Linear(hidden, mlp_dim)
        self.mlp_out = nn.Linear(mlp_dim, hidden)
        self.adaln = _zero(nn.Linear(cond_dim, 6 * hidden))
        self.dropout = nn.Dropout(dropout)
        self.lam_gate = nn.Parameter(torch.zeros(heads)) if lam_token else None

    def _qkv(self, x, shift, scale):
        b, n, _ = x.shape
        qkv = self.qkv(modulate(self.norm1(x), shift, scale))
        return [a.reshape(b, n, self.heads, -1) for a in qkv.chunk(3, dim=-1)]

    def _mlp(self, x, shift, scale, gate):
        h = self.mlp_in(modulate(self.norm2(x), shift, scale))
        return x + gate * self.dropout(self.mlp_out(F.gelu(h, approximate="tanh")))

    def forward(self, x, c, cos, sin, z=None):
        """x [R, D, H], c [R, cond], z [R, 1, H] or None -> (x, z)."""
        b, d, hidden = x.shape
        shift1, scale1, gate1, shift2, scale2, gate2 = self.adaln(c)[:, None, :].chunk(6, dim=-1)
        q, k, v = self._qkv(x, shift1, scale1)
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        scale = q.shape[-1] ** -0.5
        att, lse = attention(q, k, v, scale)
        if z is not None:
            qz, kz, vz = self._qkv(z, shift1, scale1)
            s_z = torch.einsum("bqhd,bkhd->bhqk", q, kz)[..., 0] * scale
            p_z = torch.sigmoid(s_z - lse).transpose(1, 2)[..., None]  # [R, D, heads, 1]
            att = att + self.lam_gate[None, None, :, None] * p_z * (vz - att)
            s_zz = torch.einsum("bqhd,bkhd->bhqk", qz, torch.cat([k, kz], dim=1)) * scale
            att_z = torch.einsum("bhqk,bkhd->bqhd", s_zz.softmax(dim=-1), torch.cat([v, vz], dim=1))
        x = x + gate1 * self.dropout(self.attn_out(att.reshape(b, d, hidden)))
        x = self._mlp(x, shift2, scale2, gate2)
        if z is not None:
            z = z + gate1 * self.dropout(self.attn_out(att_z.reshape(b, 1, hidden)))
            z = self._mlp(z, shift2, scale2, gate2)
        return x, z


class LambdaProjection(nn.Module):
    """sinusoid(1000 lam, feature_dim) -> Linear -> exact GELU -> Linear: [R] -> [R, out]."""

    def __init__(self, out: int, feature_dim: int, hidden: int):
        super().__init__()
        self.feature_dim = feature_dim
        self.dense_in = nn.Linear(feature_dim, hidden)
        self.dense_out = nn.Linear(hidden, out)

    def forward(self, lam):
        return self.dense_out(F.gelu(self.dense_in(sinusoid(1000.0 * lam, self.feature_dim))))


class DiT(nn.Module):
    """(x_t long[R, D], t [R], lam [R] or None) -> logits [R, D, K]; `DiT.from_config(cfg)` for a JAX model config."""

    def __init__(self, *, num_states: int, num_positions: int, hidden: int, depth: int, num_heads: int,
                 cond_dim: int = 128, time_freq_dim: int = 256, mlp_dim: int | None = None, dropout: float = 0.1,
                 time_conditioning: bool = True, lam_token: bool = False, lam_feature_dim: int = 128,
                 lam_hidden: int = 512):
        super().__init__()
        self.num_positions, self.head_dim = num_positions, hidden // num_heads
        self.time_conditioning, self.time_freq_dim = time_conditioning, time_freq_dim
        self.tok_embed = nn.Embedding(num_states, hidden)
        nn.init.normal_(self.tok_embed.weight, std=0.02)
        self.time_in = nn.Linear(time_freq_dim, cond_dim)
        self.time_out = nn.Linear(cond_dim, cond_dim)
        self.lam_proj = LambdaProjection(hidden, lam_feature_dim, lam_hidden) if lam_token else None
        self.blocks = nn.ModuleList(Block(hidden, num_heads, mlp_dim or 4 * hidden, cond_dim, dropout, lam_token)
                                    for _ in range(depth))
        self.final_norm = nn.LayerNorm(hidden, eps=1e-5, bias=False)
        self.final_adaln = _zero(nn.Linear(cond_dim, 2 * hidden))
        self.final_out = _zero(nn.Linear(hidden, num_states))

    @classmethod
    def from_config(cls, cfg) -> "DiT":
        """The torch twin of a di4c_jax DiT config (`models.model_config(...)`; 'token' or no lambda style)."""
        cfg = dict(cfg)
        if cfg.get("kind") != "dit" or cfg.get("lam_style") not in (None, "token") or cfg.get("num_classes"):
            raise ValueError(f"only unconditional DiT configs with lam_style None or 'token' are mirrored: {cfg}")
        keys = ("num_states", "num_positions", "hidden", "depth", "num_heads", "cond_dim", "time_freq_dim",
                "mlp_dim", "dropout", "time_conditioning", "lam_feature_dim", "lam_hidden")
        return cls(**{k: cfg[k] for k in keys if k in cfg}, lam_token=cfg.get("lam_style") == "token")

    def forward(self, x_t, t, lam=None):
        t_in = t if self.time_conditioning else torch.zeros_like(t)
        c = F.silu(self.time_out(F.silu(self.time_in(sinusoid(1000.0 * t_in, self.time_freq_dim)))))
        x = self.tok_embed(x_t)
        z = None if self.lam_proj is None else self.lam_proj(lam)[:, None, :]
        cos, sin = rotary_tables(x_t.shape[1], self.head_dim)
        for block in self.blocks:
            x, z = block(x, c, cos, sin, z)
        shift, scale = self.final_adaln(c)[:, None, :].chunk(2, dim=-1)
        return self.final_out(modulate(self.final_norm(x), shift, scale))


def load_jax_params(model: nn.Module, params) -> None:
    """Copy a di4c_jax params dict into `model` (kernel -> weight transposed, scale/table -> weight)."""
    named = dict(model.named_parameters())
    rename = {"kernel": "weight", "scale": "weight", "table": "weight"}

    def walk(tree, path):
        for key, value in tree.items():
            if isinstance(value, dict):
                walk(value, path + (key,))
                continue
            name = ".".join(path + (rename.get(key, key),))
            array = torch.from_numpy(np.array(value, np.float32))
            named.pop(name).copy_(array.T if key == "kernel" else array)

    with torch.no_grad():
        walk(params, ())
    if named:
        raise ValueError(f"torch parameters missing from the JAX params: {sorted(named)}")


def subs_logprobs(logits, xt, mask_id: int):
    """SUBS parameterisation: raw logits [R, D, K] -> log p(x0 | x_t) with the mask class at -1e6 and unmasked
    positions a point mass on x_t (in place, as the reference)."""
    logits[:, :, mask_id] += NEG_INF
    logits = logits - torch.logsumexp(logits, dim=-1, keepdim=True)
    unmasked = xt != mask_id
    logits[unmasked] = NEG_INF
    logits[unmasked, xt[unmasked]] = 0.0
    return logits


def ancestral_step(xt, logp_x0, t, s, mask_id: int, eps: float = 1e-3):
    """The MDLM ancestral step t -> s (`_ddpm_update`): xt long[R, D], logp_x0 [R, D, K], t, s [R] -> long[R, D]."""
    move_t, move_s = ((1 - eps) * t)[:, None, None], ((1 - eps) * s)[:, None, None]
    q = logp_x0.exp() * (move_t - move_s)
    q[:, :, mask_id] = move_s[:, :, 0]
    update = (q / (1e-10 - (torch.rand_like(q) + 1e-10).log())).argmax(dim=-1)
    return torch.where(xt != mask_id, xt, update)


def reference_objective(logp_t, x0, logp_teacher, logp_u, x_hat, time_coeff, w_distil, w_consis):
    """The Di4C loss from given log-probs, reference style (control variate on).

    Args:
      logp_t: [B * N, D, K] the student's t-side copies (repeat-interleaved rows; the only input with gradient).
      x0: long[B, D].  logp_teacher: [B, D, K] teacher marginals at x_t.
      logp_u: [B * N, D, K] the student's u-side copies.  x_hat: long[B, N, D] one draw per u-side copy, or None
        when no item is in the consistency branch.
      time_coeff, w_distil, w_consis: [B]. A term whose weights are all 0 is not computed (the reference's branch).

    Returns:
      mean_b(w_distil distil + time_coeff data_cor + data_ind + w_consis consis), a scalar.
    """
    batch, dims = x0.shape
    n, classes = logp_t.shape[0] // batch, logp_t.shape[-1]
    log_n = math.log(n)
    lt = logp_t.view(batch, n, dims, classes)
    p_teacher = logp_teacher.exp()
    b_idx = torch.arange(batch).repeat_interleave(dims)
    d_idx = torch.arange(dims).repeat(batch)
    log_marginal = torch.logsumexp(lt, dim=1) - log_n  # [B, D, K]

    def neg_cor(x):
        """-(log M(x) - sum_d log Mbar_d(x_d)) for x long[B, D] -> [B]."""
        g = lt[b_idx, :, d_idx, x.reshape(-1)].view(batch, dims, n)
        return -(torch.logsumexp(g.sum(dim=1), dim=1) - log_n) + (torch.logsumexp(g, dim=2) - log_n).sum(dim=1)

    data_ind = (p_teacher * (logp_teacher - log_marginal)).view(batch, -1).sum(dim=1)
    loss = time_coeff * neg_cor(x0) + data_ind
    if bool((w_distil != 0).any()):
        distil = (p_teacher.repeat_interleave(n, dim=0) * (logp_teacher.repeat_interleave(n, dim=0) - logp_t))
        loss = loss + w_distil * distil.view(batch, -1).sum(dim=1) / n
    if bool((w_consis != 0).any()):
        log_pc = torch.logsumexp(logp_u.view(batch, n, dims, classes), dim=1) - log_n
        consis = (log_pc.exp() * (log_pc.detach() - log_marginal)).view(batch, -1).sum(dim=1)
        for i in range(x_hat.shape[1]):
            consis = consis + neg_cor(x_hat[:, i]) / x_hat.shape[1]
        loss = loss + w_consis * consis
    return torch.mean(loss)


def reference_di4c_loss(student: DiT, teacher: DiT, x0, *, num_lambda: int, mask_id: int, rng: np.random.Generator,
                        literal_teacher: bool = False, num_bins: int = 1024, distil_time: float = 0.02,
                        distil_prob: float = 0.3, time_coeff_scale: float = 0.1, eps: float = 1e-3):
    """One sdtt Di4C loss on x0 long[B, D] (see the module docstring); returns the scalar loss.

    The product teacher runs once on the B rows of x_t and its log-probs are repeated for the N ancestral steps;
    `literal_teacher` instead runs it on all B N repeated rows as well, as the reference does (N - 1 redundant passes).
    """
    batch, dims = x0.shape
    n = num_lambda
    v = float(torch.rand(()))
    t = distil_time * v if rng.random() < distil_prob else distil_time + (1 - distil_time) * v
    t = (math.floor(num_bins * t) + 1) / num_bins
    t_b = torch.full((batch,), t)
    xt = torch.where(torch.rand(batch, dims) < (1 - eps) * t, mask_id, x0)
    xt_rep, t_rep = xt.repeat_interleave(n, dim=0), t_b.repeat_interleave(n, dim=0)
    s_rep = t_rep - min(1 / num_bins, t / 2)

    teacher.eval()
    student.eval()
    with torch.no_grad():
        logp_teacher = subs_logprobs(teacher(xt, t_b), xt, mask_id)
        step_logp = (subs_logprobs(teacher(xt_rep, t_rep), xt_rep, mask_id) if literal_teacher
                     else logp_teacher.repeat_interleave(n, dim=0))
        x_u = ancestral_step(xt_rep, step_logp, t_rep, s_rep, mask_id, eps)
        logp_u = subs_logprobs(student(x_u, s_rep, torch.rand(batch * n)), x_u, mask_id)
    student.train()
    logp_t = subs_logprobs(student(xt_rep, t_rep, torch.rand(batch * n)), xt_rep, mask_id)

    w_distil = torch.full((batch,), float(t < distil_time))
    w_consis = 1.0 - w_distil
    time_coeff = time_coeff_scale * torch.sigmoid(20.0 * (t_b - 0.5))
    x_hat = None
    if t >= distil_time:
        with torch.no_grad():
            x_hat = torch.distributions.Categorical(probs=logp_u.exp()).sample().view(batch, n, dims)
    return reference_objective(logp_t, x0, logp_teacher, logp_u, x_hat, time_coeff, w_distil, w_consis)


class ReferenceStep:
    """`step(x0) -> loss`: the reference loss, `loss.backward()`, clip, AdamW with warm-up, Python-loop EMA."""

    def __init__(self, student: DiT, teacher: DiT, *, num_lambda: int, mask_id: int, lr: float = 3e-5,
                 warmup_steps: int = 2500, weight_decay: float = 0.0, grad_clip: float = 1.0,
                 ema_decay: float = 0.9999, literal_teacher: bool = False, seed: int = 0):
        self.student, self.teacher = student, teacher
        self.loss_kwargs = dict(num_lambda=num_lambda, mask_id=mask_id, literal_teacher=literal_teacher)
        self.params = list(student.parameters())
        self.opt = torch.optim.AdamW(self.params, lr=lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=weight_decay)
        self.sched = torch.optim.lr_scheduler.LambdaLR(
            self.opt, lambda n: min(1.0, n / warmup_steps) if warmup_steps else 1.0)
        self.ema = [p.detach().clone() for p in self.params]
        self.grad_clip, self.ema_decay, self.count = grad_clip, ema_decay, 0
        self.rng = np.random.default_rng(seed)
        torch.manual_seed(seed)
        for p in teacher.parameters():
            p.requires_grad_(False)

    def __call__(self, x0) -> float:
        loss = reference_di4c_loss(self.student, self.teacher, x0, rng=self.rng, **self.loss_kwargs)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.params, self.grad_clip)
        self.opt.step()
        self.sched.step()
        self.count += 1
        decay = min(self.ema_decay, (1 + self.count) / (10 + self.count))
        with torch.no_grad():
            for shadow, p in zip(self.ema, self.params):
                shadow.sub_((1 - decay) * (shadow - p))
        return loss.detach().item()
