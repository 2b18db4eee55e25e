"""A CPU PyTorch tauLDR U-Net (teacher) and Di4C student with the truncated-logistic head, written from the description
of andrew-cr/tauLDR:lib/networks/networks.py `UNet` + lib/models/models.py `ImageX0PredBase` and
sony/di4c:tauldr/lib/networks/networks.py (the lambda paths), parameter names as released. Used by
tests/test_interop_tauldr.py (which skips without torch)."""
import math

import numpy as np
import torch

nn, F = torch.nn, torch.nn.functional


# ------------------------------------------------------------------------------------ the PyTorch reference


def _group_norm(c):
    return nn.GroupNorm(min(c // 4, 32), c, eps=1e-6)


def _emb(v, dim):
    """[sin; cos] of v * exp(-j ln(1e4) / (dim/2 - 1)), v already scaled by 1000."""
    half = dim // 2
    freqs = torch.exp(torch.arange(half, dtype=torch.float32) * -(math.log(10000) / (half - 1)))
    args = v.float()[:, None] * freqs[None, :]
    return torch.cat([torch.sin(args), torch.cos(args)], dim=1)


class NiN(nn.Module):
    def __init__(self, i, o):
        super().__init__()
        self.W, self.b = nn.Parameter(torch.empty(i, o)), nn.Parameter(torch.empty(o))

    def forward(self, x):
        return (torch.einsum("bhwi,ik->bhwk", x.permute(0, 2, 3, 1), self.W) + self.b).permute(0, 3, 1, 2)


class Res(nn.Module):
    def __init__(self, i, o, temb, student):
        super().__init__()
        self.groupnorm0, self.conv0 = _group_norm(i), nn.Conv2d(i, o, 3, padding=1)
        self.dense0 = nn.Linear(temb, o)
        if student:
            self.dense1 = nn.Linear(temb, o)
        self.groupnorm1, self.conv1 = _group_norm(o), nn.Conv2d(o, o, 3, padding=1)
        self.nin = NiN(i, o) if i != o else None

    def forward(self, x, temb, lemb):
        h = self.conv0(F.silu(self.groupnorm0(x)))
        h = h + self.dense0(F.silu(temb))[:, :, None, None]
        if lemb is not None:
            h = h + self.dense1(F.silu(lemb))[:, :, None, None]
        h = self.conv1(F.silu(self.groupnorm1(h)))                  # dropout: inactive in eval mode
        return ((x if self.nin is None else self.nin(x)) + h) / np.sqrt(2.0)


class Attn(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.GroupNorm_0 = _group_norm(c)
        self.NIN_0, self.NIN_1, self.NIN_2, self.NIN_3 = (NiN(c, c) for _ in range(4))

    def forward(self, x):
        b, c, hh, ww = x.shape
        h = self.GroupNorm_0(x)
        q, k, v = self.NIN_0(h), self.NIN_1(h), self.NIN_2(h)
        w = torch.einsum("bchw,bcij->bhwij", q, k) * (c ** -0.5)
        w = F.softmax(w.reshape(b, hh, ww, hh * ww), dim=-1).reshape(b, hh, ww, hh, ww)
        return (x + self.NIN_3(torch.einsum("bhwij,bcij->bchw", w, v))) / np.sqrt(2.0)


class Down(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, stride=2, padding=0)

    def forward(self, x):
        return self.conv(F.pad(x, (0, 1, 0, 1)))


class Up(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, padding=1)

    def forward(self, x):
        return self.conv(F.interpolate(x, scale_factor=2, mode="nearest"))


class UNet(nn.Module):
    """The reference U-Net + truncated logistic head: forward(x [B, D] int, t [B], lam [B, 1]) -> logits [B, D, S]."""

    def __init__(self, *, ch, ch_mult, num_res_blocks, attn_level, channels, resolution, num_states, embed, student):
        super().__init__()
        self.c, self.r, self.s, self.embed, self.student = channels, resolution, num_states, embed, student
        self.ch_mult, self.nrb, self.attn_level = ch_mult, num_res_blocks, attn_level
        t = 4 * embed
        self.temb_modules = nn.ModuleList([nn.Linear(embed, t), nn.Linear(t, t)])
        if student:
            self.lemb_modules = nn.ModuleList([nn.Linear(embed, t), nn.Linear(t, t)])
            self.hlemb_modules = nn.ModuleList([nn.Linear(embed, t), nn.Linear(t, t)])
            self.tlam_mix = nn.Linear(2 * embed, embed)
        self.input_conv = nn.Conv2d(channels, ch, 3, padding=1)
        skips, in_ch, down = [ch], ch, []
        for level, mult in enumerate(ch_mult):
            for _ in range(num_res_blocks):
                down.append(Res(in_ch, ch * mult, t, student))
                in_ch = ch * mult
                skips.append(in_ch)
                if level == attn_level:
                    down.append(Attn(in_ch))
            if level != len(ch_mult) - 1:
                down.append(Down(in_ch))
                skips.append(in_ch)
        self.downsampling_modules = nn.ModuleList(down)
        if student:
            self.h_t_lam_mix = nn.Linear(2 * embed + in_ch, embed)
        self.middle_modules = nn.ModuleList([Res(in_ch, in_ch, t, student), Attn(in_ch), Res(in_ch, in_ch, t, student)])
        up = []
        for level in reversed(range(len(ch_mult))):
            for _ in range(num_res_blocks + 1):
                up.append(Res(in_ch + skips.pop(), ch * ch_mult[level], t, student))
                in_ch = ch * ch_mult[level]
                if level == attn_level:
                    up.append(Attn(in_ch))
            if level != 0:
                up.append(Up(in_ch))
        self.upsampling_modules = nn.ModuleList(up)
        self.output_modules = nn.ModuleList([_group_norm(in_ch), nn.Conv2d(in_ch, 2 * channels, 3, padding=1)])

    def _lemb(self, lam, t, modules, mix, extra=()):
        e = F.silu(mix(torch.cat([_emb(lam.view(-1) * 1000, self.embed), _emb(t * 1000, self.embed), *extra], 1)))
        return modules[1](F.silu(modules[0](e)))

    def forward(self, x, t, lam=None):
        b = x.shape[0]
        h = x.view(b, self.c, self.r, self.r) / (self.s - 1) * 2 - 1
        centred = h
        temb = self.temb_modules[1](F.silu(self.temb_modules[0](_emb(t * 1000, self.embed))))
        lemb = self._lemb(lam, t, self.lemb_modules, self.tlam_mix) if self.student else None
        h = self.input_conv(h)
        hs, blocks = [h], iter(self.downsampling_modules)
        for level in range(len(self.ch_mult)):
            for _ in range(self.nrb):
                h = next(blocks)(h, temb, lemb)
                if level == self.attn_level:
                    h = next(blocks)(h)
                hs.append(h)
            if level != len(self.ch_mult) - 1:
                h = next(blocks)(h)
                hs.append(h)
        if self.student:
            hemb = h.mean(dim=3).mean(dim=2)
            lemb = self._lemb(lam, t, self.hlemb_modules, self.h_t_lam_mix, (hemb,))
        mid = self.middle_modules
        h = mid[2](mid[1](mid[0](h, temb, lemb)), temb, lemb)
        blocks = iter(self.upsampling_modules)
        for level in reversed(range(len(self.ch_mult))):
            for _ in range(self.nrb + 1):
                h = next(blocks)(torch.cat([h, hs.pop()], dim=1), temb, lemb)
                if level == self.attn_level:
                    h = next(blocks)(h)
            if level != 0:
                h = next(blocks)(h)
        h = self.output_modules[1](F.silu(self.output_modules[0](h)))
        mu = torch.tanh(centred + h[:, :self.c]).unsqueeze(-1)
        inv_scale = torch.exp(-(h[:, self.c:].unsqueeze(-1) - 2))
        width = 2.0 / self.s
        centres = torch.linspace(-1.0 + width / 2, 1.0 - width / 2, self.s).view(1, 1, 1, 1, self.s)
        log_l = F.logsigmoid((centres - width / 2 - mu) * inv_scale)
        log_r = F.logsigmoid((centres + width / 2 - mu) * inv_scale)
        return (log_r + torch.log1p(-torch.exp(log_l - log_r) + 1e-6)).view(b, -1, self.s)


def randomise(model, gen, c):
    """Every tensor random and non-zero (dense1 and the zero-initialised biases too); log-scale outputs near 2."""
    norm_scales = {id(m.weight) for m in model.modules() if isinstance(m, nn.GroupNorm)}
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim == 1:
                p.copy_(float(id(p) in norm_scales) + 0.1 * torch.randn(p.shape, generator=gen))
            else:
                fan_in = p.shape[0] if name.endswith(".W") else p[0].numel()
                p.copy_(torch.randn(p.shape, generator=gen) / math.sqrt(fan_in))
        out = model.output_modules[1]
        out.weight[c:] *= 0.1
        out.bias[c:] += 2.0
    return model.eval()
