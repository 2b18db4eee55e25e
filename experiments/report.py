"""Regenerate the results tables and quality-vs-NFE plots from experiment workdirs.

    python -m experiments.report runs/quickstart runs/exact_masked ... --out docs/results

Writes <out>/results.md (one table per experiment, each with the command that produced it) and
<out>/<experiment>.png (the main metric against NFE: teacher, students, hybrids).
"""
from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from experiments.evaluation import markdown_table  # noqa: E402

MAIN_METRIC = ("tv", "fid", "nll_per_token", "gen_ppl")
STYLE = {"teacher": ("k", "o"), "student": ("tab:blue", "s"), "student2": ("tab:green", "^"),
         "hybrid": ("tab:red", "D")}


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")


def plot(results: dict, path: Path) -> str | None:
    rows = results["rows"]
    metric = next((m for m in MAIN_METRIC if rows and m in rows[0]), None)
    if metric is None:
        return None
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for model in ("teacher", "student", "student2", "hybrid"):
        pts = sorted((r["nfe"], r[metric]) for r in rows if r["model"] == model)
        if pts:
            color, marker = STYLE[model]
            ax.plot(*zip(*pts), marker=marker, color=color, label=model, linestyle="-" if model != "hybrid" else "")
    if metric == "tv" and "tv_noise_floor" in rows[0]:
        ax.axhline(rows[0]["tv_noise_floor"], color="gray", linestyle=":", label="MC noise floor")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("NFE (network evaluations)")
    ax.set_ylabel(metric)
    ax.set_title(results["experiment"], fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return metric


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("workdirs", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, default=Path("docs/results"))
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    sections = []
    for workdir in args.workdirs:
        path = workdir / "results.json"
        if not path.exists():
            print(f"skipping {workdir}: no results.json (run its evaluate stage)")
            continue
        results = json.loads(path.read_text())
        png = args.out / f"{slug(results['experiment'])}.png"
        metric = plot(results, png)
        command = (workdir / "command.txt").read_text().strip() if (workdir / "command.txt").exists() else ""
        section = markdown_table(results)
        if command:
            section += f"\ncommand: `{command}`\n"
        if metric:
            section += f"\n![{metric} vs NFE]({png.name})\n"
        sections.append(section)
    (args.out / "results.md").write_text("\n".join(sections))
    print("\n".join(sections))


if __name__ == "__main__":
    main()
