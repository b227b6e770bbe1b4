"""The pipeline's steps, each a few calls on the :class:`~byoc.backends.base.Backend` interface, so the
same steps run locally (processes or the images) and on SageMaker::

    data -> tune -> train (best hyperparameters, Debugger + profiler) -> report (rules + profiler
    report) -> train_second (the same recipe on a subset of the classes) -> package (two
    model.tar.gz) -> serve (the multi-model endpoint, both models on it) -> invoke (sample images
    against each model) -> batch (batch transform over a folder) -> explain (Grad-CAM PNG)

A step returns the outputs the state file records (a backend's typed result as plain data,
:mod:`byoc.backends.results`); later steps read them back typed (``TrainResult.from_dict``), so no
step asks which backend ran or what a dict holds. The endpoint is a process locally, not an artifact:
a step that needs it brings it up (once per run) and loads both models again.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from byoc.backends.base import Backend, BackendError
from byoc.backends.results import EndpointInfo, ReportResult, Result, TrainResult, TuneResult
from byoc.console import console
from byoc.pipeline.profiles import Profile
from byoc.pipeline.state import PipelineState
from byoc.tuning.specs import DEMO_SPEC
from container_train.contract import SPLITS


@dataclass(frozen=True)
class DataOutputs(Result):
    """What the data step records: the prepared folder and where jobs read it."""

    root: str
    location: str
    source: str
    classes: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)


@dataclass
class Context:
    backend: Backend
    profile: Profile
    run_dir: Path
    state: PipelineState
    data_source: str
    port: int | None
    endpoint: EndpointInfo | None = None    # where the endpoint is, once a step brought it up
    targets: dict[str, str] = field(default_factory=dict)     # model name -> what to invoke it by

    def outputs(self, step: str) -> dict:
        return self.state.outputs(step)

    def data(self) -> DataOutputs:
        return DataOutputs.from_dict(self.outputs("data"))

    def trained(self, step: str) -> TrainResult:
        return TrainResult.from_dict(self.outputs(step))

    @property
    def subset_root(self) -> Path:
        """The second model's dataset (:func:`subset_dataset`)."""
        return self.run_dir / "data-subset"


def step_data(ctx: Context) -> dict:
    p = ctx.profile
    summary = ctx.backend.data(ctx.data_source, str(ctx.run_dir / "data"), num_classes=p.num_classes,
                               per_class=p.per_class, size=p.image_size)
    if summary.note:
        console.print(f"[yellow]{summary.note}[/]")
    console.print(summary.describe())
    return DataOutputs(root=str(summary.root), location=summary.location, source=summary.source,
                       classes=summary.classes, counts=summary.counts).to_dict()


def step_tune(ctx: Context) -> dict:
    """The search; the train step is the final job, with the profile's epochs (a dry run's best
    hyperparameters are placeholders where the tuned values will go)."""
    p = ctx.profile
    static = p.hyperparameters(epochs=p.tune_epochs, debugger="false")
    return ctx.backend.tune(ctx.data().location, str(DEMO_SPEC), max_jobs=p.tune_jobs,
                            max_parallel_jobs=p.tune_parallel, static=static, out_dir=str(ctx.run_dir / "tune"),
                            final=False).to_dict()


def _best_hps(ctx: Context):
    return TuneResult.from_dict(ctx.outputs("tune")).best_hyperparameters


def step_train(ctx: Context) -> dict:
    p = ctx.profile
    hps = _best_hps(ctx) | p.hyperparameters(epochs=p.train_epochs, debugger_save_interval=p.debugger_interval)
    return ctx.backend.train(ctx.data().location, hps, name="train", description="train best",
                             debugger=True).to_dict()


def step_report(ctx: Context) -> dict:
    os.environ.setdefault("SMDEBUG_LOG_LEVEL", "warning")  # smdebug logs every rule step at INFO
    result: ReportResult = ctx.backend.report(ctx.trained("train").job)
    for rule, status in result.rules.items():
        console.print(f"  rule {rule}: {status}")
    return result.to_dict()


def subset_dataset(root: Path, dest: Path, num_classes: int) -> Path:
    """The first ``num_classes`` classes of ``root`` as a new ImageFolder.

    Files are hard-linked (copied across filesystems), never symlinked: a container job mounts only
    the channel folder, where a symlink to the original dataset would point at nothing."""
    if dest.exists():
        shutil.rmtree(dest)
    classes = sorted(d.name for d in (root / "train").iterdir() if d.is_dir())[:num_classes]
    for split in SPLITS:
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
    p = ctx.profile
    subset = subset_dataset(Path(ctx.data().root), ctx.subset_root, p.second_classes)
    hps = _best_hps(ctx) | p.hyperparameters(epochs=p.tune_epochs)
    return ctx.backend.train(ctx.backend.dataset_location(subset, "data-subset"), hps, name="train-subset",
                             description=f"train {p.second_classes}-class model", debugger=False).to_dict()


def step_package(ctx: Context) -> dict:
    """Both models' ``model.tar.gz``, as their training jobs left them (named for the endpoint)."""
    first, second = ctx.profile.model_names()
    return {"models": {first: ctx.trained("train").model_data, second: ctx.trained("train_second").model_data}}


def ensure_endpoint(ctx: Context) -> dict[str, str]:
    """Bring the endpoint up (once per pipeline process) with both packaged models on it; returns the
    names to invoke them by."""
    if ctx.endpoint is None:
        console.print("starting the multi-model endpoint ...")
        ctx.endpoint = ctx.backend.start_endpoint(port=ctx.port)
        models: dict[str, str] = ctx.outputs("package")["models"]
        ctx.targets = {name: ctx.backend.deploy(archive, name) for name, archive in models.items()}
        serving = "would serve (dry run)" if ctx.endpoint.dry_run else "serving"
        console.print(f"endpoint {ctx.endpoint.address} {serving} {', '.join(ctx.targets)}")
    return ctx.targets


def step_serve(ctx: Context) -> dict:
    targets = ensure_endpoint(ctx)
    log = ctx.run_dir / "endpoint" / "server.log"
    return {**ctx.endpoint.to_dict(), "targets": targets, "loaded": ctx.backend.loaded_models(),
            "log": str(log) if log.exists() else ""}


def _sample_images(ctx: Context, model: str, n: int) -> list[Path]:
    """One test image per class of ``model`` (cycling), ``n`` in all."""
    first, _ = ctx.profile.model_names()
    root = Path(ctx.data().root) if model == first else ctx.subset_root
    folders = sorted(d for d in (root / "test").iterdir() if d.is_dir())
    picks = []
    for i in range(n):
        images = sorted(folders[i % len(folders)].iterdir())
        picks.append(images[(i // len(folders)) % len(images)])
    return picks


def step_invoke(ctx: Context) -> dict:
    targets = ensure_endpoint(ctx)
    results: dict[str, list] = {}
    for model, target in targets.items():
        for image in _sample_images(ctx, model, ctx.profile.samples_per_model):
            answer = ctx.backend.invoke(str(image), target, topk=3)
            if not answer.sent:     # a dry run: nothing was sent, nothing answered
                continue
            top = json.loads(answer.body)["predictions"][0]
            results.setdefault(model, []).append({"image": str(image), "true_class": image.parent.name,
                                                  "label": top["label"], "probability": top["probability"]})
            console.print(f"  {model}: {image.parent.name}/{image.name} -> {top['label']} ({top['probability']:.2f})")
    out = ctx.run_dir / "invocations.json"
    out.write_text(json.dumps(results, indent=1))
    return {"results": str(out), "count": sum(len(v) for v in results.values())}


def step_batch(ctx: Context) -> dict:
    first, _ = ctx.profile.model_names()
    inp, out = ctx.run_dir / "batch" / "input", ctx.run_dir / "batch" / "output"
    for d in (inp, out):
        if d.exists():
            shutil.rmtree(d)
    inp.mkdir(parents=True)
    images = sorted((Path(ctx.data().root) / "test").rglob("*.jpg"))
    stride = max(1, len(images) // ctx.profile.batch_images)
    for image in images[::stride][:ctx.profile.batch_images]:
        shutil.copyfile(image, inp / f"{image.parent.name}__{image.name}")
    result = ctx.backend.batch(str(inp), str(out), target_model=ensure_endpoint(ctx)[first])
    if result.failures:
        raise BackendError(f"batch transform failed for {len(result.failures)} inputs: {result.failures}")
    return {"input": str(inp), "output": str(out), "outputs": len(result.outputs), "model": first}


def step_explain(ctx: Context) -> dict:
    first, _ = ctx.profile.model_names()
    image = _sample_images(ctx, first, 1)[0]
    out = ctx.run_dir / "explain" / f"{image.parent.name}__{image.stem}.gradcam.png"
    prediction = ctx.backend.explain(str(image), ensure_endpoint(ctx)[first], None, str(out))
    return {"image": str(image), "png": str(out), "label": prediction.label, "model": first}


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
