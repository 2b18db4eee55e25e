"""experiments.spec.resolve: the typed experiment description, its defaults and its errors."""
import pytest


def test_resolve_rejects_unknown_misplaced_and_renamed_keys():
    from experiments.configs import quickstart
    from experiments.spec import resolve

    c = quickstart.get_config()
    c.sample.samplesize = 3
    with pytest.raises(ValueError, match=r"sample has no field\(s\) \['samplesize'\]"):
        resolve(c)
    c = quickstart.get_config()
    c.distill.loss.num_time_bins = 32  # an sdtt field under the tauldr recipe
    with pytest.raises(ValueError, match="'num_time_bins' does not apply to the tauldr Di4C recipe.*sdtt"):
        resolve(c)
    c = quickstart.get_config()
    c.distill.preset = "tauldr"  # an earlier version's key
    with pytest.raises(ValueError, match="distill.preset is now distill.loss.recipe"):
        resolve(c)
    c = quickstart.get_config()
    c.distill.loss.time_grid = 32
    with pytest.raises(ValueError, match="'time_grid'.*now num_time_bins"):
        resolve(c)
    c = quickstart.get_config()
    c.sample.options.time_wrap = "sine"  # a misspelt sampler option: named, with the ones the sampler takes
    with pytest.raises(ValueError, match=r"sample.options \['time_wrap'\].*'analytic'.*'time_warp'"):
        resolve(c)
    c = quickstart.get_config()
    c.sample.options.time_warp = "cosine"
    with pytest.raises(ValueError, match="unknown time warp 'cosine'"):
        resolve(c)
    c = quickstart.get_config()
    c.teacher.optim.learning_rat = 1e-3
    with pytest.raises(ValueError, match=r"teacher.optim has no field\(s\) \['learning_rat'\]"):
        resolve(c)


def test_resolve_keeps_every_default_in_the_spec():
    from experiments.configs import quickstart
    from experiments.spec import resolve

    exp = resolve(quickstart.get_config())
    assert exp.distill.rounds == 1 and exp.distill.teacher_weights == "ema" and exp.sample.sampler == "analytic"
    assert exp.sample.options == {}  # the analytic sampler's own defaults (time_warp 'none')
    assert exp.teacher.train.keep == 2 and exp.evaluate.window == 3 and exp.fsdp == 1
    assert exp.distill.config(1).min_delta == 0.02 and exp.distill.config(1).num_lambda == 64
