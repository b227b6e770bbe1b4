"""The tuning report: the leaderboard with the pictures a user looks at first.

Written next to the leaderboard in the tuning output dir:

* ``optimization_history.png``: every trial's objective in order, with the best so far
  (``optuna.visualization.matplotlib.plot_optimization_history``);
* ``param_importances.png``: how much each tuned hyperparameter explains the objective
  (``plot_param_importances``, Optuna's fANOVA evaluator); only when at least two trials completed
  and a tuned value varied between them, otherwise the page says why it is missing;
* ``tuning-report.html``: one self-contained page (pictures inline) with both and the leaderboard.
"""

from __future__ import annotations

import base64
import html
import warnings
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from byoc.tuning.spec import TuningSpec

HISTORY_PNG = "optimization_history.png"
IMPORTANCES_PNG = "param_importances.png"
REPORT_HTML = "tuning-report.html"
FIGURE_DPI = 110


def _save(ax, path: Path) -> Path:
    fig = ax.figure
    fig.set_size_inches(7, 4)
    fig.tight_layout()
    fig.savefig(path, dpi=FIGURE_DPI)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path


def _importances_blocker(study: optuna.Study) -> str | None:
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if len(complete) < 2:
        return f"parameter importances need at least two completed trials ({len(complete)} completed)"
    if all(len({repr(t.params.get(name)) for t in complete}) < 2 for name in complete[0].params):
        return "parameter importances need a tuned value that differs between completed trials"
    return None


def write_plots(study: optuna.Study, out_dir: Path) -> tuple[dict[str, Path], list[str]]:
    """The PNGs that can be drawn for ``study``, and a note for each that cannot."""
    import matplotlib

    matplotlib.use("Agg")
    from optuna.visualization import matplotlib as ovm

    plots: dict[str, Path] = {}
    notes: list[str] = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        if study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
            plots["history"] = _save(ovm.plot_optimization_history(study), out_dir / HISTORY_PNG)
        else:
            notes.append("no trial completed: no optimization history")
        blocker = _importances_blocker(study)
        if blocker is None:
            plots["importances"] = _save(ovm.plot_param_importances(study), out_dir / IMPORTANCES_PNG)
        else:
            notes.append(blocker)
    return plots, notes


def _img(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<img alt="{html.escape(path.stem)}" src="data:image/png;base64,{data}">'


def _table(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "<p>No trials.</p>"
    head = "".join(f"<th>{html.escape(str(k))}</th>" for k in rows[0])
    body = "".join("<tr>" + "".join(f"<td>{html.escape(_cell(v))}</td>" for v in row.values()) + "</tr>"
                   for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _cell(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return "" if v is None else str(v)


def write_report(study: optuna.Study, spec: TuningSpec, rows: list[dict[str, Any]], out_dir: Path) -> dict[str, Path]:
    """Plots and ``tuning-report.html``; returns their paths by name (``history``, ``importances``, ``html``)."""
    plots, notes = write_plots(study, out_dir)
    pictures = "".join(f"<figure>{_img(p)}</figure>" for p in plots.values())
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>Tuning report</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:1100px}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:3px 8px;font-size:13px}}img{{max-width:100%}}</style></head><body>
<h1>Tuning: {html.escape(spec.objective.metric)} ({'maximize' if spec.objective.maximize else 'minimize'})</h1>
<p>{len(rows)} trials, strategy {html.escape(spec.strategy)}.</p>
{pictures}{''.join(f'<p class="note">{html.escape(n)}</p>' for n in notes)}
<h2>Leaderboard</h2>{_table(rows)}</body></html>"""
    path = out_dir / REPORT_HTML
    path.write_text(page)
    return {**plots, "html": path}
