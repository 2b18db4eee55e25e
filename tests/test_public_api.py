"""The public API's shape: keyword-only parameters after `key`, a version, public-only __all__, docstrings that cite
nothing outside the repository, config defaults read in one place."""
import inspect
import re
import tomllib
from pathlib import Path

import pytest

import di4c_jax
from di4c_jax import eval as eval_lib, losses, models, processes, sampling, train
from di4c_jax.sampling import Sampler

ROOT = Path(__file__).resolve().parents[1]


def _functions(module):
    for name in module.__all__:
        obj = getattr(module, name)
        if inspect.isfunction(obj):
            yield name, obj


@pytest.mark.parametrize("module", [losses, sampling], ids=lambda m: m.__name__)
def test_every_public_function_taking_a_key_is_keyword_only_after_it(module):
    checked = 0
    for name, fn in _functions(module):
        params = list(inspect.signature(fn).parameters.values())
        if params and params[0].name == "key":
            rest = [p.name for p in params[1:] if p.kind is not inspect.Parameter.KEYWORD_ONLY]
            assert not rest, f"{module.__name__}.{name}: positional parameters after key: {rest}"
            checked += 1
    assert checked >= 3


@pytest.mark.parametrize("fn", [losses.di4c_objective, losses.cdm_objective, sampling.make_analytic_sampler,
                                sampling.make_maskgit_sampler, sampling.make_tau_leaping_sampler],
                         ids=lambda f: f.__name__)
def test_objectives_and_sampler_factories_are_keyword_only(fn):
    kinds = {p.kind for p in inspect.signature(fn).parameters.values()}
    assert kinds == {inspect.Parameter.KEYWORD_ONLY}


def test_the_shared_confidence_kernel_is_keyword_only_after_key():
    params = list(inspect.signature(processes.confidence_step).parameters.values())
    assert params[0].name == "key" and all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in params[1:])


def test_sampler_call_is_keyword_only_after_key():
    params = list(inspect.signature(Sampler.__call__).parameters.values())[1:]
    assert params[0].name == "key"
    assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in params[1:])


def test_public_losses_and_samplers_document_args_and_returns():
    for module in (losses, sampling):
        for name, fn in _functions(module):
            if name.endswith("_loss") or name.endswith("_sample"):
                doc = inspect.getdoc(fn) or ""
                assert "Args:" in doc and "Returns:" in doc, f"{module.__name__}.{name} lacks Args/Returns"


def test_version_matches_pyproject_and_all_lists_public_names():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert di4c_jax.__version__ == project["version"]
    for module in (di4c_jax, losses, sampling, processes, models, eval_lib, train):
        for name in module.__all__:
            assert hasattr(module, name), f"{module.__name__}.__all__ names missing {name}"
            assert not name.startswith("_") or name == "__version__"


def test_no_file_cites_documents_outside_the_repository():
    pattern = re.compile(r"reference-(masked|tauldr|checkpoints)\.md|papers\.md|findings\.md|jax-style\.md|"
                         r"shared/spec")
    offenders = [f"{path.relative_to(ROOT)}:{i}" for folder in ("di4c_jax", "experiments")
                 for path in (ROOT / folder).rglob("*.py")
                 for i, line in enumerate(path.read_text().splitlines(), 1) if pattern.search(line)]
    assert not offenders, offenders


def test_experiment_defaults_live_in_one_place():
    """`.get(key, default)` on configs is what scatters defaults; experiments/ keeps at most 5 (report tables)."""
    calls = [f"{path.name}:{i}" for path in (ROOT / "experiments").rglob("*.py")
             for i, line in enumerate(path.read_text().splitlines(), 1) if re.search(r"\.get\([^()]*,", line)]
    assert len(calls) <= 5, calls
