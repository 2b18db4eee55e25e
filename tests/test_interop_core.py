"""di4c_jax.interop's own format and the checked key access every converter uses."""
import jax
import numpy as np
import pytest

from di4c_jax.interop import CheckpointError, load_checkpoint, save_checkpoint
from di4c_jax.interop.families import hparam
from di4c_jax.interop.files import read_safetensors, write_safetensors
from di4c_jax.interop.keys import StateDict, check_tree, flatten_params, unflatten_params
from di4c_jax.models import build_denoiser, abstract_params


@pytest.mark.parametrize("config", [
    dict(name="dit-tiny", num_states=7, num_positions=5, lam_style="token"),
    dict(name="mlp-tiny", num_states=5, num_positions=3, lam_style="embed"),
])
def test_save_load_round_trip_is_bit_exact(tmp_path, config):
    denoiser, params = build_denoiser(config, jax.random.key(1))
    save_checkpoint(denoiser, params, tmp_path / "ck")
    loaded, back = load_checkpoint(tmp_path / "ck", "di4c")
    assert loaded.model_config == denoiser.model_config
    assert (loaded.num_states, loaded.num_positions, loaded.mixture) == (
        denoiser.num_states, denoiser.num_positions, denoiser.mixture)
    assert jax.tree.structure(back) == jax.tree.structure(params)
    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(back)):
        assert a.dtype == b.dtype and np.array_equal(np.asarray(a), np.asarray(b))
    x = jax.random.randint(jax.random.key(2), (2, denoiser.num_positions), 0, denoiser.num_states)
    lam = np.array([0.3, 0.8], np.float32)
    np.testing.assert_array_equal(denoiser(params, x, np.full(2, 0.5), lam), loaded(back, x, np.full(2, 0.5), lam))


def test_load_rejects_a_folder_of_another_kind(tmp_path):
    (tmp_path / "config.json").write_text('{"hidden_dim": 768}')
    with pytest.raises(CheckpointError, match="not a di4c-jax export"):
        load_checkpoint(tmp_path, "di4c")
    with pytest.raises(ValueError, match="unknown checkpoint family 'nope'"):
        load_checkpoint(tmp_path, "nope")


def test_truncated_safetensors_is_named(tmp_path):
    path = tmp_path / "w.safetensors"
    write_safetensors({"a": np.ones((64, 64), np.float32)}, path)
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(CheckpointError, match="w.safetensors: not a readable safetensors file"):
        read_safetensors(path)


def test_state_dict_names_missing_wrong_shape_and_unexpected_keys():
    sd = StateDict({"m.a.weight": np.ones((3, 2)), "m.a.bias": np.ones(3), "m.b": np.ones(4)},
                   source="f.pt", prefix="m.")
    with pytest.raises(CheckpointError, match="f.pt: missing key 'm.c'"):
        sd.take("c")
    with pytest.raises(CheckpointError, match=r"key 'm.b' has shape \(4,\), expected \(5,\)"):
        sd.take("b", (5,))
    lin = sd.linear("a", 2, 3)
    assert lin["kernel"].shape == (2, 3) and lin["kernel"].dtype == np.float32
    with pytest.raises(CheckpointError, match=r"unexpected key\(s\) \['m.b'\]"):
        sd.finish()
    sd.finish(ignore=["b"])


def test_check_tree_and_hparam_errors():
    config = dict(name="dit-tiny", num_states=7, num_positions=5)
    params = jax.tree.map(np.zeros_like, jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), abstract_params(config)))
    check_tree(params, abstract_params(config), source="x")
    flat = flatten_params(params)
    flat["extra.w"] = np.zeros(2)
    with pytest.raises(CheckpointError, match=r"unexpected parameter\(s\) \['extra.w'\]"):
        check_tree(unflatten_params(flat), abstract_params(config), source="x")
    with pytest.raises(CheckpointError, match="num_heads=8 contradicts the tensors, which imply num_heads=16"):
        hparam({"num_heads": 8}, "num_heads", 16, 12, source="f")
    assert hparam({}, "num_heads", None, 12, source="f") == 12
    assert hparam({"num_heads": 4}, "num_heads", None, 12, source="f") == 4
