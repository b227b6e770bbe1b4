"""``<run dir>/index.html``: one page with every step's result and a link to every artifact.

Links are relative to the run dir, so the folder can be moved or served as it is. Pictures the run
made (the tuning plots, the Grad-CAM figure) are shown on the page; reports open from their links.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import jinja2

from byoc.pipeline.state import PipelineState
from byoc.pipeline.summary import artifact_rows, timing_sentence
from container_train.contract import class_name_from_folder

PAGE_FILE = "index.html"

TEMPLATE = jinja2.Template("""<!doctype html>
<html><head><meta charset="utf-8"><title>byoc pipeline: {{ profile }}</title>
<style>
body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1100px;color:#222}
h1{margin-bottom:.2em} .sub{color:#666;margin-top:0}
table{border-collapse:collapse;width:100%;margin:1em 0} td,th{border-bottom:1px solid #ddd;padding:6px 8px;
text-align:left;vertical-align:top;font-size:14px} th{background:#f4f4f4}
.done{color:#17803d;font-weight:600} .failed{color:#b42318;font-weight:600} .other{color:#92400e}
.figs{display:flex;flex-wrap:wrap;gap:16px} figure{margin:0;max-width:520px} figure img{max-width:100%;border:1px solid #ddd}
figcaption{font-size:13px;color:#555}
</style></head><body>
<h1>byoc pipeline ({{ profile }})</h1>
<p class="sub">{{ timing }}.
{% if test_acc is not none %}Test accuracy of the main model: <b>{{ "%.1f"|format(100 * test_acc) }}%</b>.{% endif %}</p>
<h2 id="steps">Steps</h2>
<table><tr><th>step</th><th>status</th><th>time</th><th>result</th></tr>
{% for s in steps %}<tr><td>{{ s.name }}</td><td class="{{ s.css }}">{{ s.status }}</td>
<td>{{ s.seconds }}</td><td>{{ s.result }}{% if s.log %} (<a href="{{ s.log }}">log</a>){% endif %}</td></tr>
{% endfor %}</table>
{% if figures %}<h2 id="pictures">Pictures</h2><div class="figs">
{% for f in figures %}<figure><a href="{{ f.href }}"><img src="{{ f.href }}" alt="{{ f.caption }}"></a>
<figcaption>{{ f.caption }}</figcaption></figure>{% endfor %}</div>{% endif %}
{% if invocations %}<h2 id="invocations">Invocations</h2>
<p class="sub">{{ invocations|selectattr("right")|list|length }} of {{ invocations|length }} answers right.</p>
<table><tr><th>model</th><th>image</th><th>true class</th><th>answer</th><th>probability</th><th></th></tr>
{% for i in invocations %}<tr><td>{{ i.model }}</td><td>{{ i.image }}</td><td>{{ i.true_class }}</td>
<td>{{ i.label }}</td><td>{{ "%.2f"|format(i.probability) }}</td>
<td class="{{ 'done' if i.right else 'failed' }}">{{ "&#10003; right"|safe if i.right else "&#10007; wrong"|safe }}</td></tr>
{% endfor %}</table>{% endif %}
<h2 id="artifacts">Artifacts</h2>
<table><tr><th>step</th><th>artifact</th><th>where</th></tr>
{% for step, what, href in artifacts %}<tr><td>{{ step }}</td><td>{{ what }}</td>
<td>{% if href %}<a href="{{ href }}">{{ href }}</a>{% endif %}</td></tr>{% endfor %}</table>
</body></html>
""", autoescape=True)


def _rel(path: str | os.PathLike | None, run_dir: Path) -> str:
    """``path`` relative to the run dir (an S3 URI or a foreign path stays as it is)."""
    if not path or str(path).startswith("s3://"):
        return str(path or "")
    try:
        return os.path.relpath(Path(path).resolve(), run_dir.resolve())
    except ValueError:
        return str(path)


def _pct(value) -> str:
    return f"{100 * value:.1f}%" if isinstance(value, int | float) else "?"


def _result_text(name: str, outputs: dict) -> str:
    """One sentence a person reads: what the step made, in words and numbers (never a dict)."""
    if not outputs:
        return ""
    o = outputs.get
    if name == "data":
        counts = ", ".join(f"{n} {split}" for split, n in (o("counts") or {}).items())
        return f"{len(o('classes') or [])} classes of {o('source')} images ({counts})."
    if name == "tune":
        value = o("best_value")
        shown = f"{value:.3f}" if isinstance(value, float) else str(value)
        return f"Trial {o('best_trial')} scored best on the spec's objective: {shown}."
    if name in ("train", "train_second"):
        test = o("test") or {}
        if isinstance(test.get("accuracy"), float):
            text = f"{_pct(test['accuracy'])} test accuracy on {test.get('images')} images"
        else:
            text = "Trained (no test split)"
        if isinstance(o("best_valid_acc"), float):
            text += f", best validation accuracy {_pct(o('best_valid_acc'))}"
        if o("stopped_by_rule"):
            text += f"; stopped by {o('stopped_by_rule')}"
        return text + "."
    if name == "report":
        rules = o("rules") or {}
        fired = [r for r, status in rules.items() if status == "IssuesFound"]
        return (f"{len(rules)} Debugger rules evaluated: " + (f"{', '.join(fired)} fired." if fired else "none fired."))
    if name == "package":
        models = o("models") or {}
        return f"{len(models)} model archives: {', '.join(models)}."
    if name == "serve":
        loaded = o("loaded") or []
        return f"Endpoint at {o('address')} serving {', '.join(loaded) or 'no model'}."
    if name == "invoke":
        return f"{o('count')} images sent to the models; the table below marks each answer right or wrong."
    if name == "batch":
        return f"{o('outputs')} images classified by {o('model')} into .out files."
    if name == "explain":
        verdict = _verdict(o("label"), Path(str(o("image") or "")).parent.name)
        return f"Grad-CAM of {o('model')}'s answer {o('label')!r} for {_image_name(o('image'))}{verdict}."
    return "Done."


def _image_name(image) -> str:
    path = Path(str(image or ""))
    return f"{path.parent.name}/{path.name}"


def _verdict(label, folder: str) -> str:
    """Right or wrong by the image's class folder, named as the model names its classes."""
    if not folder:
        return ""
    true_class = class_name_from_folder(folder)
    return " (right)" if label == true_class else f" (wrong: the image is a {true_class})"


def _first_line(text: str, limit: int = 300) -> str:
    line = text.strip().splitlines()[0] if text.strip() else ""
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _figures(state: PipelineState, run_dir: Path) -> list[dict]:
    figures = []
    for key, caption in (("history", "tuning: optimization history"),
                         ("importances", "tuning: hyperparameter importances"),
                         ("trial_time", "tuning: where each trial's time went")):
        png = state.outputs("tune").get("plots", {}).get(key)
        if png and Path(png).exists():
            figures.append({"href": _rel(png, run_dir), "caption": caption})
    cam = state.outputs("explain").get("png")
    if cam and Path(cam).exists():
        figures.append({"href": _rel(cam, run_dir),
                        "caption": _result_text("explain", state.outputs("explain"))})
    return figures


def _invocations(state: PipelineState, run_dir: Path) -> list[dict]:
    path = state.outputs("invoke").get("results")
    if not path or not Path(path).is_file():
        return []
    return [{**row, "model": model, "image": _rel(row["image"], run_dir),
             "right": row.get("label") == class_name_from_folder(str(row.get("true_class", "")))}
            for model, rows in json.loads(Path(path).read_text()).items() for row in rows]


def write_page(state: PipelineState, run_dir: Path, step_names: list[str]) -> Path:
    steps = []
    for name in step_names:
        step = state.data["steps"].get(name, {})
        status = step.get("status", "not run")
        steps.append({"name": name, "status": status, "seconds": f"{step['seconds']:.0f} s" if "seconds" in step else "",
                      "css": {"done": "done", "failed": "failed"}.get(status, "other"),
                      "result": _first_line(step["error"]) if step.get("error") else _result_text(name, step.get("outputs", {})),
                      "log": _rel(step["log"], run_dir) if status == "failed" and step.get("log") else ""})
    test = state.outputs("train").get("test") or {}
    html = TEMPLATE.render(
        profile=state.data.get("profile"), timing=timing_sentence(state, step_names), steps=steps,
        test_acc=test.get("accuracy"), figures=_figures(state, run_dir), invocations=_invocations(state, run_dir),
        artifacts=[(step, what, _rel(where, run_dir)) for step, what, where in artifact_rows(state)])
    path = run_dir / PAGE_FILE
    path.write_text(html)
    return path
