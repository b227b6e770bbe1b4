"""``byoc pipeline``: every step in order, resumable, with a summary of where each artifact is.

Local backend (default)::

    data -> tune -> train (best hyperparameters, Debugger + profiler) -> report (rules + profiler
    report) -> train_second (a second model on a subset of the classes) -> package (two
    model.tar.gz) -> serve (start the multi-model endpoint, load both) -> invoke (sample images
    against each model) -> batch (batch transform over a folder) -> explain (Grad-CAM PNG)

State lives in ``<run dir>/state.json``: a finished step is skipped when the pipeline runs again; a
failed step prints what failed, its log and the command that resumes. The endpoint is a process,
not an artifact: when a later step still needs it, a re-run starts it again and reloads both models.

Profiles (sizes only; every profile runs the same code):

* ``demo``: Fashion-MNIST (real images, offline), 10 classes, efficientnet_lite0 with its real
  ImageNet weights and a head-only fine-tune. Real runs use ``resnet50`` (the trainer's default):
  ``byoc train --data data/dogImages``.
* ``tiny``: 3 classes, a handful of images, 1 epoch of 2 steps: for tests.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from scripts.config import Settings
from scripts.progress import console

STATE_FILE = "state.json"
REPO_ROOT = Path(__file__).resolve().parent.parent
DEMO_SPEC = str(REPO_ROOT / "tuning" / "local-demo.yaml")


@dataclass(frozen=True)
class Profile:
    name: str
    num_classes: int
    per_class: dict[str, int]
    image_size: int            # pixels of the prepared images
    train_size: int            # image-size hyperparameter
    tune_jobs: int
    tune_parallel: int
    tune_epochs: int
    train_epochs: int
    max_steps: int             # max-steps-per-epoch (0 = whole split)
    second_classes: int        # classes of the second model
    samples_per_model: int     # images invoked against each model
    batch_images: int          # images in the batch-transform folder
    debugger_interval: int


PROFILES = {
    "demo": Profile("demo", num_classes=10, per_class={"train": 30, "valid": 10, "test": 10}, image_size=64,
                    train_size=64, tune_jobs=4, tune_parallel=2, tune_epochs=2, train_epochs=3, max_steps=0,
                    second_classes=4, samples_per_model=3, batch_images=20, debugger_interval=5),
    "tiny": Profile("tiny", num_classes=3, per_class={"train": 6, "valid": 3, "test": 3}, image_size=48,
                    train_size=48, tune_jobs=2, tune_parallel=1, tune_epochs=1, train_epochs=1, max_steps=2,
                    second_classes=2, samples_per_model=2, batch_images=4, debugger_interval=1),
}
# Head-only transfer learning from real ImageNet weights (efficientnet_lite0 ships them offline).
DEMO_STATIC_HPS = {"arch": "efficientnet_lite0", "pretrained": "true", "freeze": "head", "workers": "0",
                   "optimizer": "sgd"}


class StepFailed(RuntimeError):
    pass


# ---- state --------------------------------------------------------------------------------------

@dataclass
class PipelineState:
    path: Path
    data: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def load(cls, run_dir: Path) -> PipelineState:
        path = run_dir / STATE_FILE
        data = json.loads(path.read_text()) if path.is_file() else {}
        data.setdefault("steps", {})
        return cls(path, data)

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(json.dumps(self.data, indent=1, default=str))
        tmp.replace(self.path)

    def step(self, name: str) -> dict:
        return self.data["steps"].setdefault(name, {})

    def done(self, name: str) -> bool:
        return self.data["steps"].get(name, {}).get("status") == "done"

    def outputs(self, name: str) -> dict:
        return self.data["steps"].get(name, {}).get("outputs", {})


# ---- the steps (local backend) ------------------------------------------------------------------

@dataclass
class Context:
    settings: Settings
    profile: Profile
    run_dir: Path
    state: PipelineState
    data_source: str
    port: int | None
    endpoint: Any = None        # the running LocalEndpoint, when a step needed it
    endpoint_info: dict | None = None


def _hp(ctx: Context, **extra) -> dict[str, str]:
    p = ctx.profile
    hps = {**DEMO_STATIC_HPS, "image-size": str(p.train_size), "max-steps-per-epoch": str(p.max_steps)}
    hps.update({k.replace("_", "-"): str(v) for k, v in extra.items()})
    return hps


def step_data(ctx: Context) -> dict:
    from scripts import local_backend

    p = ctx.profile
    summary = local_backend.data(ctx.settings, ctx.data_source, str(ctx.run_dir / "data"),
                                 num_classes=p.num_classes, per_class=p.per_class, size=p.image_size)
    if summary.note:
        console.print(f"[yellow]{summary.note}[/]")
    console.print(summary.describe())
    return {"root": str(summary.root), "source": summary.source, "classes": summary.classes,
            "counts": summary.counts}


def step_tune(ctx: Context) -> dict:
    from scripts import local_backend

    p = ctx.profile
    static = _hp(ctx, epochs=p.tune_epochs, debugger="false")
    result = local_backend.tune(ctx.settings, ctx.state.outputs("data")["root"], DEMO_SPEC,
                                max_jobs=p.tune_jobs, max_parallel_jobs=p.tune_parallel, static=static,
                                out_dir=str(ctx.run_dir / "tune"))
    return {"out_dir": result["out_dir"], "best_hyperparameters": result["best_hyperparameters"],
            "best_value": result["best_value"], "leaderboard": result["leaderboard"]}


def _best_hps(ctx: Context) -> dict[str, str]:
    return {k: str(v).lower() if isinstance(v, bool) else str(v)
            for k, v in ctx.state.outputs("tune")["best_hyperparameters"].items()}


def step_train(ctx: Context) -> dict:
    from scripts import local_backend

    p = ctx.profile
    hps = {**_best_hps(ctx), **_hp(ctx, epochs=p.train_epochs, debugger="true",
                                   debugger_save_interval=p.debugger_interval)}
    return local_backend.train(ctx.settings, ctx.state.outputs("data")["root"], hps,
                               job_dir=str(ctx.run_dir / "train"), description="train best")


def step_report(ctx: Context) -> dict:
    os.environ.setdefault("SMDEBUG_LOG_LEVEL", "warning")  # smdebug logs every rule step at INFO
    from scripts import local_backend

    result = local_backend.report(ctx.settings, ctx.state.outputs("train")["job_dir"])
    for rule, status in result["rules"].items():
        console.print(f"  rule {rule}: {status}")
    return result


def subset_dataset(root: Path, dest: Path, num_classes: int) -> Path:
    """The first ``num_classes`` classes of ``root`` as a new ImageFolder.

    Files are hard-linked (copied across filesystems), never symlinked: a container job mounts only
    the channel folder, where a symlink to the original dataset would point at nothing."""
    if dest.exists():
        shutil.rmtree(dest)
    classes = sorted(d.name for d in (root / "train").iterdir() if d.is_dir())[:num_classes]
    for split in ("train", "valid", "test"):
        for c in classes:
            shutil.copytree(root / split / c, dest / split / c, copy_function=_link_or_copy)
    return dest


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def step_train_second(ctx: Context) -> dict:
    """A second, different model for the multi-model endpoint: the same recipe on a class subset."""
    from scripts import local_backend

    p = ctx.profile
    data = subset_dataset(Path(ctx.state.outputs("data")["root"]), ctx.run_dir / "data-subset", p.second_classes)
    hps = {**_best_hps(ctx), **_hp(ctx, epochs=p.tune_epochs, debugger="false")}
    return local_backend.train(ctx.settings, str(data), hps, job_dir=str(ctx.run_dir / "train-subset"),
                               description=f"train {p.second_classes}-class model")


def model_names(ctx: Context) -> tuple[str, str]:
    return f"{ctx.profile.name}-all", f"{ctx.profile.name}-subset{ctx.profile.second_classes}"


def step_package(ctx: Context) -> dict:
    from scripts.packaging import package_model

    first, second = model_names(ctx)
    out = ctx.run_dir / "models"
    a = package_model(ctx.state.outputs("train")["model_dir"], out / f"{first}.tar.gz")
    b = package_model(ctx.state.outputs("train_second")["model_dir"], out / f"{second}.tar.gz")
    return {"models": {first: str(a), second: str(b)}}


def ensure_endpoint(ctx: Context) -> dict:
    """Start the endpoint (once per pipeline process) and load both packaged models."""
    from scripts import local_backend
    from scripts.endpoint_client import EndpointClient

    if ctx.endpoint is None:
        console.print("starting the local multi-model endpoint ...")
        ctx.endpoint = local_backend.start_endpoint(ctx.settings, port=ctx.port,
                                                    model_root=ctx.run_dir / "endpoint" / "models",
                                                    log_file=ctx.run_dir / "endpoint" / "server.log")
        info_path = local_backend.write_endpoint_info(ctx.settings, ctx.endpoint)
        ctx.endpoint_info = json.loads(info_path.read_text())
        client = EndpointClient(ctx.endpoint.url)
        for name, archive in ctx.state.outputs("package")["models"].items():
            local_backend.deploy_to(client, ctx.endpoint_info, archive, name)
        console.print(f"endpoint {ctx.endpoint.url} serving {', '.join(client.list_models())}")
    return ctx.endpoint_info


def step_serve(ctx: Context) -> dict:
    from scripts.endpoint_client import EndpointClient

    info = ensure_endpoint(ctx)
    return {"url": info["url"], "model_root": info["model_root"], "loaded": EndpointClient(info["url"]).list_models(),
            "log": str(ctx.run_dir / "endpoint" / "server.log")}


def _sample_images(ctx: Context, model: str, n: int) -> list[Path]:
    """One test image per class of ``model`` (cycling), ``n`` in all."""
    from byoc_common.artifact import read_model_metadata
    from container_serve.model_archive import check_model_name

    _, classes = read_model_metadata(Path(ensure_endpoint(ctx)["model_root"]) / check_model_name(model))
    test = Path(ctx.state.outputs("data")["root"]) / "test"
    folders = sorted(d for d in test.iterdir() if d.is_dir())[:len(classes)]
    picks = []
    for i in range(n):
        images = sorted(folders[i % len(folders)].iterdir())
        picks.append(images[(i // len(folders)) % len(images)])
    return picks


def step_invoke(ctx: Context) -> dict:
    from scripts.endpoint_client import EndpointClient

    client = EndpointClient(ensure_endpoint(ctx)["url"])
    results: dict[str, list] = {}
    for model in ctx.state.outputs("package")["models"]:
        for image in _sample_images(ctx, model, ctx.profile.samples_per_model):
            _, body = client.invoke_file(image, target_model=model, topk=3)
            top = json.loads(body)["predictions"][0]
            results.setdefault(model, []).append({"image": str(image), "true_class": image.parent.name,
                                                  "label": top["label"], "probability": top["probability"]})
            console.print(f"  {model}: {image.parent.name}/{image.name} -> {top['label']} ({top['probability']:.2f})")
    out = ctx.run_dir / "invocations.json"
    out.write_text(json.dumps(results, indent=1))
    return {"results": str(out), "count": sum(len(v) for v in results.values())}


def step_batch(ctx: Context) -> dict:
    from scripts.endpoint_client import EndpointClient

    first, _ = model_names(ctx)
    src = Path(ctx.state.outputs("data")["root"]) / "test"
    inp, out = ctx.run_dir / "batch" / "input", ctx.run_dir / "batch" / "output"
    for d in (inp, out):
        if d.exists():
            shutil.rmtree(d)
    inp.mkdir(parents=True)
    images = sorted(src.rglob("*.jpg"))
    step = max(1, len(images) // ctx.profile.batch_images)
    for image in images[::step][:ctx.profile.batch_images]:
        shutil.copyfile(image, inp / f"{image.parent.name}__{image.name}")
    client = EndpointClient(ensure_endpoint(ctx)["url"])
    result = client.transform_folder(inp, out, target_model=first)
    if result.failures:
        raise StepFailed(f"batch transform failed for {len(result.failures)} inputs: {result.failures}")
    return {"input": str(inp), "output": str(out), "outputs": len(result.outputs), "model": first}


def step_explain(ctx: Context) -> dict:
    from scripts.endpoint_client import EndpointClient

    first, _ = model_names(ctx)
    image = _sample_images(ctx, first, 1)[0]
    out = ctx.run_dir / "explain" / f"{image.parent.name}__{image.stem}.gradcam.png"
    prediction = EndpointClient(ensure_endpoint(ctx)["url"]).explain_to_png(image, out, target_model=first)
    return {"image": str(image), "png": str(out), "label": prediction.get("label"), "model": first}


STEPS: list[tuple[str, Callable[[Context], dict], str]] = [
    ("data", step_data, "prepare the dataset"),
    ("tune", step_tune, "hyperparameter search"),
    ("train", step_train, "train the best (Debugger + profiler)"),
    ("report", step_report, "Debugger rules + profiler report"),
    ("train_second", step_train_second, "train a second model (class subset)"),
    ("package", step_package, "package both models"),
    ("serve", step_serve, "start the endpoint, load both models"),
    ("invoke", step_invoke, "invoke sample images against each model"),
    ("batch", step_batch, "batch transform a folder"),
    ("explain", step_explain, "Grad-CAM explanation"),
]
STEP_NAMES = [s[0] for s in STEPS]


# ---- runner -------------------------------------------------------------------------------------

def resume_command(settings: Settings, profile: str) -> str:
    """The exact command that continues this run."""
    return shlex.join(["byoc", "pipeline", "--run-dir", settings.run_dir, "--profile", profile]
                      + (["--containers"] if settings.containers else []))


def run_pipeline(settings: Settings, profile: str = "demo", data: str | None = None, restart: bool = False,
                 from_step: str | None = None, port: int | None = None) -> int:
    if settings.backend == "sagemaker":
        from scripts.sagemaker_pipeline import run_sagemaker_pipeline

        return run_sagemaker_pipeline(settings, PROFILES[profile], data)
    run_dir = Path(settings.run_dir)
    if restart and run_dir.exists():
        shutil.rmtree(run_dir)
    state = PipelineState.load(run_dir)
    if state.data.get("profile", profile) != profile:
        raise StepFailed(f"{run_dir} holds a {state.data['profile']!r} run; use --restart or another --run-dir")
    state.data["profile"] = profile
    if from_step:
        if from_step not in STEP_NAMES:
            raise StepFailed(f"unknown step {from_step!r}; steps: {', '.join(STEP_NAMES)}")
        for name in STEP_NAMES[STEP_NAMES.index(from_step):]:
            state.data["steps"].pop(name, None)
    state.save()
    ctx = Context(settings, PROFILES[profile], run_dir, state, data or state.data.get("data_source", "auto"), port)
    state.data["data_source"] = ctx.data_source
    started = time.monotonic()
    try:
        for i, (name, fn, title) in enumerate(STEPS, 1):
            if state.done(name):
                console.print(f"[dim][{i}/{len(STEPS)}] {name}: done earlier, skipped[/]")
                continue
            console.rule(f"[{i}/{len(STEPS)}] {name}: {title}")
            if not _run_step(ctx, name, fn, profile):
                return 1
    finally:
        if ctx.endpoint is not None:
            ctx.endpoint.stop()
            (run_dir / "endpoint.json").unlink(missing_ok=True)
    state.data["total_seconds"] = round(time.monotonic() - started, 1)
    state.save()
    print_summary(state, run_dir)
    return 0


def _run_step(ctx: Context, name: str, fn, profile: str) -> bool:
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
        console.print(f"[yellow]interrupted in step {name}[/]; resume with: {resume_command(ctx.settings, profile)}")
        raise
    except Exception as e:  # noqa: BLE001 - every failure is reported the same way, then we stop
        log.write_text(traceback.format_exc())
        step.update(status="failed", error=str(e), seconds=round(time.monotonic() - t0, 1))
        ctx.state.save()
        console.print(f"[red]step {name} failed[/]: {e}")
        console.print(f"  log: {log}")
        console.print(f"  resume with: {resume_command(ctx.settings, profile)}")
        return False
    log.write_text(json.dumps(outputs, indent=1, default=str) + "\n")
    step.update(status="done", outputs=outputs, seconds=round(time.monotonic() - t0, 1))
    ctx.state.save()
    return True


def artifact_rows(state: PipelineState) -> list[tuple[str, str, str]]:
    """(step, what, where) for the summary table."""
    o = state.outputs
    rows = [("data", f"{o('data').get('source')} dataset, {len(o('data').get('classes', []))} classes",
             o("data").get("root", ""))]
    tune = o("tune")
    rows += [("tune", f"leaderboard (best {_fmt(tune.get('best_value'))})", tune.get("leaderboard", "")),
             ("tune", "best hyperparameters", str(Path(tune.get("out_dir", "")) / "best_hyperparameters.json"))]
    train = o("train")
    rows += [("train", f"model (best valid acc {_fmt(train.get('best_valid_acc'))})", train.get("model_dir", "")),
             ("train", "training log", train.get("log", "")),
             ("train", "Debugger tensors", str(Path(train.get("job_dir", "")) / "output" / "tensors"))]
    rep = o("report")
    fired = [r for r, s in rep.get("rules", {}).items() if s == "IssuesFound"]
    rows += [("report", f"rule results ({len(fired)} fired: {', '.join(fired) or 'none'})", rep.get("rules_dir", "")),
             ("report", "profiler report (HTML)", rep.get("profiler_report", ""))]
    rows += [("train_second", "second model", o("train_second").get("model_dir", ""))]
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


if __name__ == "__main__":
    from scripts.cli import main

    sys.exit(main(["pipeline", *sys.argv[1:]]))
