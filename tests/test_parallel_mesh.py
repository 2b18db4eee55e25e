"""Mesh construction, FSDP sharding rule and global batch assembly (single process, 8 CPU devices)."""
import jax
import numpy as np
import pytest
from jax.sharding import AxisType
from jax.sharding import PartitionSpec as P

from di4c_jax.parallel import batch_sharding, fsdp_shardings, fsdp_spec, global_batch, make_mesh


def test_make_mesh_axes_and_types():
    mesh = make_mesh(fsdp=2)
    assert mesh.shape == {"data": 4, "fsdp": 2}
    assert mesh.axis_types == (AxisType.Auto, AxisType.Auto)
    assert make_mesh(2, 2, devices=jax.devices()[:4]).devices.size == 4


@pytest.mark.parametrize("data,fsdp", [(3, 2), (None, 3), (2, 0)])
def test_make_mesh_rejects_bad_shapes(data, fsdp):
    with pytest.raises(ValueError, match="fsdp|mesh"):
        make_mesh(data, fsdp)


@pytest.mark.parametrize("shape,fsdp,spec", [
    ((64, 128), 2, P(None, "fsdp")),      # largest divisible dim
    ((128, 64), 4, P("fsdp")),
    ((96, 96), 4, P("fsdp")),             # tie: first
    ((100, 99), 2, P("fsdp")),            # only dim 0 divisible
    ((99, 99), 2, P()),                   # nothing divisible: replicated
    ((16,), 2, P()),                      # small: replicated
    ((), 2, P()),
    ((4096,), 1, P()),                    # no fsdp axis
])
def test_fsdp_spec(shape, fsdp, spec):
    assert fsdp_spec(shape, fsdp, min_size=1024) == spec


def test_fsdp_shardings_place_shards():
    mesh = make_mesh(2, 4)
    tree = {"big": np.zeros((256, 32), np.float32), "small": np.zeros((8,), np.float32)}
    placed = jax.device_put(tree, fsdp_shardings(mesh, tree, min_size=1024))
    assert placed["big"].sharding.spec == P("fsdp")
    assert {s.data.shape for s in placed["big"].addressable_shards} == {(64, 32)}
    assert {s.data.shape for s in placed["small"].addressable_shards} == {(8,)}


def test_global_batch_single_process_splits_rows_over_all_devices():
    mesh = make_mesh(4, 2)
    local = {"x0": np.arange(16 * 3, dtype=np.int32).reshape(16, 3)}
    batch = global_batch(local, batch_sharding(mesh))
    np.testing.assert_array_equal(np.asarray(batch["x0"]), local["x0"])
    assert batch["x0"].sharding.spec == P(("data", "fsdp"))
    assert {s.data.shape for s in batch["x0"].addressable_shards} == {(2, 3)}
