"""The whole demo pipeline (`byoc pipeline`), this tree against a baseline commit, side by side.

The README's pipeline figure must be what this prints on a quiet machine (issue 25). Each variant
runs `byoc pipeline --profile PROFILE` from scratch in its own temporary run dir and cwd; the
baseline runs from a `git worktree` of ``--baseline`` (the commit before the change you measure) with
this tree's virtual environment (its code first on PYTHONPATH, which every job and server the
pipeline starts inherits). Variants alternate, ``--rounds``
times, so a change in the machine's load hits both. The table gives each step's seconds (from the
run's state.json), the total wall time, the ratio, the test accuracy, and the load average before
each run: a figure measured at load above ~0.5 on 2 cores is not the README's figure.

    .venv/bin/python -m bench.bench_pipeline --baseline <commit>                 # demo profile, 1 round
    .venv/bin/python -m bench.bench_pipeline --baseline <commit> --profile tiny  # a quick check of the script

Needs: the Debian Fashion-MNIST package (the demo's data) and nothing else running; about 2 x the
pipeline's time per round.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import machine_note, print_table

REPO = Path(__file__).resolve().parents[1]
BYOC = Path(sys.executable).with_name("byoc")


def run_pipeline(source_tree: Path, profile: str, work: Path) -> dict:
    """One fresh `byoc pipeline` with the code of ``source_tree``; its wall time, steps and accuracy."""
    work.mkdir(parents=True)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(str(source_tree / p) for p in (".", "scripts")))
    load = os.getloadavg()[0]
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-c", "import sys; from byoc.cli import main; sys.exit(main())",
                           "pipeline", "--profile", profile, "--run-dir", str(work / "run")],
                          cwd=work, env=env, capture_output=True, text=True)
    wall = time.monotonic() - started
    if proc.returncode != 0:
        raise SystemExit(f"pipeline from {source_tree} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    state = json.loads((work / "run" / "state.json").read_text())
    steps = {name: step.get("seconds", 0.0) for name, step in state["steps"].items()}
    test = state["steps"].get("train", {}).get("outputs", {}).get("test") or {}
    return {"wall_s": wall, "steps": steps, "test_acc": test.get("accuracy"), "load_1min": load}


def baseline_tree(commit: str, where: Path) -> Path:
    subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(where), commit],
                   check=True, capture_output=True)
    return where


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--baseline", required=True, help="commit to compare against (e.g. the one before a change)")
    p.add_argument("--profile", default="demo", choices=("demo", "tiny"))
    p.add_argument("--rounds", type=int, default=1)
    args = p.parse_args(argv)
    print(machine_note(), flush=True)
    with tempfile.TemporaryDirectory(prefix="bench-pipeline-") as tmp:
        tmp = Path(tmp)
        trees = {"baseline": baseline_tree(args.baseline, tmp / "baseline-tree"), "this tree": REPO}
        runs: dict[str, list[dict]] = {name: [] for name in trees}
        try:
            for r in range(args.rounds):
                for name, tree in trees.items():
                    runs[name].append(run_pipeline(tree, args.profile, tmp / f"{name.replace(' ', '-')}-{r}"))
                    print(f"round {r + 1} {name}: {runs[name][-1]['wall_s']:.0f} s "
                          f"(load {runs[name][-1]['load_1min']:.2f} before)", flush=True)
        finally:
            subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(trees["baseline"])],
                           capture_output=True)
    steps = list(runs["this tree"][0]["steps"])
    rows = []
    for step in [*steps, "whole pipeline (wall)"]:
        def mean(name: str, step: str = step) -> float:
            values = [run["wall_s"] if step.startswith("whole") else run["steps"].get(step, 0.0) for run in runs[name]]
            return sum(values) / len(values)
        base, new = mean("baseline"), mean("this tree")
        rows.append([step, base, new, f"{new / base:.2f}x" if base else "-"])
    print_table(f"byoc pipeline --profile {args.profile}: seconds, mean of {args.rounds} round(s) "
                f"(baseline {args.baseline})", ["step", "baseline", "this tree", "ratio"], rows)
    for name, values in runs.items():
        accs = ", ".join(f"{v['test_acc']:.3f}" for v in values if isinstance(v["test_acc"], float))
        loads = ", ".join(f"{v['load_1min']:.2f}" for v in values)
        print(f"{name}: test accuracy {accs or '?'}; 1-min load average before each run: {loads}")


if __name__ == "__main__":
    main()
