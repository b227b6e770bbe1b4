"""Run the pipeline's steps in order on one backend: skip finished steps, stop at the first failure
with its log and the command that resumes, and end with a table of every artifact."""

from __future__ import annotations

import json
import shlex
import shutil
import time
import traceback
from pathlib import Path

from byoc.backends.base import Backend, BackendError
from byoc.console import console
from byoc.pipeline import steps as pipeline_steps
from byoc.pipeline.page import write_page
from byoc.pipeline.profiles import PROFILES
from byoc.pipeline.state import PipelineState
from byoc.pipeline.summary import print_summary, shown


def resume_command(backend: Backend, profile: str) -> str:
    """The exact command that continues this run (a dry run's stays a dry run: without --dry-run it
    would send every request for real)."""
    s = backend.settings
    return shlex.join(["byoc", "pipeline", "--run-dir", s.run_dir, "--profile", profile]
                      + (["--containers"] if s.containers else [])
                      + (["--backend", s.backend] if s.backend != "local" else [])
                      + (["--dry-run"] if s.dry_run else []))


def _open_state(backend: Backend, run_dir: Path, profile: str, restart: bool, from_step: str | None
                ) -> PipelineState:
    if restart and run_dir.exists() and not backend.settings.dry_run:
        shutil.rmtree(run_dir)
    state = PipelineState.load(run_dir, persist=not backend.settings.dry_run)
    if state.data.get("profile", profile) != profile:
        raise BackendError(f"{run_dir} holds a {state.data['profile']!r} run; use --restart or another --run-dir")
    state.data["profile"] = profile
    if from_step:
        if from_step not in pipeline_steps.STEP_NAMES:
            raise BackendError(f"unknown step {from_step!r}; steps: {', '.join(pipeline_steps.STEP_NAMES)}")
        state.forget_from(pipeline_steps.STEP_NAMES, from_step)
    state.save()
    return state


def run_pipeline(backend: Backend, profile: str = "demo", data: str | None = None, restart: bool = False,
                 from_step: str | None = None, port: int | None = None) -> int:
    settings = backend.settings
    if settings.backend != "local" and not settings.wait and not settings.dry_run:
        raise BackendError("byoc pipeline waits for every job (each step needs the last one's results); "
                           "--no-wait applies to single commands")
    run_dir = Path(settings.run_dir)
    state = _open_state(backend, run_dir, profile, restart, from_step)
    ctx = pipeline_steps.Context(backend, PROFILES[profile], run_dir, state,
                                 data or state.data.get("data_source", "auto"), port)
    state.data["data_source"] = ctx.data_source
    started = time.monotonic()
    steps = pipeline_steps.STEPS
    try:
        for i, (name, fn, title) in enumerate(steps, 1):
            if state.done(name):
                console.print(f"[dim][{i}/{len(steps)}] {name}: done earlier, skipped[/]")
                continue
            console.rule(f"[{i}/{len(steps)}] {name}: {title}")
            if not _run_step(ctx, name, fn, resume_command(backend, profile)):
                if not settings.dry_run:
                    console.print(f"results so far: {shown(write_page(state, run_dir, pipeline_steps.STEP_NAMES))}")
                return 1
    finally:
        backend.stop_endpoint()
    if settings.dry_run:      # nothing was made: no artifact table, page or state, and no claim of either
        console.print(f"[bold]dry run[/]: the {len(steps)} steps' AWS requests are above (DRY-RUN lines); none was "
                      "sent, nothing was created or uploaded.")
        return 0
    state.data["total_seconds"] = round(time.monotonic() - started, 1)
    state.save()
    print_summary(state, run_dir, write_page(state, run_dir, pipeline_steps.STEP_NAMES))
    return 0


def _run_step(ctx: pipeline_steps.Context, name: str, fn, resume: str) -> bool:
    step = ctx.state.step(name)
    log = ctx.run_dir / "logs" / f"{name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    step.update(status="running", started=time.strftime("%Y-%m-%dT%H:%M:%S"), log=str(log))
    step.pop("error", None)
    ctx.state.save()
    t0 = time.monotonic()
    try:
        outputs = fn(ctx)
    except KeyboardInterrupt:
        step.update(status="interrupted")
        ctx.state.save()
        console.print(f"[yellow]interrupted in step {name}[/]; resume with: {resume}")
        raise
    except Exception as e:  # noqa: BLE001 - every failure is reported the same way, then we stop
        log.write_text(traceback.format_exc())
        step.update(status="failed", error=str(e), seconds=round(time.monotonic() - t0, 1))
        ctx.state.save()
        console.print(f"[red]step {name} failed[/]: {e}")
        console.print(f"  log: {log}")
        console.print(f"  resume with: {resume}")
        return False
    log.write_text(json.dumps(outputs, indent=1, default=str) + "\n")
    step.update(status="done", outputs=outputs, seconds=round(time.monotonic() - t0, 1))
    ctx.state.save()
    return True



