"""experiments.bench_step and its PyTorch side: the torch DiT has the JAX DiT's parameters and logits, the
reference-style objective equals `di4c_objective` (value and gradient), the reference step trains, both full steps
run at a tiny shape, and a missing torch is a one-line error. No timings are asserted."""
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from di4c_jax.models import build_denoiser, param_count
from di4c_jax.processes import build_process
from experiments import bench_step

TINY = bench_step.StepShape(hidden=32, depth=2, num_heads=2, num_positions=6, num_states=9, batch=2, num_lambda=3)
MASK_ID = TINY.num_states - 1


@pytest.fixture
def ref():
    """experiments.torch_reference, with torch on one thread (OpenMP threads crawl on a busy shared CPU)."""
    torch = pytest.importorskip("torch")
    from experiments import torch_reference
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield torch_reference
    torch.set_num_threads(threads)


def _as_torch(x):
    import torch
    return torch.from_numpy(np.asarray(x).astype(np.int64 if np.asarray(x).dtype.kind == "i" else np.float32))


@pytest.mark.parametrize("student", [False, True], ids=["teacher", "student"])
def test_torch_dit_has_the_jax_parameters_and_logits(ref, student):
    import torch

    cfg = bench_step.model_configs(TINY)[int(student)]
    denoiser, params = build_denoiser(cfg, jax.random.key(0))
    leaves, treedef = jax.tree.flatten(params)  # perturbed: zero-init layers and lambda gates would hide mistakes
    keys = jax.random.split(jax.random.key(1), len(leaves))
    params = treedef.unflatten([a + 0.2 * jax.random.normal(k, a.shape) for a, k in zip(leaves, keys)])
    model = ref.DiT.from_config(cfg).eval()
    assert sum(p.numel() for p in model.parameters()) == param_count(cfg)
    ref.load_jax_params(model, params)

    x = jax.random.randint(jax.random.key(2), (3, TINY.num_positions), 0, TINY.num_states)  # some masked
    t, lam = jnp.array([0.1, 0.5, 0.9]), jnp.array([0.2, 0.6, 0.95]) if student else None
    want = jax.jit(denoiser.apply)(params, x, t, lam, None)
    with torch.no_grad():
        got = model(_as_torch(x), _as_torch(t), None if lam is None else _as_torch(lam))
    np.testing.assert_allclose(got.numpy(), np.asarray(want), rtol=1e-4, atol=1e-4)
    process = build_process("masked", MASK_ID)
    np.testing.assert_allclose(ref.subs_logprobs(got, _as_torch(x), MASK_ID).numpy(),
                               np.asarray(process.x0_logprobs(want, x)), rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("batch", [1, 3])  # 1: consistency only; 3: items 0, 2 consistency, item 1 distillation
def test_reference_objective_equals_di4c_objective(ref, batch):
    shape = bench_step.ObjectiveShape(batch=batch, num_lambda=4, num_positions=5, num_states=7)
    inputs = bench_step.objective_inputs(shape, seed=batch)
    point = np.where(np.arange(shape.num_states) == inputs["x0"][:, :1, None], 0.0, -1e6)  # [B, 1, K]
    inputs["logp_teacher_t"][:, 0] = point[:, 0]  # position 0 unmasked in x_t: SUBS point masses (-1e6)
    inputs["logp_t"][:, :, 0] = inputs["logp_u"][:, :, 0] = point
    inputs["x_hat"][:, :, 0] = inputs["x0"][:, :1]
    loss, grad = bench_step.jax_objective(jax.device_put(inputs))
    t_loss, t_grad = bench_step.torch_objective(inputs)()
    assert abs(float(loss)) > 1e-2
    np.testing.assert_allclose(float(t_loss), float(loss), rtol=1e-5)
    np.testing.assert_allclose(t_grad.numpy(), np.asarray(grad), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("literal_teacher", [False, True])
def test_reference_step_updates_params_and_ema(ref, literal_teacher):
    import torch

    torch.manual_seed(0)
    teacher_cfg, student_cfg = bench_step.model_configs(TINY)
    teacher, student = ref.DiT.from_config(teacher_cfg), ref.DiT.from_config(student_cfg)
    for net in (teacher, student):  # non-uniform outputs, so that the loss and its gradient are not 0
        torch.nn.init.normal_(net.final_out.weight)
    before = [p.detach().clone() for p in student.parameters()]
    step = ref.ReferenceStep(student, teacher, num_lambda=TINY.num_lambda, mask_id=MASK_ID, lr=1e-2,
                             warmup_steps=0, literal_teacher=literal_teacher)
    x0 = torch.randint(0, MASK_ID, (TINY.batch, TINY.num_positions))
    expected = [b.clone() for b in before]
    for n in range(1, 6):  # a few steps: at small t x_t may have no masked token, and then the loss is 0
        assert np.isfinite(step(x0))
        decay = min(0.9999, (1 + n) / (10 + n))
        expected = [e - (1 - decay) * (e - p.detach()) for e, p in zip(expected, student.parameters())]
    assert any(not torch.equal(b, a) for b, a in zip(before, student.parameters()))
    for shadow, e in zip(step.ema, expected):
        torch.testing.assert_close(shadow, e)
    assert all(not p.requires_grad for p in teacher.parameters())


@pytest.mark.slow  # compiles the full JAX training step (~25 s on a loaded 2-core CPU)
def test_both_full_steps_run_at_a_tiny_shape(ref):
    row = bench_step.bench_step(TINY, repeats=1)
    assert row["params"]["jax_student"] == row["params"]["torch_student"] > row["params"]["jax_teacher"]
    assert row["params"]["jax_teacher"] == row["params"]["torch_teacher"]
    assert np.isfinite(row["loss"]["jax"]) and np.isfinite(row["loss"]["torch"])
    assert row["jax_ms"] > 0 and row["torch_ms"] > 0 and row["compile_s"] > 0


def test_missing_torch_is_a_one_line_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` now raises ImportError
    with pytest.raises(SystemExit, match="pip install torch"):
        bench_step.main([])
