"""experiments.spec.resolve: the typed experiment description, its defaults and its errors."""
import pytest


def test_resolve_rejects_unknown_misplaced_and_renamed_keys():
    from experiments.configs import quickstart
    from experiments.spec import resolve

    c = quickstart.get_config("di4c")
    c.sample.samplesize = 3
    with pytest.raises(ValueError, match=r"sample has no field\(s\) \['samplesize'\]"):
        resolve(c)
    c = quickstart.get_config("di4c")
    c.distill.loss.num_time_bins = 32  # an sdtt field under the tauldr recipe
    with pytest.raises(ValueError, match="'num_time_bins' does not apply to the tauldr Di4C recipe.*sdtt"):
        resolve(c)
    c = quickstart.get_config("di4c")
    c.distill.preset = "tauldr"  # an earlier version's key
    with pytest.raises(ValueError, match="distill.preset is now distill.loss.recipe"):
        resolve(c)
    c = quickstart.get_config("di4c")
    c.distill.loss.time_grid = 32
    with pytest.raises(ValueError, match="'time_grid'.*now num_time_bins"):
        resolve(c)
    c = quickstart.get_config("di4c")
    c.sample.options.time_wrap = "sine"  # a misspelt sampler option: named, with the ones the sampler takes
    with pytest.raises(ValueError, match=r"sample.options \['time_wrap'\].*'analytic'.*'time_warp'"):
        resolve(c)
    c = quickstart.get_config("di4c")
    c.sample.options.time_warp = "cosine"
    with pytest.raises(ValueError, match="unknown time warp 'cosine'"):
        resolve(c)
    c = quickstart.get_config("di4c")
    c.teacher.optim.learning_rat = 1e-3
    with pytest.raises(ValueError, match=r"teacher.optim has no field\(s\) \['learning_rat'\]"):
        resolve(c)


def test_resolve_keeps_every_default_in_the_spec():
    from experiments.configs import quickstart
    from experiments.spec import resolve

    exp = resolve(quickstart.get_config("di4c"))
    assert exp.distill.rounds == 1 and exp.distill.teacher_weights == "ema" and exp.sample.sampler == "analytic"
    assert exp.sample.options == {}  # the analytic sampler's own defaults (time_warp 'none')
    assert exp.teacher.train.keep == 2 and exp.evaluate.window == 3 and exp.fsdp == 1
    assert exp.distill.config(1).min_delta == 0.02 and exp.distill.config(1).num_lambda == 64


BENCHMARK_ARGS = [("quickstart", ""), ("exact", "uniform"), ("text_hmm", ""), ("text_pystdlib", "cpu"),
                  ("digits_pixels", "cpu"), ("digits_maskgit", "cpu,ancestral"), ("digits_pixels", "default")]


@pytest.mark.parametrize("module_name, arg", BENCHMARK_ARGS)
def test_benchmark_configs_distil_with_cdm_one_step_unless_di4c_is_asked_for(module_name, arg):
    """The default student objective is CDM one-step with the Di4C variant's lambda count, steps, batch and lr;
    ':di4c' differs from it in the objective, its loss and its rounds only."""
    import importlib

    from experiments.configs.base import CDM_ONE_STEP
    from experiments.spec import resolve

    module = importlib.import_module(f"experiments.configs.{module_name}")
    cdm, di4c = module.get_config(arg), module.get_config(f"{arg},di4c" if arg else "di4c")
    assert cdm.distill.objective == "cdm" and cdm.distill.rounds == 1 and di4c.distill.objective == "di4c"
    assert cdm.distill.loss.to_dict() == dict(CDM_ONE_STEP, num_lambda=di4c.distill.loss.num_lambda)
    for field in ("steps", "batch_size", "optim", "init_from"):
        assert cdm.distill[field] == di4c.distill[field]
    for section in ("data", "process", "teacher", "sample", "evaluate"):
        assert cdm[section] == di4c[section]
    # the network too, but for the CDM student's local latents (text_hmm), which Di4C does not take
    assert dict(cdm.model.to_dict(), local_latents=0) == dict(di4c.model.to_dict(), local_latents=0)
    assert di4c.model.get("local_latents", 0) == 0
    recipe = resolve(cdm).distill.config(1)
    assert (recipe.mode, recipe.num_teacher_steps, recipe.num_samples) == ("one_step", 32, 4)


@pytest.mark.parametrize("benchmark, arg", [("quickstart", ""), ("text_hmm", ""), ("digits_pixels", "cpu"),
                                            ("digits_maskgit", "cpu"), ("text_pystdlib", "cpu")])
def test_compare_cdm_one_step_is_the_benchmark_default_student(benchmark, arg):
    """So the CDM rows measured with `compare.py:cdm_one_step,<benchmark>` are the default config's student (the
    quickstart comparison alone runs at lr 3e-4). Each benchmark's config module has the benchmark's name."""
    import importlib

    from experiments.configs import compare

    default = importlib.import_module(f"experiments.configs.{benchmark}").get_config(arg).distill
    compared = compare.get_config(f"cdm_one_step,{benchmark}").distill
    if benchmark == "quickstart":
        assert compared.optim.learning_rate == 3e-4
        compared.optim.learning_rate = default.optim.learning_rate
    assert compared.to_dict() == default.to_dict()
    assert compare.get_config(f"cdm_one_step,{benchmark}").model == \
        importlib.import_module(f"experiments.configs.{benchmark}").get_config(arg).model


def test_config_arguments_are_checked_by_name():
    from experiments.configs import digits_maskgit, exact, quickstart, text_hmm

    assert digits_maskgit.get_config("di4c,ancestral,cpu").sample.sampler == "analytic"
    with pytest.raises(ValueError, match=r"unknown size or sampler or objective 'gpu'.*objective: cdm_one_step, di4c"):
        digits_maskgit.get_config("gpu")
    with pytest.raises(ValueError, match="names two of process: 'masked' and 'uniform'"):
        exact.get_config("masked,uniform")
    with pytest.raises(ValueError, match=r"unknown objective 'cdm' in config argument 'cdm'"):
        text_hmm.get_config("cdm")
    with pytest.raises(ValueError, match=r"sdtt recipe is a Di4C recipe: quickstart.py:di4c,sdtt"):
        quickstart.get_config("sdtt")
    assert quickstart.get_config("di4c,sdtt").distill.loss.recipe == "sdtt"


def test_local_latents_are_a_dit_students_option():
    """model.local_latents reaches a DiT student (also a released teacher's) and is refused, by name, elsewhere."""
    from experiments import released

    with pytest.raises(ValueError, match="local_latents=16 applies to DiT students; this student is a 'unet'"):
        released.student_config({"kind": "unet"}, lam_style="embed", lam_zero_init=True, local_latents=16)
    cfg = released.student_config({"kind": "dit"}, lam_style=None, lam_zero_init=False, local_latents=16,
                                  local_block=4)
    assert (cfg["lam_style"], cfg["local_latents"], cfg["local_block"]) == ("token", 16, 4)
    assert "local_latents" not in released.student_config({"kind": "dit"}, lam_style=None, lam_zero_init=False)
