"""The table a finished pipeline prints: every artifact, what it is and where it is."""

from __future__ import annotations

from pathlib import Path

from byoc.console import console
from byoc.pipeline.state import STATE_FILE, PipelineState


def artifact_rows(state: PipelineState) -> list[tuple[str, str, str]]:
    """(step, what, where) for the summary table."""
    o = state.outputs
    rows = [("data", f"{o('data').get('source')} dataset, {len(o('data').get('classes', []))} classes",
             o("data").get("location", ""))]
    tune = o("tune")
    rows += [("tune", f"leaderboard (best {_fmt(tune.get('best_value'))})", tune.get("leaderboard", "")),
             ("tune", "best hyperparameters", str(Path(tune.get("out_dir", "")) / "best_hyperparameters.json"))]
    train = o("train")
    rows += [("train", f"model (best valid acc {_fmt(train.get('best_valid_acc'))})",
              train.get("model_dir") or train.get("model_data", "")),
             ("train", "training log", train.get("log", "")),
             ("train", "Debugger tensors", str(Path(train.get("job_dir", "")) / "output" / "tensors"))]
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


def _fmt(value) -> str:
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def print_summary(state: PipelineState, run_dir: Path) -> None:
    from rich.table import Table

    table = Table(title=f"byoc pipeline ({state.data.get('profile')}) finished in "
                        f"{state.data.get('total_seconds', 0):.0f} s: artifacts")
    table.add_column("step")
    table.add_column("artifact")
    table.add_column("where", overflow="fold")
    for row in artifact_rows(state):
        table.add_row(*row)
    console.print(table)
    console.print(f"state: {run_dir / STATE_FILE}. Serve the models again: byoc serve --run-dir {run_dir} "
                  f"then byoc deploy {run_dir}/models/<name>.tar.gz --name <name>")
