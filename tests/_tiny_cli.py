"""Command-line arguments that shrink the quickstart to a few seconds (4 teacher steps, 2 distillation steps,
40 samples per row), for tests that run the runner in-process: `experiments.run.main(["di4c-run", ...])`."""
TINY_DATA = ["--config.data.num_train=300", "--config.data.num_eval=30"]  # the quickstart's own (exact) data
TINY = ["--config.progress=False",
        "--config.model.overrides.hidden=16", "--config.model.overrides.embed_dim=4",
        "--config.model.overrides.num_layers=1", "--config.teacher.steps=4", "--config.teacher.batch_size=8",
        "--config.teacher.checkpoint_every=2", "--config.teacher.log_every=2", "--config.distill.steps=2",
        "--config.distill.batch_size=8", "--config.distill.checkpoint_every=2", "--config.distill.log_every=1",
        "--config.distill.loss.num_lambda=4", "--config.sample.teacher_steps=(2,)",
        "--config.sample.student_steps=(2,)", "--config.sample.hybrid=()", "--config.sample.num_samples=40",
        "--config.sample.batch_size=40"]
