"""Checkpoint facade: resharding restore, iterator position, async + donation safety, corrupt-latest fallback."""
import logging
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from _train_toy import data_iterator, init_params, loss_fn, make_data
from di4c_jax.parallel import abstract_with_shardings, batch_sharding, fsdp_shardings, make_mesh
from di4c_jax.train import Checkpointer, OptimConfig, create_train_state, make_optimizer, make_train_step
from di4c_jax.train.checkpoint import latest_shapes, path_shapes

TX = make_optimizer(OptimConfig(learning_rate=1e-2))


def _state(mesh):
    return create_train_state(init_params, TX, jax.random.key(3), mesh)


def _assert_tree_equal(a, b):
    jax.tree.map(lambda u, v: np.testing.assert_array_equal(np.asarray(u), np.asarray(v)), a, b)


@pytest.mark.parametrize("devices,data,fsdp", [(4, 4, 1), (8, 2, 4)])
def test_restore_onto_a_different_mesh(tmp_path, devices, data, fsdp):
    state, _ = _state(make_mesh(4, 2))
    expected = jax.tree.map(np.asarray, state)
    with Checkpointer(tmp_path, save_every=1) as ckpt:
        assert ckpt.save(1, state)
        ckpt.wait()
        mesh = make_mesh(data, fsdp, devices=jax.devices()[:devices])
        target = abstract_with_shardings(state, fsdp_shardings(mesh, state))
        restored, step = ckpt.restore_latest(target)
    assert step == 1
    _assert_tree_equal(restored, expected)
    w1 = restored["params"]["w1"]
    assert w1.sharding.mesh.shape == {"data": data, "fsdp": fsdp}
    assert w1.sharding.spec == (P() if fsdp == 1 else P(None, "fsdp"))
    assert {s.data.shape for s in w1.addressable_shards} == {(64, 128 // fsdp)}


def test_async_save_is_not_corrupted_by_the_next_donated_step(tmp_path):
    """The saved values are those at save time, even though the next step donates (reuses) the buffers."""
    mesh = make_mesh(8, 1)
    state, shardings = _state(mesh)
    step = make_train_step(loss_fn, TX, ema_decay=0.9, mesh=mesh, state_shardings=shardings)
    x, y = make_data()
    batch = jax.device_put({"x": x[:16], "y": y[:16]}, batch_sharding(mesh))
    state, _ = step(state, batch)
    expected = jax.tree.map(np.asarray, state)
    with Checkpointer(tmp_path, save_every=1, async_=True) as ckpt:
        ckpt.save(1, state)
        for _ in range(3):
            state, _ = step(state, batch)
        restored, _ = ckpt.restore_latest(abstract_with_shardings(state, shardings))
    _assert_tree_equal(restored, expected)


def test_data_iterator_position_round_trips(tmp_path):
    x, y = make_data()
    it = data_iterator(x, y, batch_size=8)
    state = {"step": jnp.int32(2)}
    for _ in range(2):
        next(it)
    with Checkpointer(tmp_path, save_every=2) as ckpt:
        ckpt.save(2, state, it)
        expected_next = next(it)["y"]
        fresh = data_iterator(x, y, batch_size=8)
        _, step = ckpt.restore_latest(jax.eval_shape(lambda: state), fresh)
    assert step == 2
    np.testing.assert_array_equal(next(fresh)["y"], expected_next)


def test_save_policy_and_retention(tmp_path):
    with Checkpointer(tmp_path, max_to_keep=2, save_every=3, async_=False) as ckpt:
        saved = [s for s in range(1, 11) if ckpt.save(s, {"v": jnp.float32(s)})]
        assert ckpt.save(10, {"v": jnp.float32(10)}, force=True)
        ckpt.wait()
        assert saved == [3, 6, 9]
        assert ckpt.all_steps() == [9, 10]


@pytest.mark.parametrize("damage", ["truncate", "delete"])
def test_corrupt_latest_falls_back_to_previous(tmp_path, caplog, damage):
    target = {"w": jax.ShapeDtypeStruct((300,), jnp.float32)}
    with Checkpointer(tmp_path, max_to_keep=3, save_every=1, async_=False) as ckpt:
        ckpt.save(1, {"w": jnp.full((300,), 1.0)})
        ckpt.save(2, {"w": jnp.full((300,), 2.0)})
    data_files = [os.path.join(r, f) for r, _, fs in os.walk(tmp_path / "2" / "state") for f in fs
                  if os.path.basename(r) == "d" and "ocdbt.process" not in r]
    assert data_files, "expected OCDBT data files in the step directory"
    for f in data_files:
        if damage == "delete":
            os.remove(f)
        else:
            with open(f, "r+b") as fh:
                fh.truncate(os.path.getsize(f) // 2)
    with caplog.at_level(logging.WARNING), Checkpointer(tmp_path, save_every=1) as ckpt:
        restored, step = ckpt.restore_latest(target)
        assert step == 1
        np.testing.assert_array_equal(np.asarray(restored["w"]), np.full((300,), 1.0))
        assert "step 2" in caplog.text and "cannot be restored" in caplog.text
        # the bad step was moved aside, so training can write step 2 again
        assert ckpt.all_steps() == [1]
        assert ckpt.save(2, {"w": jnp.full((300,), 5.0)})
    assert any(p.name.startswith("corrupt.2.") for p in tmp_path.iterdir())


def test_no_restorable_checkpoint_raises_instead_of_restarting(tmp_path):
    with Checkpointer(tmp_path, save_every=1, async_=False) as ckpt:
        ckpt.save(1, {"w": jnp.zeros((3,))})
        with pytest.raises(RuntimeError, match="could be restored"):
            ckpt.restore_latest({"w": jax.ShapeDtypeStruct((4, 4), jnp.float32)})
        assert ckpt.all_steps() == [1]  # nothing moved aside when nothing restores


def test_empty_directory_restores_nothing(tmp_path):
    with Checkpointer(tmp_path) as ckpt:
        assert ckpt.restore_latest({"w": jax.ShapeDtypeStruct((3,), jnp.float32)}) is None


def test_latest_shapes_reads_a_relative_directory(tmp_path, monkeypatch):
    """The runner's pre-flight check reads a checkpoint's shapes from its metadata; a relative teacher_workdir on
    the command line must work (Orbax itself refuses relative paths)."""
    state, _ = _state(make_mesh(8, 1))
    with Checkpointer(tmp_path / "ckpt", save_every=1) as ckpt:
        assert ckpt.save(5, state)
        ckpt.wait()
    monkeypatch.chdir(tmp_path)
    step, shapes = latest_shapes("ckpt")
    assert step == 5 and shapes == path_shapes(state["params"])
    assert latest_shapes("no_such_dir") is None
