"""interop families 'mdlm' and 'sdtt': released layouts in, raw logits equal to the PyTorch reference, students out.

The reference is kuleshov-group/mdlm:models/dit.py (= jdeschena/sdtt:src/sdtt/models/dit_orig.py) with Di4C's
lambda token (sony/di4c:sdtt/src/sdtt/models/dit_orig.py), rebuilt in tests/_torch_mdlm.py with its module and parameter
names (the two flash-attn calls replaced by their CPU equivalents).
Every tensor is random and non-zero (also the zero-initialised adaLN and output layers), saved with the released
key names: an HF folder with config.json, a Lightning .ckpt with state_dict + EMA list, the backbone.backbone.
variant of `teacher_1M_sm`.
"""
import json

import jax
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from safetensors.torch import load_file, save_file  # noqa: E402

from di4c_jax.interop import CheckpointError, export_checkpoint, load_checkpoint  # noqa: E402
from di4c_jax.interop.keys import flatten_params  # noqa: E402

from _torch_mdlm import BLOCKS, C, D, DIT, HEADS, L, V, Holder, randomise  # noqa: E402

MASK = V - 1
TIMES = np.array([0.0, 0.25, 0.7, 1.0], np.float32)
LAMS = np.array([0.0, 0.3, 0.77, 0.999], np.float32)


def sigma_of(t, time_conditioning):
    t = torch.from_numpy(t)
    return -torch.log1p(-(1 - 1e-3) * t) if time_conditioning else torch.zeros_like(t)


# ---------------------------------------------------------------------------------------------- writing files

def hf_mdlm_folder(path, model, time_conditioning):
    path.mkdir()
    save_file({k: v.contiguous() for k, v in Holder(model).state_dict().items()}, path / "model.safetensors",
              metadata={"format": "pt"})
    (path / "config.json").write_text(json.dumps(dict(
        architectures=["MDLM"], model_type="mdlm", vocab_size=V, model_length=L, hidden_dim=D, cond_dim=C,
        n_blocks=BLOCKS, n_heads=HEADS, dropout=0.1, time_conditioning=time_conditioning, return_dict=False)))
    return path


def hydra_config(is_di4c=False, time_conditioning=False):
    return {"mode": "sample", "time_conditioning": time_conditioning, "is_di4c": is_di4c, "T": 1024,
            "model": {"name": "small", "type": "ddit-orig", "hidden_size": D, "cond_dim": C, "length": L,
                      "n_blocks": BLOCKS, "n_heads": HEADS, "scale_by_sigma": True, "dropout": 0.1},
            "data_preprocess": {"seq_len": "${model.length}"}, "tokenizer": {"name": "gpt2"}}


def sdtt_folder(path, model, double=False, **config):
    path.mkdir()
    holder = Holder(Holder(model) if double else model)
    save_file({k: v.contiguous() for k, v in holder.state_dict().items()}, path / "model.safetensors",
              metadata={"format": "pt"})
    (path / "config.json").write_text(json.dumps(hydra_config(**config)))
    return path


def lightning_ckpt(path, model, ema_model=None):
    holder = Holder(model)
    shadow = [p.detach().clone() for p in (ema_model or model).parameters()]
    torch.save({"epoch": 3, "global_step": 1000, "pytorch-lightning_version": "2.2.1",
                "state_dict": holder.state_dict(),
                "ema": {"decay": 0.9999, "num_updates": 1000, "shadow_params": shadow},
                "optimizer_states": [], "lr_schedulers": []}, path)
    return path


# ------------------------------------------------------------------------------------------------------- fixtures

@pytest.fixture(scope="module", autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def teacher():
    torch.manual_seed(0)
    return randomise(DIT(), 1)


@pytest.fixture(scope="module")
def student():
    torch.manual_seed(0)
    return randomise(DIT(is_di4c=True), 2)


@pytest.fixture(scope="module")
def tokens():
    x = np.random.RandomState(3).randint(0, V, size=(len(TIMES), L)).astype(np.int32)
    x[:, ::3] = MASK
    return x


def ours(denoiser, params, x, t, lam=None):
    return np.asarray(jax.jit(denoiser.apply)(params, x, t, lam, None))


def theirs(model, x, sigma, lam=None):
    with torch.no_grad():
        return model(torch.from_numpy(x).long(), sigma, None if lam is None else torch.from_numpy(lam)).numpy()


def same_params(a, b):
    fa, fb = flatten_params(a), flatten_params(b)
    assert sorted(fa) == sorted(fb)
    for k in fa:
        np.testing.assert_array_equal(np.asarray(fa[k]), np.asarray(fb[k]), err_msg=k)


# ---------------------------------------------------------------------------------------------------- parity

@pytest.mark.parametrize("time_conditioning", [False, True])
def test_hf_mdlm_folder_logits_equal_the_reference(tmp_path, teacher, tokens, time_conditioning):
    folder = hf_mdlm_folder(tmp_path / "mdlm-owt", teacher, time_conditioning)
    denoiser, params = load_checkpoint(folder, "mdlm")
    cfg = denoiser.model_config
    assert (cfg["num_states"], cfg["num_positions"], cfg["hidden"], cfg["depth"], cfg["num_heads"], cfg["cond_dim"],
            cfg["time_conditioning"], cfg["lam_style"]) == (V, L, D, BLOCKS, HEADS, C, time_conditioning, None)
    assert not denoiser.mixture and "lam_gate" not in str(flatten_params(params).keys())
    want = theirs(teacher, tokens, sigma_of(TIMES, time_conditioning))
    if time_conditioning:  # sigma(t) reaches the network
        assert np.abs(want - theirs(teacher, tokens, sigma_of(TIMES, False))).max() > 1e-2
    np.testing.assert_allclose(ours(denoiser, params, tokens, TIMES), want, rtol=1e-5, atol=1e-5)


def test_di4c_student_logits_equal_the_reference_at_every_lambda(tmp_path, student, tokens):
    path = lightning_ckpt(tmp_path / "sdtt6-di4c2.ckpt", student)
    denoiser, params = load_checkpoint(path, "sdtt", num_positions=L)
    assert denoiser.mixture and denoiser.model_config["lam_style"] == "token"
    got = ours(denoiser, params, tokens, TIMES, LAMS)
    want = theirs(student, tokens, sigma_of(TIMES, False), LAMS)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    assert np.abs(want[0] - theirs(student, tokens, sigma_of(TIMES, False), LAMS[::-1].copy())[0]).max() > 1e-3
    torch.manual_seed(7)  # the reference draws lambda inside forward: the seed recipe reproduces it
    lam = torch.rand(len(TIMES)).numpy()
    torch.manual_seed(7)
    drawn = theirs(student, tokens, sigma_of(TIMES, False))
    np.testing.assert_allclose(ours(denoiser, params, tokens, TIMES, lam), drawn, rtol=1e-5, atol=1e-5)


def test_time_conditioned_student_and_backbone_backbone_folder(tmp_path, student, tokens):
    folder = sdtt_folder(tmp_path / "rev", student, double=True, is_di4c=True, time_conditioning=True)
    assert any(k.startswith("backbone.backbone.") for k in load_file(folder / "model.safetensors"))
    denoiser, params = load_checkpoint(folder, "sdtt")
    assert denoiser.model_config["time_conditioning"] and denoiser.model_config["num_positions"] == L
    np.testing.assert_allclose(ours(denoiser, params, tokens, TIMES, LAMS),
                               theirs(student, tokens, sigma_of(TIMES, True), LAMS), rtol=1e-5, atol=1e-5)


# ----------------------------------------------------------------------------------------------- EMA selection

def test_ema_or_raw_as_each_reference_evaluates(tmp_path, teacher):
    ema_model = randomise(DIT(), 9)
    path = lightning_ckpt(tmp_path / "last.ckpt", teacher, ema_model)
    raw_folder = hf_mdlm_folder(tmp_path / "raw", teacher, False)
    ema_folder = hf_mdlm_folder(tmp_path / "ema", ema_model, False)
    raw, ema = load_checkpoint(raw_folder, "mdlm")[1], load_checkpoint(ema_folder, "mdlm")[1]
    same_params(load_checkpoint(path, "mdlm", num_positions=L)[1], ema)          # MDLM evaluates with the EMA
    same_params(load_checkpoint(path, "mdlm", ema=False, num_positions=L)[1], raw)
    same_params(load_checkpoint(path, "sdtt", num_positions=L)[1], raw)          # Di4C samples the raw weights
    same_params(load_checkpoint(path, "sdtt", ema=True, num_positions=L)[1], ema)
    torch.save({"state_dict": Holder(teacher).state_dict()}, tmp_path / "no_ema.ckpt")
    same_params(load_checkpoint(tmp_path / "no_ema.ckpt", "mdlm", num_positions=L)[1], raw)
    with pytest.raises(CheckpointError, match="ema=True but the checkpoint has no 'ema'"):
        load_checkpoint(tmp_path / "no_ema.ckpt", "mdlm", ema=True)
    with pytest.raises(CheckpointError, match="one set of weights"):
        load_checkpoint(raw_folder, "mdlm", ema=True)


def test_ema_list_is_strict_about_length_order_and_shapes(tmp_path, student):
    state = {f"backbone.{k}": v for k, v in student.state_dict().items()}
    shadow = [p.detach().clone() for p in student.parameters()]
    assert len(shadow) == 5 + 10 * BLOCKS + 5 + 4  # latent_projection last
    cases = [(shadow[:-1], "holds 33 tensors"), (shadow[1:] + shadow[:1], r"shadow_params\[0\] has shape"),
             ([s.T if s.ndim == 2 and s.shape[0] != s.shape[1] else s for s in shadow], "registration order")]
    for bad, message in cases:
        torch.save({"state_dict": state, "ema": {"decay": 0.9999, "num_updates": 1, "shadow_params": bad}},
                   tmp_path / "bad.ckpt")
        with pytest.raises(CheckpointError, match=message):
            load_checkpoint(tmp_path / "bad.ckpt", "sdtt", ema=True)


# ------------------------------------------------------------------------------------------------------ errors

def _error(path, family="sdtt", **kw):
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(path, family, **kw)
    return str(err.value)


def test_errors_name_the_key_and_the_value(tmp_path, teacher):
    state = Holder(teacher).state_dict()
    torch.save({"iter": 1, "global_epoch": 0, "model_state_dict": {"tok_emb.weight": torch.zeros(3, 2)},
                "optimizer_state_dict": {}}, tmp_path / "maskgit.pth")
    assert "family 'maskgit'" in _error(tmp_path / "maskgit.pth")
    torch.save({"model": {"net.input_conv.weight": torch.zeros(2)}, "optimizer": {}, "n_iter": 5}, tmp_path / "t.pt")
    assert "family 'tauldr'" in _error(tmp_path / "t.pt")
    torch.save({"state_dict": {"net.temb_modules.0.weight": torch.zeros(2)}}, tmp_path / "other.ckpt")
    assert "no 'backbone.*' tensors" in _error(tmp_path / "other.ckpt")

    def variant(name, **changes):
        sd = {k: v for k, v in state.items() if changes.get(k, 0) is not None}
        sd.update({k: v for k, v in changes.items() if v is not None})
        torch.save({"state_dict": sd}, tmp_path / name)
        return tmp_path / name

    assert "missing key 'backbone.blocks.1.attn_out.weight'" in _error(
        variant("m.ckpt", **{"backbone.blocks.1.attn_out.weight": None}))
    msg = _error(variant("s.ckpt", **{"backbone.output_layer.linear.bias": torch.ones(V + 1)}))
    assert "'backbone.output_layer.linear.bias' has shape (51,), expected (50,)" in msg
    assert "unexpected key(s) ['backbone.blocks.0.attn_qkv.bias']" in _error(
        variant("u.ckpt", **{"backbone.blocks.0.attn_qkv.bias": torch.ones(3 * D)}))
    assert "another rotary base" in _error(
        variant("r.ckpt", **{"backbone.rotary_emb.inv_freq": 1.0 / 500 ** (torch.arange(0, 16, 2).float() / 16)}))
    assert "unexpected key(s) ['ema_model.x']" in _error(variant("e.ckpt", **{"ema_model.x": torch.ones(1)}))
    good = variant("good.ckpt")
    torch.save({"state_dict": {k.replace("backbone.", "backbone._orig_mod."): v for k, v in state.items()}},
               tmp_path / "compiled.ckpt")  # torch.compile's prefix is removed
    same_params(load_checkpoint(tmp_path / "compiled.ckpt", "sdtt")[1], load_checkpoint(good, "sdtt")[1])
    assert "num_heads=8 (keyword argument) contradicts num_heads=4 (the tensors" in _error(good, num_heads=8)
    with pytest.raises(TypeError, match="num_head"):
        load_checkpoint(good, "sdtt", num_head=4)
    raw = good.read_bytes()
    (tmp_path / "cut.ckpt").write_bytes(raw[: len(raw) // 2])
    assert "truncated" in _error(tmp_path / "cut.ckpt")

    folder = hf_mdlm_folder(tmp_path / "hf", teacher, False)
    assert "it looks like family 'mdlm'" in _error(folder, "sdtt")
    weights = (folder / "model.safetensors").read_bytes()
    (folder / "model.safetensors").write_bytes(weights[: len(weights) - 100])
    assert "truncated" in _error(folder, "mdlm")
    wrong = sdtt_folder(tmp_path / "sd", teacher)
    assert "it looks like family 'sdtt'" in _error(wrong, "mdlm")
    config = json.loads((wrong / "config.json").read_text())
    config["model"]["hidden_size"] = 768
    (wrong / "config.json").write_text(json.dumps(config))
    assert "hidden=768 (" in _error(wrong) and "model.hidden_size) contradicts hidden=64 (the tensors" in _error(wrong)
    config["model"]["hidden_size"], config["is_di4c"] = D, True
    (wrong / "config.json").write_text(json.dumps(config))
    assert "is_di4c=True contradicts the tensors" in _error(wrong)


# ------------------------------------------------------------------------------------------------ students out

@pytest.mark.parametrize("family,suffix", [("sdtt", ".ckpt"), ("sdtt", ""), ("mdlm", ".ckpt"), ("mdlm", "")])
def test_export_round_trip_is_bit_exact_and_the_reference_loads_it(tmp_path, teacher, student, tokens, family,
                                                                    suffix):
    model = student if family == "sdtt" else teacher
    denoiser, params = load_checkpoint(lightning_ckpt(tmp_path / "in.ckpt", model), family, num_positions=L,
                                       time_conditioning=True, ema=False)
    out = export_checkpoint(denoiser, params, tmp_path / f"out{suffix}", family)
    back, params2 = load_checkpoint(out, family, ema=False)
    assert back.model_config == denoiser.model_config
    same_params(params2, params)
    # what the reference loaders do: Di4C's prepare_teacher_and_student strips every 'backbone.' from the .ckpt's
    # state_dict; from_pretrained reads model.safetensors into the wrapper; both then strict here
    if suffix == ".ckpt":
        state = torch.load(out, map_location="cpu", weights_only=True)["state_dict"]
        state = {k.replace("backbone.", ""): v for k, v in state.items()}
        reference = DIT(is_di4c=family == "sdtt")
        reference.load_state_dict(state, strict=True)
    else:
        reference = Holder(DIT(is_di4c=family == "sdtt"))
        reference.load_state_dict(load_file(out / "model.safetensors"), strict=True)
        reference = reference.backbone
    lam = LAMS if family == "sdtt" else None
    np.testing.assert_array_equal(theirs(reference.eval(), tokens, sigma_of(TIMES, True), lam),
                                  theirs(model, tokens, sigma_of(TIMES, True), lam))


def test_export_refuses_what_the_reference_cannot_hold(tmp_path, student):
    from di4c_jax.models import make_denoiser

    denoiser, params = load_checkpoint(lightning_ckpt(tmp_path / "in.ckpt", student), "sdtt", num_positions=L)
    with pytest.raises(CheckpointError, match="Di4C lambda token is family 'sdtt'"):
        export_checkpoint(denoiser, params, tmp_path / "x.ckpt", "mdlm")
    gated = make_denoiser(dict(denoiser.model_config, lam_token_gate=True))  # our learned per-head gate

    def with_gates(value):
        return dict(params, blocks={i: dict(b, lam_gate=np.full(HEADS, value, np.float32))
                                    for i, b in params["blocks"].items()})

    with pytest.raises(CheckpointError, match=r"blocks.0.lam_gate = \[0.5, 0.5"):
        export_checkpoint(gated, with_gates(0.5), tmp_path / "g.ckpt", "sdtt")
    export_checkpoint(gated, with_gates(1.0), tmp_path / "g.ckpt", "sdtt")  # gate 1 is the reference: no gate kept
    same_params(load_checkpoint(tmp_path / "g.ckpt", "sdtt")[1], params)
    ours_default = make_denoiser(dict(denoiser.model_config, time_embedding="sinusoid"))
    with pytest.raises(CheckpointError, match="needs time_embedding='mdlm'"):
        export_checkpoint(ours_default, params, tmp_path / "d.ckpt", "sdtt")
