"""Every benchmark config runs end to end (train teacher, distil, sample, evaluate) at a tiny size."""
import json

import numpy as np
import pytest

from experiments import report
from experiments.configs import compare, digits_maskgit, digits_pixels, text_hmm, text_pystdlib
from experiments.run import run
from experiments.spec import resolve

pytestmark = pytest.mark.slow


def shrink(c, *, samples=40):
    c.progress = False
    c.teacher.update(steps=4, batch_size=8, checkpoint_every=2, log_every=2)
    c.distill.update(steps=2, batch_size=8, checkpoint_every=2, log_every=1)
    c.sample.update(teacher_steps=(2,), student_steps=(2,), num_samples=samples, batch_size=samples)
    if "hybrid" in c.sample:
        c.sample.hybrid = ((2, 1),)
    return c


def tiny_dit(c):
    """A 1-layer width-16 DiT with 2 lambda samples (the DiT configs' model knobs)."""
    c.model.overrides.update(hidden=16, depth=1, num_heads=2)
    c.distill.loss.num_lambda = 2
    return c


def digits_pixels_tiny():
    c = shrink(digits_pixels.get_config())
    c.model.overrides.update(ch=8, ch_mult=(1,), attn_resolutions=())
    c.distill.loss.num_lambda = 2
    c.evaluate.update(classifier_steps=20, kid_subset_size=20)
    return c


def digits_pixels_cpu_di4c_tiny():
    c = tiny_dit(shrink(digits_pixels.get_config("cpu,di4c")))
    c.evaluate.update(classifier_steps=20, kid_subset_size=20)
    return c


def digits_maskgit_tiny(arg="default"):
    c = tiny_dit(shrink(digits_maskgit.get_config(arg)))
    c.evaluate.update(classifier_steps=20, kid_subset_size=20)
    return c


def digits_maskgit_di4c_tiny():
    return digits_maskgit_tiny("di4c")


def text_hmm_di4c_tiny():
    c = tiny_dit(shrink(text_hmm.get_config("di4c")))
    c.data.update(num_train=200, num_eval=40)
    c.distill.rounds = 2  # the config's one round plus di4c^2, so the round pipeline runs on a DiT too
    return c


def text_pystdlib_tiny():
    c = tiny_dit(shrink(text_pystdlib.get_config()))
    c.data.update(seq_len=16, max_files=60)  # about 1 file in 20 is held out
    c.evaluate.update(lm_steps=5, lm_width=16, lm_layers=1, self_bleu_samples=10)
    return c


@pytest.mark.parametrize("make, metric, models", [
    (digits_pixels_tiny, "fid", {"teacher", "student", "hybrid"}),
    (digits_pixels_cpu_di4c_tiny, "fid", {"teacher", "student", "hybrid"}),
    (digits_maskgit_tiny, "class_accuracy", {"teacher", "student"}),
    (digits_maskgit_di4c_tiny, "class_accuracy", {"teacher", "student"}),
    (text_hmm_di4c_tiny, "nll_per_token", {"teacher", "student", "student2", "hybrid"}),
    (text_pystdlib_tiny, "gen_ppl", {"teacher", "student", "hybrid"}),  # CDM one-step: one round
], ids=["digits_pixels", "digits_pixels_cpu_di4c", "digits_maskgit", "digits_maskgit_di4c", "text_hmm_di4c",
        "text_pystdlib"])
def test_benchmark_config_runs_end_to_end(make, metric, models, tmp_path):
    results = run(make(), tmp_path)
    assert {r["model"] for r in results["rows"]} == models
    assert all(metric in r for r in results["rows"])
    assert json.loads((tmp_path / "results.json").read_text())["rows"]
    previews = list((tmp_path / "samples").glob("*.png")) + list((tmp_path / "samples").glob("*.txt"))
    assert previews or metric == "nll_per_token"
    if any(p.suffix == ".png" for p in previews):
        report.main([str(tmp_path), "--out", str(tmp_path / "report")])
        grids = list((tmp_path / "report").glob("*__*steps.png"))
        assert len(grids) == len(list((tmp_path / "samples").glob("*.png")))
        assert all(g.name in (tmp_path / "report" / "results.md").read_text() for g in grids)
    if metric == "nll_per_token":
        ref = results["reference"]
        assert 0 < ref["hmm_entropy_rate_nats"] and 0 < ref["data_unigram_entropy"] <= np.log(16)
        assert 0 < ref["window3_tv_of_true_samples"] < min(r["window_tv"] for r in results["rows"]) <= 1


@pytest.mark.parametrize("benchmark, module, size", [("", compare.quickstart, None),
                                                     (",quickstart", compare.quickstart, None),
                                                     (",text_hmm", text_hmm, None),
                                                     (",digits_pixels", digits_pixels, "cpu"),
                                                     (",digits_maskgit", digits_maskgit, "cpu"),
                                                     (",text_pystdlib", text_pystdlib, "cpu")])
@pytest.mark.parametrize("objective", sorted(compare.OBJECTIVES))
def test_compare_objectives_build(objective, benchmark, module, size):
    c = compare.get_config(objective + benchmark)
    assert c.distill.objective in ("di4c", "sdtt", "cdm", "trajectory") and c.sample.teacher_steps == ()
    # The trajectory student is sampled the way its loss trains it: one lambda per trajectory.
    assert c.sample.options.get("share_lam", False) == (objective == "trajectory")
    base = module.get_config(f"{size},di4c" if size else "di4c")
    assert c.data == base.data and c.distill.steps == base.distill.steps and c.process == base.process
    # Only the quickstart comparison moves the lr (to its first distillation lr, at which section 2 ran).
    assert c.distill.optim.learning_rate == (3e-4 if benchmark in ("", ",quickstart") else
                                             base.distill.optim.learning_rate)
    if c.distill.objective != "sdtt":
        assert c.distill.loss.num_lambda == base.distill.loss.num_lambda


def test_compare_rejects_unknown_names():
    with pytest.raises(ValueError, match="unknown objective"):
        compare.get_config("sdt")
    with pytest.raises(ValueError, match="unknown benchmark"):
        compare.get_config("sdtt,cifar")


@pytest.mark.parametrize("module", [digits_pixels, digits_maskgit, text_pystdlib])
def test_cpu_size_shrinks_the_model_and_rejects_unknown_sizes(module):
    default, cpu = module.get_config(), module.get_config("cpu")
    assert cpu.model.overrides.hidden == 64 and cpu.distill.steps < default.distill.steps
    assert cpu.data == default.data and cpu.process == default.process
    with pytest.raises(ValueError, match="unknown size"):
        module.get_config("gpu")


@pytest.mark.parametrize("size", ["default", "cpu"])
def test_maskgit_ancestral_variant_changes_only_the_sampler(size):
    maskgit, ancestral = digits_maskgit.get_config(size), digits_maskgit.get_config(size + ",ancestral")
    sample = resolve(ancestral).sample
    assert sample.sampler == "analytic" and sample.options == {"final": "sample"}
    assert resolve(maskgit).sample.sampler == "maskgit"
    for section in ("data", "process", "model", "teacher", "distill", "evaluate"):
        assert ancestral[section] == maskgit[section]
    assert ancestral.sample.teacher_steps == maskgit.sample.teacher_steps
    with pytest.raises(ValueError, match="unknown size or sampler or objective 'confidence'"):
        digits_maskgit.get_config(size + ",confidence")
