"""Family 'tauldr': a PyTorch tauLDR U-Net (teacher) and Di4C student (tests/_torch_tauldr.py, written from the
description of andrew-cr/tauLDR:lib/networks/networks.py `UNet` + lib/models/models.py `ImageX0PredBase` and
sony/di4c:tauldr/lib/networks/networks.py, the lambda paths), saved as the released `.pt` and loaded by
`load_checkpoint(..., 'tauldr')`: logits equal, EMA/raw selection, strict errors, export round trip."""
import json

import jax
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from di4c_jax.interop import CheckpointError, export_checkpoint, load_checkpoint  # noqa: E402
from di4c_jax.interop.keys import flatten_params  # noqa: E402
from di4c_jax.interop.tauldr import layout  # noqa: E402
from di4c_jax.denoiser import Denoiser  # noqa: E402
from di4c_jax.models import abstract_params, model_config  # noqa: E402
from di4c_jax.models.registry import MODEL_SIZES  # noqa: E402

from _torch_tauldr import UNet, randomise  # noqa: E402


def _ema_model(model, shadow):
    """A copy of `model` with the shadow list copied into its parameters in order (what the reference's eval does)."""
    import copy

    ema = copy.deepcopy(model)
    with torch.no_grad():
        for p, s in zip(ema.parameters(), shadow, strict=True):
            p.copy_(s)
    return ema.eval()


def _save(model, path, *, prefix, shadow):
    """The released layout: {'model': net.* + EMA entries, 'optimizer': an Adam state, 'n_iter'}."""
    state = {f"{prefix}{k}": v.clone() for k, v in model.state_dict().items()}
    state.update(ema_decay=0.9999, ema_num_updates=17, ema_shadow_params=[s.clone() for s in shadow])
    opt = {"state": {0: {"step": torch.tensor(3.0), "exp_avg": torch.ones(2)}},
           "param_groups": [{"lr": 2e-4, "betas": (0.9, 0.999), "params": [0]}]}
    torch.save({"model": state, "optimizer": opt, "n_iter": 41}, path)


def _reference_load(model, path):
    """The reference loader: remove '.module.' from the keys, strict load, then the EMA shadow list into the params."""
    state = torch.load(path, map_location="cpu", weights_only=True)["model"]
    state = {k.replace(".module.", "."): v for k, v in state.items()}
    model.load_state_dict({k[len("net."):]: v for k, v in state.items() if k.startswith("net.")}, strict=True)
    return _ema_model(model, state["ema_shadow_params"])


TEACHER = dict(ch=8, ch_mult=(1, 2), num_res_blocks=1, attn_level=1, channels=3, resolution=8, num_states=256,
               embed=16, student=False)
STUDENT = dict(ch=16, ch_mult=(1, 2), num_res_blocks=1, attn_level=0, channels=1, resolution=8, num_states=17,
               embed=16, student=True)


@pytest.fixture(scope="module")
def nets():
    out = {}
    for name, size in (("teacher", TEACHER), ("student", STUDENT)):
        gen = torch.Generator().manual_seed(len(out) + 3)
        model = randomise(UNet(**size), gen, size["channels"])
        shadow = [p.detach() + 0.05 * torch.randn(p.shape, generator=gen) for p in model.parameters()]
        out[name] = (size, model, shadow)
    return out


def _inputs(size, key=0):
    b, d = 4, size["channels"] * size["resolution"] ** 2
    x = np.random.default_rng(key).integers(0, size["num_states"], (b, d)).astype(np.int32)
    t = np.array([1.0, 0.5, 0.05, 0.731], np.float32)
    lam = np.array([0.0, 0.25, 0.9, 1.0], np.float32) if size["student"] else None
    return x, t, lam


def _reference_logits(model, x, t, lam):
    with torch.no_grad():
        return model(torch.from_numpy(x).long(), torch.from_numpy(t),
                     None if lam is None else torch.from_numpy(lam)[:, None]).numpy()


_JITTED = {}


def _jit(denoiser):
    """One compiled apply per architecture for the whole file (compiling dominates its run time)."""
    return _JITTED.setdefault(denoiser.config_json, jax.jit(denoiser.apply))


def _check_logits(ours, ref):
    """Probabilities to 1e-6; logits to 1e-5 relative at S = 17, 1e-4 at S = 256. The head's
    log(sigmoid(r) - sigmoid(l)) cancels over narrow bins: fed the same mu and log_scale, it alone differs between
    XLA and torch by up to 4e-6 (S = 17) and 1.2e-4 (S = 256) in logits ~ -5, because their float32 exp, log1p and
    logsigmoid differ in the last ulp (the network's own output agrees to ~1e-6)."""
    assert ours.shape == ref.shape and ours.dtype == np.float32
    np.testing.assert_allclose(ours, ref, rtol=1e-5 if ours.shape[-1] <= 17 else 1e-4, atol=1e-5)
    np.testing.assert_allclose(jax.nn.softmax(ours, -1), jax.nn.softmax(ref, -1), rtol=0, atol=1e-6)


# ------------------------------------------------------------------------------------------------ the tests


@pytest.mark.parametrize("which, prefix", [("teacher", "net.module."), ("student", "net.")])
def test_logits_equal_the_reference_with_ema_and_raw_weights(tmp_path, nets, which, prefix):
    size, model, shadow = nets[which]
    _save(model, tmp_path / "ckpt.pt", prefix=prefix, shadow=shadow)
    denoiser, ema_params = load_checkpoint(tmp_path / "ckpt.pt", "tauldr", num_states=size["num_states"],
                                           resolution=size["resolution"])
    _, raw_params = load_checkpoint(tmp_path / "ckpt.pt", "tauldr", ema=False, num_states=size["num_states"],
                                    resolution=size["resolution"])
    config = denoiser.model_config
    assert (config["ch"], config["ch_mult"], config["num_res_blocks"], config["channels"]) == (
        size["ch"], [1, 2], 1, size["channels"])
    assert config["attn_resolutions"] == [size["resolution"] // 2 ** size["attn_level"]]
    assert config["time_embed_dim"] == (None if size["embed"] == size["ch"] else size["embed"])
    assert denoiser.mixture == size["student"] and denoiser.num_states == size["num_states"]
    apply = _jit(denoiser)
    x, t, lam = _inputs(size)
    ema_ref, raw_ref = _reference_logits(_ema_model(model, shadow), x, t, lam), _reference_logits(model, x, t, lam)
    assert np.abs(ema_ref - raw_ref).max() > 1e-2                  # the two weight sets are told apart
    _check_logits(np.asarray(apply(ema_params, x, t, lam)), ema_ref)
    _check_logits(np.asarray(apply(raw_params, x, t, lam)), raw_ref)


def test_export_round_trip_is_bit_exact_and_the_reference_loader_reads_it(tmp_path, nets):
    size, model, shadow = nets["student"]
    _save(model, tmp_path / "in.pt", prefix="net.", shadow=shadow)
    denoiser, params = load_checkpoint(tmp_path / "in.pt", "tauldr", num_states=17, resolution=8)
    export_checkpoint(denoiser, params, tmp_path / "out.pt", "tauldr")
    again, back = load_checkpoint(tmp_path / "out.pt", "tauldr", num_states=17, resolution=8)
    assert again.model_config == denoiser.model_config
    for (k, a), (k2, b) in zip(flatten_params(params).items(), flatten_params(back).items(), strict=True):
        assert k == k2 and b.dtype == np.float32 and np.array_equal(a, b), k
    saved = torch.load(tmp_path / "out.pt", weights_only=True)
    assert list(saved) == ["model", "optimizer", "n_iter"] and saved["model"]["ema_decay"] == 0.9999
    net = [v for k, v in saved["model"].items() if k.startswith("net.")]
    for raw, ema in zip(net, saved["model"]["ema_shadow_params"], strict=True):     # raw = EMA = our params
        assert torch.equal(raw, ema)
    reference = _reference_load(UNet(**size), tmp_path / "out.pt")
    for p, s in zip(reference.parameters(), saved["model"]["ema_shadow_params"], strict=True):
        assert torch.equal(p, s)                 # the shadow list is in the reference's parameters() order
    x, t, lam = _inputs(size, key=5)
    _check_logits(np.asarray(_jit(denoiser)(params, x, t, lam)), _reference_logits(reference, x, t, lam))


def _leaf(tree, path):
    for part in path:
        tree = tree[part]
    return tree


def test_released_sizes_have_the_reference_parameter_counts():
    shapes = abstract_params(model_config("unet-cifar10", lam_style="embed"))
    entries = layout(shapes)
    size = {e.key: int(np.prod(_leaf(shapes, e.path).shape)) for e in entries}
    assert len(entries) == len(size) == 384 and sum(size.values()) == 39_066_630          # the Di4C student
    lam_keys = ("lemb_modules.", "hlemb_modules.", "tlam_mix.", "h_t_lam_mix.", ".dense1.")
    teacher = [k for k in size if not any(part in k for part in lam_keys)]
    assert len(teacher) == 328 and sum(size[k] for k in teacher) == 35_749_766             # the teacher
    keys = [e.key for e in entries]
    assert keys[:2] == ["temb_modules.0.weight", "temb_modules.0.bias"] and keys[-1] == "output_modules.1.bias"
    assert keys.index("tlam_mix.weight") < keys.index("input_conv.weight") < keys.index("h_t_lam_mix.weight")
    dense1 = {k.rsplit(".", 2)[0] for k in keys if k.endswith("dense1.weight")}
    assert dense1 == {f"downsampling_modules.{i}" for i in (0, 1, 3, 5, 8, 9, 11, 12)} | {
        "middle_modules.0", "middle_modules.2"} | {f"upsampling_modules.{i}" for i in
                                                    (0, 1, 2, 4, 5, 6, 8, 10, 12, 15, 16, 17)}
    assert "downsampling_modules.3.nin.W" in keys and "downsampling_modules.4.NIN_3.W" in keys


def _edited(tmp_path, nets, edit, name="bad.pt"):
    size, model, shadow = nets["teacher"]
    _save(model, tmp_path / name, prefix="net.", shadow=shadow)
    obj = torch.load(tmp_path / name, weights_only=True)
    edit(obj["model"])
    torch.save(obj, tmp_path / name)
    return tmp_path / name


def test_shadow_list_is_checked_for_length_order_and_shape(tmp_path, nets):
    def load(path, **kw):
        return load_checkpoint(path, "tauldr", num_states=256, resolution=8, **kw)

    short = _edited(tmp_path, nets, lambda m: m["ema_shadow_params"].pop())
    with pytest.raises(CheckpointError, match=r"holds \d+ tensors, the architecture has \d+ parameters \(first "
                                              r"without a shadow: 'net.output_modules.1.bias'\)"):
        load(short)
    load(short, ema=False)                                      # the raw weights do not need it

    def sort(m):                                                # a list in sorted-key order, not registration order
        keys = [k for k in m if k.startswith("net.")]
        m["ema_shadow_params"] = [m["ema_shadow_params"][i] for i in sorted(range(len(keys)), key=keys.__getitem__)]
    with pytest.raises(CheckpointError, match=r"ema_shadow_params\[\d+\] has shape .* registration order is 'net\."):
        load(_edited(tmp_path, nets, sort))

    def reshape(m):
        m["ema_shadow_params"][2] = m["ema_shadow_params"][2][:, :5]
    with pytest.raises(CheckpointError, match=r"ema_shadow_params\[2\] has shape \(64, 5\), but parameter 2 in "
                                              r"registration order is 'net.temb_modules.1.weight' with shape "
                                              r"\(64, 64\)"):
        load(_edited(tmp_path, nets, reshape))

    gone = _edited(tmp_path, nets, lambda m: m.pop("ema_shadow_params"))
    with pytest.raises(CheckpointError, match="no 'ema_shadow_params'.*pass ema=False"):
        load(gone)


def test_bad_files_are_named(tmp_path, nets):
    def load(path, **kw):
        return load_checkpoint(path, "tauldr", **{"num_states": 256, "resolution": 8, **kw})

    missing = _edited(tmp_path, nets, lambda m: m.pop("net.middle_modules.1.NIN_2.b"))
    with pytest.raises(CheckpointError, match=r"missing key 'net.middle_modules.1.NIN_2.b'"):
        load(missing)

    def wrong(m):
        m["net.upsampling_modules.0.dense0.weight"] = torch.zeros(16, 63)
    with pytest.raises(CheckpointError, match=r"key 'net.upsampling_modules.0.dense0.weight' has shape \(16, 63\), "
                                              r"expected \(16, 64\)"):
        load(_edited(tmp_path, nets, wrong))
    extra = _edited(tmp_path, nets, lambda m: m.update({"net.extra.weight": torch.ones(2)}))
    with pytest.raises(CheckpointError, match=r"unexpected key\(s\) \['net.extra.weight'\]"):
        load(extra)

    good = _edited(tmp_path, nets, lambda m: None, "good.pt")
    (tmp_path / "cut.pt").write_bytes(good.read_bytes()[:-2000])
    with pytest.raises(CheckpointError, match="cut.pt: not a readable PyTorch checkpoint"):
        load(tmp_path / "cut.pt")
    torch.save({"iter": 1, "global_epoch": 0, "model_state_dict": {"tok_emb.weight": torch.ones(3, 2)},
                "optimizer_state_dict": {}}, tmp_path / "maskgit.pth")
    with pytest.raises(CheckpointError, match="not a tauLDR checkpoint.*family 'maskgit'"):
        load(tmp_path / "maskgit.pth")
    from safetensors.numpy import save_file
    save_file({"backbone.vocab_embed.embedding": np.ones((3, 2), np.float32)}, tmp_path / "sdtt.safetensors")
    with pytest.raises(CheckpointError, match="safetensors file"):
        load(tmp_path / "sdtt.safetensors")

    with pytest.raises(CheckpointError, match="ch=32 contradicts the tensors, which imply ch=8"):
        load(good, ch=32)
    with pytest.raises(CheckpointError, match=r"attn_resolutions=\(8,\) contradicts the tensors, which imply "
                                              r"attn_resolutions=\(4,\)"):
        load(good, attn_resolutions=[8])
    with pytest.raises(CheckpointError, match="lam_style='embed' contradicts the tensors, which imply "
                                              "lam_style=None"):
        load(good, lam_style="embed")
    with pytest.raises(TypeError, match=r"unknown keyword argument\(s\) \['num_heads'\]"):
        load(good, num_heads=4)
    denoiser, _ = load(good, ch_mult=[1, 2], channels=3)       # agreeing keywords are fine
    assert denoiser.num_positions == 3 * 64


def test_export_refuses_what_the_reference_cannot_build(tmp_path):
    def export(**config):
        denoiser = Denoiser(apply=None, num_states=17, config_json=json.dumps(config))
        export_checkpoint(denoiser, {}, tmp_path / "x.pt", "tauldr")

    tiny = dict(MODEL_SIZES["unet-tiny"], lam_style=None)
    with pytest.raises(ValueError, match=r"attention at one level .* attn_resolutions=\(8, 4\) has 2"):
        export(**dict(tiny, attn_resolutions=(8, 4)))
    with pytest.raises(ValueError, match="lam_hidden_mix=False has no tauLDR counterpart"):
        export(**dict(tiny, lam_style="embed", lam_hidden_mix=False))
    with pytest.raises(ValueError, match="kind='mlp'"):
        export(**MODEL_SIZES["mlp-tiny"])
