"""The 'maskgit' checkpoint family and the 'maskgit_v1' model: a PyTorch MaskGIT v1 MaskTransformer (and its Di4C
student) with random weights, saved in the released `.pth` layout, loaded, and compared logit for logit; the
errors; export -> reload bit for bit, and the export read back by the reference's `load_state_dict`."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
nn = torch.nn

from di4c_jax.interop import CheckpointError, export_checkpoint, load_checkpoint  # noqa: E402
from di4c_jax.models import model_config, param_count  # noqa: E402

HIDDEN, DEPTH, HEADS, MLP, CODES, CLASSES, SIDE = 48, 2, 4, 96, 16, 5, 4  # head dim 12, 4 x 4 = 16 image tokens
B = 6


# The PyTorch reference: valeoai/Maskgit-pytorch:Network/transformer.py at 32062fa (v1) with the Di4C additions of
# sony/di4c:maskgit-pytorch/Network/transformer.py (is_student, latent_projection, z), same module and key names.
class PreNorm(nn.Module):
    def __init__(self, dim, fn):
        super().__init__()
        self.norm, self.fn = nn.LayerNorm(dim), fn

    def forward(self, x):
        return self.fn(self.norm(x))


class FeedForward(nn.Module):
    def __init__(self, dim, hidden, dropout):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, dim),
                                 nn.Dropout(dropout))

    def forward(self, x):
        return self.net(x)


class Attention(nn.Module):
    def __init__(self, dim, heads, dropout):
        super().__init__()
        self.mha = nn.MultiheadAttention(dim, num_heads=heads, dropout=dropout, batch_first=True, bias=True)

    def forward(self, x):
        return self.mha(x, x, x)


class TransformerEncoder(nn.Module):
    def __init__(self, dim, depth, heads, mlp_dim, dropout):
        super().__init__()
        self.layers = nn.ModuleList([nn.ModuleList([PreNorm(dim, Attention(dim, heads, dropout)),
                                                    PreNorm(dim, FeedForward(dim, mlp_dim, dropout))])
                                     for _ in range(depth)])

    def forward(self, x):
        for attn, ff in self.layers:
            x = attn(x)[0] + x
            x = ff(x) + x
        return x


def timestep_embedding(timesteps, dim, max_positions=10000):
    half = dim // 2
    emb = torch.exp(torch.arange(half, dtype=torch.float32) * -(math.log(max_positions) / (half - 1)))
    emb = timesteps.float()[:, None] * emb[None, :]
    return torch.cat([torch.sin(emb), torch.cos(emb)], dim=1)


class MaskTransformer(nn.Module):
    def __init__(self, img_size=16 * SIDE, hidden_dim=HIDDEN, codebook_size=CODES, depth=DEPTH, heads=HEADS,
                 mlp_dim=MLP, dropout=0.1, nclass=CLASSES, is_student=False):
        super().__init__()
        self.nclass, self.patch_size, self.codebook_size = nclass, img_size // 16, codebook_size
        n = self.patch_size ** 2 + 1
        self.tok_emb = nn.Embedding(codebook_size + 1 + nclass + 1, hidden_dim)
        self.pos_emb = nn.Parameter(torch.zeros(1, n, hidden_dim))
        ln, lin = (lambda: nn.LayerNorm(hidden_dim, eps=1e-12)), (lambda: nn.Linear(hidden_dim, hidden_dim))
        self.first_layer = nn.Sequential(ln(), nn.Dropout(dropout), lin(), nn.GELU(), ln(), nn.Dropout(dropout),
                                         lin())
        self.transformer = TransformerEncoder(hidden_dim, depth, heads, mlp_dim, dropout)
        self.last_layer = nn.Sequential(ln(), nn.Dropout(dropout), lin(), nn.GELU(), ln())
        self.bias = nn.Parameter(torch.zeros(n, codebook_size + 1 + nclass + 1))
        self.is_student = is_student
        if is_student:
            self.latent_feature_dim = 128
            self.latent_projection = nn.Sequential(nn.Linear(128, 512), nn.GELU(), nn.Linear(512, hidden_dim))

    def forward(self, img_token, y, drop_label, z=None):
        b = img_token.shape[0]
        cls_token = y.view(b, -1) + self.codebook_size + 1
        cls_token[drop_label] = self.codebook_size + 1 + self.nclass
        x = self.tok_emb(torch.cat([img_token.view(b, -1), cls_token.view(b, -1)], -1)) + self.pos_emb
        if z is not None:
            z_emb = self.latent_projection(timestep_embedding(z.view(-1) * 1000, self.latent_feature_dim))
            x = torch.cat([x, z_emb[:, None, :]], dim=1)
        x = self.last_layer(self.transformer(self.first_layer(x)))
        if z is not None:
            x = x[:, :-1, :]
        logit = torch.matmul(x, self.tok_emb.weight.T) + self.bias
        return logit[:, :self.patch_size * self.patch_size, :self.codebook_size + 1]


def _reference(is_student: bool, seed: int) -> MaskTransformer:
    """Every tensor random and non-zero (norm scales around 1), eval mode."""
    torch.manual_seed(seed)
    model = MaskTransformer(is_student=is_student)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(("norm.weight", "layer.0.weight", "layer.4.weight")):  # LayerNorm scales
                p.copy_(1.0 + 0.2 * torch.randn_like(p))
            else:
                p.copy_(torch.randn_like(p) * (0.3 if p.ndim == 1 else 1.0 / math.sqrt(p.shape[-1])))
    return model.eval()


def _save(model: nn.Module, path) -> None:
    """The released layout (sony/di4c:maskgit-pytorch/Trainer/trainer.py `save_network`)."""
    torch.save({"iter": 1234, "global_epoch": 7, "model_state_dict": model.state_dict(),
                "optimizer_state_dict": {"state": {}, "param_groups": [{"lr": 1e-4, "params": [0, 1]}]}}, path)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("maskgit")
    out = {}
    for name, student in (("teacher", False), ("student", True)):
        model = _reference(student, seed=1 if student else 0)
        _save(model, root / f"{name}.pth")
        out[name] = (model, root / f"{name}.pth")
    return out


@pytest.fixture(scope="module")
def loaded(files):
    """name -> (denoiser, params, jitted apply): each file loaded and compiled once."""
    out = {}
    for name, (_, path) in files.items():
        denoiser, params = load_checkpoint(path, "maskgit", num_heads=HEADS, num_classes=CLASSES)
        out[name] = (denoiser, params, jax.jit(denoiser.apply))
    return out


def _inputs(seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, CODES + 1, (B, SIDE * SIDE))
    x[:, ::3] = CODES                                             # mask ids
    x[0, :] = CODES                                               # an all-mask row
    y = rng.integers(0, CLASSES, (B,))
    y[:2] = [0, CLASSES - 1]
    drop = np.array([False, False, True, False, True, False])    # both drop_label values
    lam = np.array([0.0, 1.0, 0.5, 0.013, 0.77, 0.999], np.float32)
    return x, y, drop, lam


def _torch_logits(model, x, y, drop, lam=None):
    with torch.no_grad():
        z = None if lam is None else torch.from_numpy(lam).view(-1, 1)
        return model(torch.from_numpy(x).view(B, SIDE, SIDE), torch.from_numpy(y), torch.from_numpy(drop), z).numpy()


def _ours(apply, params, x, y, drop, lam=None):
    cond = np.where(drop, CLASSES, y).astype(np.int32)            # the null class num_classes = dropped label
    return np.asarray(apply(params, jnp.asarray(x, jnp.int32), jnp.zeros(B), lam, cond))


@pytest.mark.parametrize("name", ["teacher", "student"])
def test_logits_equal_the_reference(files, loaded, name):
    model = files[name][0]
    denoiser, params, apply = loaded[name]
    cfg = denoiser.model_config
    assert cfg["kind"] == "maskgit_v1" and (cfg["hidden"], cfg["depth"], cfg["mlp_dim"]) == (HIDDEN, DEPTH, MLP)
    assert (denoiser.num_states, denoiser.num_positions, denoiser.num_classes) == (CODES + 1, SIDE ** 2, CLASSES)
    assert denoiser.mixture == (name == "student")
    x, y, drop, lam = _inputs()
    lams = [lam, lam[::-1].copy()] if name == "student" else [None]
    for lam in lams:
        want = _torch_logits(model, x, y, drop, lam)
        got = _ours(apply, params, x, y, drop, lam)
        assert got.shape == want.shape == (B, SIDE ** 2, CODES + 1) and float(np.std(want)) > 0.5
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    if name == "student":  # lambda matters (the test can fail)
        a = _ours(apply, params, x, y, drop, np.full(B, 0.1, np.float32))
        assert float(np.abs(a - _ours(apply, params, x, y, drop, np.full(B, 0.9, np.float32))).max()) > 1e-2


def test_export_reload_bit_exact_and_read_by_the_reference(files, tmp_path):
    for name, (model, path) in files.items():
        denoiser, params = load_checkpoint(path, "maskgit", num_heads=HEADS, num_classes=CLASSES)
        out = export_checkpoint(denoiser, params, tmp_path / f"{name}.pth", "maskgit")
        denoiser2, params2 = load_checkpoint(out, "maskgit", num_heads=HEADS, num_classes=CLASSES)
        assert denoiser2.model_config == denoiser.model_config
        jax.tree.map(np.testing.assert_array_equal, params2, params)
        saved = torch.load(out, weights_only=True)
        assert set(saved) == {"iter", "global_epoch", "model_state_dict"}
        ref = model.state_dict()
        assert list(saved["model_state_dict"]) == list(ref)          # named_parameters order
        for k, v in ref.items():
            assert torch.equal(saved["model_state_dict"][k], v), k
        fresh = MaskTransformer(is_student=name == "student").eval()
        fresh.load_state_dict(saved["model_state_dict"], strict=True)
        x, y, drop, lam = _inputs(1)
        lam = lam if name == "student" else None
        np.testing.assert_array_equal(_torch_logits(fresh, x, y, drop, lam), _torch_logits(model, x, y, drop, lam))


def _write(path, obj):
    torch.save(obj, path)
    return path


def test_errors_name_the_key_and_value(files, tmp_path):
    _, path = files["teacher"]
    sd = torch.load(path, weights_only=True)["model_state_dict"]
    ok = dict(num_heads=HEADS, num_classes=CLASSES)

    def load(p, **kw):
        return load_checkpoint(p, "maskgit", **{**ok, **kw})

    tauldr = _write(tmp_path / "tauldr.pt", {"model": {"net.temb.0.weight": torch.ones(2)}, "optimizer": {},
                                              "n_iter": 3})
    with pytest.raises(CheckpointError, match=r"not a MaskGIT checkpoint.*'model_state_dict'.*n_iter"):
        load(tauldr)
    lightning = _write(tmp_path / "sdtt.ckpt", {"state_dict": {"backbone.vocab_embed.embedding": torch.ones(3, 2)}})
    with pytest.raises(CheckpointError, match=r"not a MaskGIT checkpoint.*state_dict"):
        load(lightning)
    other = _write(tmp_path / "other.pth", {"model_state_dict": {"backbone.x": torch.ones(1)}})
    with pytest.raises(CheckpointError, match=r"no key 'tok_emb.weight'"):
        load(other)

    missing = dict(sd)
    del missing["transformer.layers.1.1.fn.net.3.bias"]
    with pytest.raises(CheckpointError, match=r"missing key 'transformer.layers.1.1.fn.net.3.bias'"):
        load(_write(tmp_path / "missing.pth", {"model_state_dict": missing}))
    bad = {**sd, "bias": torch.ones(SIDE ** 2, CODES + CLASSES + 2)}
    with pytest.raises(CheckpointError, match=r"key 'bias' has shape \(16, 23\), expected \(17, 23\)"):
        load(_write(tmp_path / "shape.pth", {"model_state_dict": bad}))
    extra = {**sd, "latent_projection.9.weight": torch.ones(2)}
    with pytest.raises(CheckpointError, match=r"unexpected key.*latent_projection.9.weight"):
        load(_write(tmp_path / "extra.pth", {"model_state_dict": extra}))

    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="truncated"):
        load(truncated)
    with pytest.raises(CheckpointError, match="no such checkpoint file"):
        load(tmp_path / "absent.pth")
    with pytest.raises(CheckpointError, match="no EMA"):
        load(path, ema=True)

    # keywords the tensors contradict, a split the vocabulary cannot hold, and unknown keywords
    with pytest.raises(CheckpointError, match=r"hidden=64 contradicts the tensors, which imply hidden=48"):
        load(path, hidden=64)
    with pytest.raises(CheckpointError, match=r"num_states=10 contradicts the tensors, which imply num_states=17"):
        load(path, num_states=10)
    with pytest.raises(CheckpointError, match=r"23 rows.*num_classes=1000"):
        load_checkpoint(path, "maskgit", num_heads=HEADS)           # the released default 1000 classes
    with pytest.raises(CheckpointError, match=r"not divisible by num_heads=5"):
        load(path, num_heads=5)
    with pytest.raises(TypeError, match="unknown keyword.*heads"):
        load(path, heads=4)
    denoiser, _ = load_checkpoint(path, "maskgit", num_heads=HEADS, num_states=CODES + 1)  # the split given once
    assert denoiser.num_classes == CLASSES


def test_model_dropout_jit_nan_ids_and_released_size(loaded):
    _, params, f = loaded["student"]
    x, y, _, lam = _inputs(2)
    x, t, cond = jnp.asarray(x, jnp.int32), jnp.zeros(B), jnp.asarray(y, jnp.int32)
    out = f(params, x, t, lam, cond)
    assert out.dtype == jnp.float32 and bool(jnp.all(jnp.isfinite(out)))
    np.testing.assert_array_equal(out, f(params, x, t + 0.5, lam, cond))            # t is ignored
    d0, d1 = (f(params, x, t, lam, cond, rngs=jax.random.key(k)) for k in (0, 1))  # dropout only with rngs
    np.testing.assert_array_equal(d0, f(params, x, t, lam, cond, rngs=jax.random.key(0)))
    assert not np.allclose(d0, d1) and not np.allclose(d0, out)
    bad_cond = cond.at[1].set(CLASSES + 1).at[2].set(-1)                            # class ids outside [0, 5]
    bad_x = x.at[3, 0].set(CODES + 1)                                               # a class id among the codes
    assert list(np.isnan(np.asarray(f(params, x, t, lam, bad_cond))).any(axis=(1, 2))) == [0, 1, 1, 0, 0, 0]
    assert list(np.isnan(np.asarray(f(params, bad_x, t, lam, cond))).any(axis=(1, 2))) == [0, 0, 0, 1, 0, 0]
    # The released size: 174,160,874 parameters ("174.161M", valeoai/Maskgit-pytorch README), counted from one and two
    # of its 24 identical blocks (a 24-block trace alone takes seconds).
    one, two = (param_count(model_config("maskgit-v1", depth=d)) for d in (1, 2))
    assert one + 23 * (two - one) == 174_160_874
