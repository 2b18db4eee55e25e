"""Regenerate the results tables and quality-vs-NFE plots from experiment workdirs.

    python -m experiments.report runs/quickstart runs/exact_masked ... --out docs/results
    python -m experiments.report --compare runs/quickstart runs/compare_sdtt ... --out docs/results

Writes <out>/results.md (one table per experiment, each with the command that produced it) and
<out>/<experiment>.png (the main metric against NFE: teacher, students, hybrids) and copies each run's sample grids
(<out>/<experiment>__<model>_<n>steps.png, shown in results.md). With --compare, writes <out>/<name>.md
(default compare.md) instead: one row per (experiment, model), one column per step count, one table per metric
(experiments that share a benchmark, e.g. the objectives of configs/compare.py on one teacher).
"""
from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from experiments.cli import guarded  # noqa: E402
from experiments.evaluation import format_value, markdown_table, model_rank  # noqa: E402
from experiments.stages import student_name  # noqa: E402

MAIN_METRIC = ("tv", "fid", "window_tv", "gen_ppl", "marginal_kl")
STYLE = {"teacher": ("k", "o"), "student": ("tab:blue", "s"), "hybrid": ("tab:red", "D")}
LATER_ROUND_STYLE = ("tab:green", "^")  # student<r>, r >= 2


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")


def plot(results: dict, path: Path) -> str | None:
    """The main metric (the first of MAIN_METRIC the rows have) against NFE, one line per model, with the noise
    level where the results have one, saved as PNG at `path`; returns the metric (None, and no file, if none)."""
    rows = results["rows"]
    metric = next((m for m in MAIN_METRIC if rows and m in rows[0]), None)
    if metric is None:
        return None
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for model in sorted({r["model"] for r in rows}, key=model_rank):
        pts = sorted((r["nfe"], r[metric]) for r in rows if r["model"] == model)
        if pts:
            color, marker = STYLE.get(model, LATER_ROUND_STYLE)
            ax.plot(*zip(*pts), marker=marker, color=color, label=model, linestyle="-" if model != "hybrid" else "")
    reference = results.get("reference", {})
    floor = rows[0].get("tv_noise_floor") if metric == "tv" else next(
        (v for k, v in reference.items() if k.endswith("tv_of_true_samples")), None)
    if floor is not None and metric.endswith("tv"):
        ax.axhline(floor, color="gray", linestyle=":", label="noise level (true samples)")
    if reference.get(f"{metric}_of_train_rows") is not None:  # a user's data: what real rows score
        ax.axhline(reference[f"{metric}_of_train_rows"], color="gray", linestyle=":", label="training rows")
    ax.set_xscale("log", base=2)
    if metric in ("tv", "kl", "window_tv", "marginal_kl"):
        ax.set_yscale("log")
    ax.set_xlabel("NFE (network evaluations)")
    ax.set_ylabel(metric)
    ax.set_title(results["experiment"], fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return metric


def sample_grids(workdir: Path, out: Path, stem: str) -> str:
    """Copy the run's sample grids (samples/<model>_<n>steps.png) next to the report; Markdown that shows them."""
    grids = sorted((workdir / "samples").glob("*.png"),
                   key=lambda p: (model_rank(p.stem.split("_")[0]), int(re.sub(r"\D", "", p.stem.split("_")[-1]))))
    if not grids:
        return ""
    lines = ["", "| " + " | ".join(p.stem for p in grids) + " |", "|---" * len(grids) + "|"]
    for p in grids:
        shutil.copyfile(p, out / f"{stem}__{p.name}")
    lines.append("| " + " | ".join(f"![{p.stem}]({stem}__{p.name})" for p in grids) + " |")
    return "\n".join(lines) + "\n"


def train_seconds(stage_dir: Path) -> float | None:
    """Training wall time of a stage from its metrics.jsonl windows (sum of window steps / steps_per_sec)."""
    path = stage_dir / "metrics.jsonl"
    if not path.exists():
        return None
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    total, last = 0.0, 0
    for r in rows:
        total += (r["step"] - last) / max(r["steps_per_sec"], 1e-9)
        last = r["step"]
    return total


def distill_seconds(workdir: Path, model: str) -> float | None:
    """Training wall time behind `model`: the teacher's own stage, or every distillation round up to it."""
    if model == "teacher":
        return train_seconds(workdir / "teacher")
    last = model_rank("student" if model == "hybrid" else model)[1]
    times = [train_seconds(workdir / student_name(r)) for r in range(1, last + 1)]
    return None if None in times else sum(times)


def compare_table(all_results: list[tuple[dict, str, Path]], metrics: list[str] | None = None) -> str:
    """One table per metric (default: the main one): a row per (experiment, model), a column per NFE, plus
    training time; then the commands."""
    first = all_results[0][0]["rows"][0]
    metrics = metrics or [next(m for m in MAIN_METRIC if m in first)]
    cells, nfes, order, seconds = {}, set(), [], {}
    for results, command, workdir in all_results:
        for r in results["rows"]:
            label = r["model"] if r["model"] == "teacher" else f"{results['experiment']}: {r['model']}"
            if r["model"] == "hybrid":
                label += f" (last {r['teacher_nfe']} teacher)"
            if label not in cells:
                cells[label], _ = {}, order.append((label, command))
                seconds[label] = distill_seconds(workdir, r["model"])
            cells[label][r["nfe"]] = r
            nfes.add(r["nfe"])
    cols = sorted(nfes)
    lines = []
    for metric in metrics:
        lines += [f"{metric} by NFE; train s = training wall time (a student: all its rounds)", "",
                  "| model | " + " | ".join(map(str, cols)) + " | train s |", "|---|" + "---|" * (len(cols) + 1)]
        for label, _ in order:
            secs = seconds.get(label)
            row = cells[label]
            lines.append(f"| {label} | " + " | ".join(f"{row[n][metric]:.4g}" if n in row else "" for n in cols)
                         + f" | {'' if secs is None else f'{secs:.0f}'} |")
        lines.append("")
    references = {k: v for results, _, _ in all_results for k, v in results.get("reference", {}).items()}
    if references:
        lines += ["reference: " + ", ".join(f"{k} = {format_value(v)}" for k, v in references.items()), ""]
    lines += ["commands:"] + [f"- `{c}`" for c in dict.fromkeys(c for _, c in order if c)]
    return "\n".join(lines) + "\n"


def _load(workdir: Path) -> tuple[dict, str, Path] | None:
    path = workdir / "results.json"
    if not path.exists():
        print(f"skipping {workdir}: no results.json (run its evaluate stage)")
        return None
    history = (workdir / "command.txt").read_text().splitlines() if (workdir / "command.txt").exists() else []
    command = history[0] if history else ""  # the command that created the run (later lines: reruns, resumes)
    return json.loads(path.read_text()), command, workdir


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("workdirs", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, default=Path("docs/results"))
    parser.add_argument("--compare", action="store_true", help="one combined table (see the module docstring)")
    parser.add_argument("--name", default="compare", help="file stem of the --compare table (<out>/<name>.md)")
    parser.add_argument("--metrics", default="", help="--compare: comma-separated metrics, one table each "
                                                       "(default: the main metric)")
    parser.add_argument("--debug", action="store_true", help="on an error, show its traceback instead of one line")
    args = parser.parse_args(argv)
    loaded = [x for x in map(_load, args.workdirs) if x is not None]
    if not loaded:
        raise FileNotFoundError(f"none of {[str(w) for w in args.workdirs]} holds a results.json: expected the "
                                f"workdirs of finished experiments")
    args.out.mkdir(parents=True, exist_ok=True)
    if args.compare:
        table = compare_table(loaded, [m for m in args.metrics.split(",") if m] or None)
        (args.out / f"{args.name}.md").write_text(table)
        print(table)
        return
    sections = []
    for results, command, workdir in loaded:
        png = args.out / f"{slug(results['experiment'])}.png"
        metric = plot(results, png)
        section = markdown_table(results)
        if command:
            section += f"\ncommand: `{command}`\n"
        if metric:
            section += f"\n![{metric} vs NFE]({png.name})\n"
        section += sample_grids(workdir, args.out, slug(results["experiment"]))
        sections.append(section)
    (args.out / "results.md").write_text("\n".join(sections))
    print("\n".join(sections))


def cli() -> None:
    """The `di4c-report` console script: bad input is one line `error: ...` and exit status 2."""
    sys.exit(guarded(main, sys.argv))


if __name__ == "__main__":
    cli()
