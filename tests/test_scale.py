"""experiments.scale: the ahead-of-time step tables (tiny setting on the 8 simulated devices), and the memory of
the full Di4C training step staying flat in N once the lambdas are chunked."""
import json

import pytest

from experiments import scale

pytestmark = pytest.mark.slow


def test_contract_fields_and_memory_flat_in_n(tmp_path):
    path = tmp_path / "out.json"
    small = scale.measure("tiny", num_lambda=4, devices=8, chunk=1)
    large = scale.measure("tiny", num_lambda=16, devices=8, chunk=1)
    unchunked = scale.measure("tiny", num_lambda=16, devices=8, chunk=16)
    path.write_text(json.dumps(large))
    out = json.loads(path.read_text())
    for field in ("setting", "num_lambda", "devices", "mesh", "per_device_bytes", "temp_bytes", "flops_per_step"):
        assert field in out
    assert out["forward_flops_per_item"] > 0 and out["chunk"] == 1
    assert out["devices"] == 8 and out["mesh"] == {"data": 1, "fsdp": 8} and out["num_lambda"] == 16
    assert out["per_device_bytes"] == out["argument_bytes"] + out["output_bytes"] + out["temp_bytes"]
    assert large["flops_per_step"] > 3 * small["flops_per_step"] > 0 and large["xla_flops"] > 0  # the work grows

    assert large["temp_bytes"] <= 1.25 * small["temp_bytes"]  # with N, the memory does not
    assert unchunked["temp_bytes"] > 2 * large["temp_bytes"]
