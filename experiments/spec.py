"""The typed description of one experiment, resolved once from its ConfigDict: every default lives here.

`resolve(config)` turns the config file's ConfigDict (after command-line overrides) into an `Experiment`; a key that
no stage reads is an error naming it, so a typo never trains silently with a default.

Config layout (each section a dict):
  name, seed, teacher_workdir ('' or another run whose trained teacher is shared), progress, mesh {fsdp}
  data      {kind, ...}: the data kind's own options (experiments.setup.DATA_KINDS)
  process   {kind, ...}: a registered process (di4c_jax.processes.PROCESSES) and its fields
  model     {size, overrides, class_conditional, lam_style, lam_zero_init, lam_blocks, local_latents, local_block}
  teacher   {steps, batch_size, checkpoint_every, log_every, keep, label_drop, optim {...}, loss {TeacherLossConfig}}
  distill   {objective, rounds, loss {the objective's config; di4c: recipe + recipe fields}, teacher_weights,
             init_from, and the training fields of `teacher`}
  sample    {sampler, options {the sampler factory's keywords}, teacher_steps, student_steps, hybrid, num_samples,
             batch_size}
  evaluate  {the evaluator's options (experiments.evaluation)}
"""
from __future__ import annotations

import dataclasses
import inspect

from di4c_jax.losses import OBJECTIVES
from di4c_jax.losses.teacher import TeacherLossConfig
from di4c_jax.registry import dataclass_from_options
from di4c_jax.sampling import SAMPLERS, check_sampler_options
from di4c_jax.train import OptimConfig

RENAMED = {  # keys of earlier config.json files -> where they live now
    "distill.preset": "distill.loss.recipe",
    "sample.final": "sample.options.final",
    "sample.guidance": "sample.options.guidance",
    "sample.r_temp": "sample.options.r_temp",
}


@dataclasses.dataclass(frozen=True)
class TrainSpec:
    """One training stage (the teacher, or one distillation round)."""

    steps: int
    batch_size: int
    checkpoint_every: int
    log_every: int
    optim: OptimConfig
    keep: int = 2
    label_drop: float = 0.1  # class-conditional data: classifier-free-guidance label dropout

    def __post_init__(self):
        for name in ("steps", "batch_size", "checkpoint_every", "log_every", "keep"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not self.optim.learning_rate > 0:  # also NaN
            raise ValueError(f"optim.learning_rate must be > 0, got {self.optim.learning_rate}")
        if not 0.0 <= self.optim.ema_decay < 1.0:
            raise ValueError(f"optim.ema_decay must lie in [0, 1), got {self.optim.ema_decay}")
        if not 0.0 <= self.label_drop < 1.0:
            raise ValueError(f"label_drop must lie in [0, 1), got {self.label_drop}")


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    size: str
    overrides: dict = dataclasses.field(default_factory=dict)
    class_conditional: bool = False
    lam_style: str | None = None  # the student's lambda input; None: 'token' for a DiT, 'embed' otherwise
    lam_zero_init: bool = True
    lam_blocks: int | None = None  # a DiT student's blocks that see the lambda token (the last ones); None: all
    local_latents: int = 0  # Z > 0: a DiT student draws one of Z latents per block besides lambda (models.dit)
    local_block: int = 8  # the local latents' block of consecutive positions
    remat: str = "none"  # per-block rematerialisation policy (di4c_jax.models.remat.REMAT_POLICIES)
    compute_dtype: str = "float32"  # 'bfloat16': bf16 matmuls, float32 params, norms, logits and losses


@dataclasses.dataclass(frozen=True)
class TeacherSpec:
    train: TrainSpec
    loss: TeacherLossConfig


@dataclasses.dataclass(frozen=True)
class DistillSpec:
    train: TrainSpec
    objective: str = "di4c"
    loss: dict = dataclasses.field(default_factory=dict)  # the objective's options (OBJECTIVES make_config)
    rounds: int = 1
    teacher_weights: str = "ema"  # which weights of the teacher are distilled ('ema' as in the references)
    init_from: str = "raw"  # which teacher weights the student starts from ('raw', the references' choice)

    def __post_init__(self):
        try:
            self.config(1)  # an objective or loss field that does not exist fails here, before any training
        except (ValueError, TypeError) as err:
            raise type(err)(f"distill.loss: {err}") from None
        if self.rounds < 1:
            raise ValueError(f"distill.rounds must be >= 1, got {self.rounds}")
        for name in ("teacher_weights", "init_from"):
            if getattr(self, name) not in ("ema", "raw"):
                raise ValueError(f"distill.{name} must be 'ema' or 'raw', got {getattr(self, name)!r}")

    def config(self, round_index: int):
        """The objective's static config for round `round_index` (1-based)."""
        return OBJECTIVES.get(self.objective).make_config(dict(self.loss), round_index)


SET_BY_THE_RUN = {"process", "denoiser", "shape", "num_steps", "teacher", "teacher_last_steps"}  # not options


@dataclasses.dataclass(frozen=True)
class SampleSpec:
    num_samples: int
    batch_size: int
    teacher_steps: tuple = ()
    student_steps: tuple = ()
    hybrid: tuple = ()  # (num_steps, teacher_steps) pairs: the last teacher_steps steps by the teacher
    sampler: str = "analytic"
    options: dict = dataclasses.field(default_factory=dict)  # the sampler factory's own keywords

    def __post_init__(self):
        factory = SAMPLERS.get(self.sampler)
        accepted = {name for name, p in inspect.signature(factory).parameters.items()
                    if p.kind == p.KEYWORD_ONLY} - SET_BY_THE_RUN
        unknown = sorted(set(self.options) - accepted)
        if unknown:
            raise ValueError(f"sample.options {unknown} are not options of the {self.sampler!r} sampler; it takes "
                             f"{sorted(accepted)}")
        check_sampler_options(self.options)
        for name in ("num_samples", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"sample.{name} must be >= 1, got {getattr(self, name)}")
        for name in ("teacher_steps", "student_steps"):
            if any(n < 1 for n in getattr(self, name)):
                raise ValueError(f"sample.{name} must be step counts >= 1, got {getattr(self, name)}")
            repeated = sorted({n for n in getattr(self, name) if getattr(self, name).count(n) > 1})
            if repeated:  # each count is one sample file; a repeat would write it twice with different keys
                raise ValueError(f"sample.{name}={getattr(self, name)} repeats {repeated}; give each step count once")
        for pair in self.hybrid:
            if len(pair) != 2 or not 1 <= pair[1] <= pair[0]:
                raise ValueError(f"sample.hybrid holds (num_steps, teacher_steps) pairs with 1 <= teacher_steps <= "
                                 f"num_steps, got {pair}")


@dataclasses.dataclass(frozen=True)
class EvalSpec:
    window: int = 3  # hmm: window length of the window TV
    classifier_seed: int = 0  # digits: the feature classifier
    classifier_steps: int = 2000
    kid_subset_size: int = 200
    lm_width: int = 64  # text: the evaluator LM
    lm_layers: int = 2
    lm_steps: int = 1000
    self_bleu_samples: int = 100
    max_exact_states: int = 1_000_000  # a user's data: exact TV up to this many joint states K^D
    mi_pairs: int = 256  # position pairs of the mutual-information error (larger spaces)
    reference_rows: int = 10_000  # training rows for the noise floor and the real-data reference values
    nelbo_rows: int = 1024  # held-out rows of the held-out NELBO
    nelbo_repeats: int = 4  # Monte-Carlo draws of (t, x_t) per row
    nelbo_lambdas: int = 16  # lambda midpoints of a mixture student's marginal
    nelbo_seed: int = 0

    def __post_init__(self):
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name not in ("classifier_seed", "nelbo_seed") and value < 1:
                raise ValueError(f"evaluate.{f.name} must be >= 1, got {value}")


@dataclasses.dataclass(frozen=True)
class MeshSpec:
    fsdp: int = 1  # the ('data', 'fsdp') mesh: data takes the devices fsdp leaves


@dataclasses.dataclass(frozen=True)
class Experiment:
    name: str
    seed: int
    data: dict  # {kind, ...options}
    process: dict  # {kind, ...fields}
    model: ModelSpec
    teacher: TeacherSpec
    distill: DistillSpec
    sample: SampleSpec
    evaluate: EvalSpec
    teacher_workdir: str = ""
    progress: bool = True
    fsdp: int = 1


TOP_LEVEL = {"name": "", "seed": 0, "teacher_workdir": "", "progress": True, "mesh": {"fsdp": 1}, "evaluate": {}}
REQUIRED = ("data", "process", "model", "teacher", "distill", "sample")
DISTILL_ONLY = ("objective", "loss", "rounds", "teacher_weights", "init_from")


def _train(section: dict, what: str, extra: tuple[str, ...]) -> TrainSpec:
    fields = {f.name for f in dataclasses.fields(TrainSpec)}
    unknown = sorted(set(section) - fields - set(extra))
    if unknown:
        raise ValueError(f"{what} has no field(s) {unknown}; its fields: {sorted(fields | set(extra))}")
    options = {"optim": {}, **{k: v for k, v in section.items() if k in fields}}
    options["optim"] = _named(f"{what}.optim: ", dataclass_from_options, OptimConfig, dict(options["optim"]),
                              f"{what}.optim")
    return _named(f"{what}.", dataclass_from_options, TrainSpec, options, what)  # its messages start with a field


def _named(prefix: str, fn, *args):
    """fn(*args), a ValueError's message prefixed with whose field it is (unless it already says)."""
    try:
        return fn(*args)
    except ValueError as err:
        message = str(err)
        raise ValueError(message if message.startswith(prefix.rstrip(":. ")) else prefix + message) from None


def _tuples(sample: dict) -> dict:
    """Step lists as tuples of ints (JSON and the command line give lists)."""
    out = dict(sample)
    for name in ("teacher_steps", "student_steps"):
        if name in out:
            out[name] = tuple(int(n) for n in out[name])
    if "hybrid" in out:
        out["hybrid"] = tuple(tuple(int(v) for v in pair) for pair in out["hybrid"])
    return out


def resolve(config) -> Experiment:
    """The `Experiment` of a ConfigDict (or dict); an unknown or misplaced key is an error naming it."""
    config = {**TOP_LEVEL, **(config.to_dict() if hasattr(config, "to_dict") else dict(config))}
    unknown = sorted(set(config) - set(TOP_LEVEL) - set(REQUIRED))
    missing = [name for name in REQUIRED if name not in config]
    if unknown or missing:
        raise ValueError(f"config: unknown top-level key(s) {unknown}, missing section(s) {missing}; "
                         f"known: {sorted(set(TOP_LEVEL) | set(REQUIRED))}")
    sections = {name: dict(config[name]) for name in REQUIRED + ("mesh", "evaluate")}
    for old, new in RENAMED.items():
        section, _, key = old.partition(".")
        if key in sections[section]:
            raise ValueError(f"config key {old} is now {new} (this config was written for an earlier version)")
    for name in ("data", "process"):
        if "kind" not in sections[name]:
            raise ValueError(f"config.{name} needs a 'kind'")
    teacher, distill = ({"loss": {}, **sections[name]} for name in ("teacher", "distill"))
    model = {"overrides": {}, **sections["model"]}
    model["overrides"] = dict(model["overrides"])
    return Experiment(
        name=config["name"], seed=int(config["seed"]), data=sections["data"], process=sections["process"],
        model=dataclass_from_options(ModelSpec, model, "model"),
        teacher=TeacherSpec(_train(teacher, "teacher", ("loss",)),
                            dataclass_from_options(TeacherLossConfig, dict(teacher["loss"]), "teacher.loss")),
        distill=DistillSpec(train=_train(distill, "distill", DISTILL_ONLY),
                            **{k: distill[k] for k in DISTILL_ONLY if k in distill}),
        sample=dataclass_from_options(SampleSpec, _tuples(sections["sample"]), "sample"),
        evaluate=dataclass_from_options(EvalSpec, sections["evaluate"], "evaluate"),
        teacher_workdir=config["teacher_workdir"], progress=bool(config["progress"]),
        fsdp=int(dataclass_from_options(MeshSpec, sections["mesh"], "mesh").fsdp))
