"""The table a finished pipeline prints: every artifact, what it is and where it is."""

from __future__ import annotations

import os
from pathlib import Path

from byoc.console import console
from byoc.pipeline.state import STATE_FILE, PipelineState
from byoc.tuning.best import BEST_HYPERPARAMETERS
from byoc_common.sagemaker_paths import TENSORS_DIR


def artifact_rows(state: PipelineState) -> list[tuple[str, str, str]]:
    """(step, what, where) for the summary table."""
    o = state.outputs
    rows = [("data", f"{o('data').get('source')} dataset, {len(o('data').get('classes', []))} classes",
             o("data").get("location", ""))]
    tune = o("tune")
    rows += [("tune", f"leaderboard (best {_fmt(tune.get('best_value'))})", tune.get("leaderboard", "")),
             ("tune", "tuning report (history, importances)", tune.get("report", "")),
             ("tune", "best hyperparameters", str(Path(tune.get("out_dir", "")) / BEST_HYPERPARAMETERS))]
    train = o("train")
    rows += [("train", f"model (best valid acc {_fmt(train.get('best_valid_acc'))})",
              train.get("model_dir") or train.get("model_data", "")),
             ("train", "training log", train.get("log", "")),
             ("train", "Debugger tensors", str(Path(train.get("job_dir", "")) / TENSORS_DIR))]
    rep = o("report")
    fired = [r for r, s in rep.get("rules", {}).items() if s == "IssuesFound"]
    rows += [("report", f"rule results ({len(fired)} fired: {', '.join(fired) or 'none'})", rep.get("rules_dir", "")),
             ("report", "profiler report (HTML)", rep.get("profiler_report", ""))]
    second = o("train_second")
    rows += [("train_second", "second model", second.get("model_dir") or second.get("model_data", ""))]
    for name, path in o("package").get("models", {}).items():
        rows.append(("package", f"model.tar.gz '{name}'", path))
    rows += [("serve", "endpoint server log", o("serve").get("log", "")),
             ("invoke", f"{o('invoke').get('count')} invocations", o("invoke").get("results", "")),
             ("batch", f"{o('batch').get('outputs')} .out files", o("batch").get("output", "")),
             ("explain", f"Grad-CAM for '{o('explain').get('label')}'", o("explain").get("png", ""))]
    return rows


def timing_sentence(state: PipelineState, step_names: list[str]) -> str:
    """How long the pipeline took, from each finished step's own recorded time, so a rerun that
    skips finished steps still shows the work's duration (with what this run itself took)."""
    done = [state.data["steps"][n]["seconds"] for n in step_names
            if state.data["steps"].get(n, {}).get("status") == "done" and "seconds" in state.data["steps"][n]]
    text = f"{len(done)} of {len(step_names)} steps finished in {sum(done):.0f} s"
    this_run = state.data.get("total_seconds")
    if done and isinstance(this_run, int | float) and this_run < sum(done) - 1:
        text += f" (this run: {this_run:.0f} s; the rest was done earlier)"
    return text


def _fmt(value) -> str:
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def shown(path: str | os.PathLike) -> str:
    """A local path as the user can type it from where the command ran (relative to the current
    folder when below it); S3 URIs and empty values stay as they are."""
    text = str(path or "")
    if not text or text.startswith("s3://"):
        return text
    resolved = Path(text).resolve()
    try:
        return str(resolved.relative_to(Path.cwd()))
    except ValueError:
        return str(resolved)


def print_summary(state: PipelineState, run_dir: Path, page: Path) -> None:
    from rich.table import Table

    table = Table(title=f"byoc pipeline ({state.data.get('profile')}): "
                        f"{timing_sentence(state, list(state.data['steps']))}. Artifacts")
    table.add_column("step")
    table.add_column("artifact")
    table.add_column("where", overflow="fold")
    for step, what, where in artifact_rows(state):
        table.add_row(step, what, shown(where))
    console.print(table)
    test = state.outputs("train").get("test") or {}
    if isinstance(test.get("accuracy"), float):
        console.print(f"test accuracy of the main model: {100 * test['accuracy']:.1f}% on {test.get('images')} images")
    console.print(f"[bold]every result on one page: {shown(page)}[/]")
    rd = shown(run_dir)
    console.print(f"state: {shown(run_dir / STATE_FILE)}. Serve the models again: byoc serve --run-dir {rd} "
                  "then byoc deploy <model.tar.gz above> --name <name>")
