"""A released-format teacher end to end: an sdtt-layout folder (safetensors + Hydra config.json, as the
jdeschena/sdtt revisions) -> experiments.convert -> a Di4C run on GPT-2-style BPE text (a BPE trained on standard-
library sources, documents wrapped and packed as MDLM does) -> samples and the table, exit 0."""
import json

import jax
import pytest

from _tiny_bpe import stdlib_texts, train_tiny_bpe
from _tiny_cli import TINY
from di4c_jax.interop import export_checkpoint, load_checkpoint
from di4c_jax.interop.mdlm import REFERENCE_OPTIONS
from di4c_jax.models import build_denoiser
from experiments import convert, export, run as runner

SEQ_LEN = 16


@pytest.mark.slow
def test_sdtt_folder_to_distilled_student_on_bpe_text(tmp_path, capsys):
    tokenizer = train_tiny_bpe(tmp_path)                              # 399 BPE ids + <|endoftext|> = 400
    config = dict(kind="dit", num_states=401, num_positions=SEQ_LEN, hidden=32, depth=2, num_heads=4, cond_dim=16,
                  mlp_dim=128, time_conditioning=False, dropout=0.0, **REFERENCE_OPTIONS)
    denoiser, params = build_denoiser(config, jax.random.key(0))
    export_checkpoint(denoiser, params, tmp_path / "sdtt_revision", "sdtt")
    assert sorted(p.name for p in (tmp_path / "sdtt_revision").iterdir()) == ["config.json", "model.safetensors"]

    assert convert.main(["--family", "sdtt", "--checkpoint", str(tmp_path / "sdtt_revision"),
                         "--out", str(tmp_path / "teacher_workdir")]) == 0
    converted, back = load_checkpoint(tmp_path / "teacher_workdir" / "teacher" / "released", "di4c")
    assert converted.num_states == 401 and not converted.mixture

    docs = tmp_path / "docs"
    docs.mkdir()
    for i, text in enumerate(stdlib_texts()):
        (docs / f"{i}.txt").write_text(text)
    workdir = tmp_path / "run"
    status = runner.main(["di4c-run", "--config=experiments/configs/quickstart.py:di4c", f"--data={docs}",
                          f"--tokenizer=bpe:{tokenizer}", f"--workdir={workdir}",
                          *TINY, f"--config.data.seq_len={SEQ_LEN}",
                          f"--config.teacher_workdir={tmp_path / 'teacher_workdir'}"])
    out = capsys.readouterr().out
    assert status == 0, out
    assert "released checkpoint" in out and "| student | 2 |" in out
    assert not (workdir / "teacher").exists()
    rows = json.loads((workdir / "results.json").read_text())["rows"]
    assert {r["model"] for r in rows} == {"teacher", "student"}

    # the distilled student back out in the reference's layout: a mixture network with the lambda token
    assert export.main(["--workdir", str(workdir), "--family", "sdtt", "--out", str(tmp_path / "student_out")]) == 0
    student, student_params = load_checkpoint(tmp_path / "student_out", "sdtt")
    assert student.mixture and student.num_states == 401
    assert student.model_config["lam_style"] == "token"
    for name, value in back.items():   # the student started from the teacher and kept its shapes
        assert jax.tree.structure(value) == jax.tree.structure(student_params[name]), name
