"""The tuning report: the leaderboard with the pictures a user looks at first.

Written next to the leaderboard in the tuning output dir:

* ``optimization_history.png``: every trial's objective in order with the best so far, and the
  pruned trials at the last value they reported (Optuna's own history plot leaves them out, so a
  run whose trials were mostly pruned looked like a run of few trials);
* ``param_importances.png``: how much each tuned hyperparameter explains the objective
  (``plot_param_importances``, Optuna's fANOVA evaluator, a random forest fitted to the trials); only
  with :data:`TRIALS_PER_PARAMETER` completed trials per tuned parameter and a tuned value that
  varied, since a forest fitted to a handful of points ranks noise; otherwise the page says why;
* ``trial_time.png``: each trial's time split into waiting for another job's work, feature extraction,
  training and the rest (:mod:`byoc.tuning.trial_time`; the same figures are leaderboard columns);
* ``tuning-report.html``: one self-contained page (pictures inline) with these and the leaderboard.
"""

from __future__ import annotations

import base64
import html
import warnings
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from byoc.tuning import trial_time
from byoc.tuning.spec import TuningSpec

HISTORY_PNG = "optimization_history.png"
IMPORTANCES_PNG = "param_importances.png"
TRIAL_TIME_PNG = "trial_time.png"
REPORT_HTML = "tuning-report.html"
FIGURE_DPI = 110
TRIALS_PER_PARAMETER = 3


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
    pruned = len(study.get_trials(deepcopy=False, states=(TrialState.PRUNED,)))
    tuned = sorted({name for t in study.get_trials(deepcopy=False) for name in t.params})
    needed = max(2, TRIALS_PER_PARAMETER * len(tuned))
    if len(complete) < needed:
        return (f"no parameter importances: they need {needed} completed trials for {len(tuned)} tuned "
                f"parameter(s) ({TRIALS_PER_PARAMETER} each), and {len(complete)} completed"
                + (f" ({pruned} pruned)" if pruned else "") + "; with fewer, the ranking is noise")
    if all(len({repr(t.params.get(name)) for t in complete}) < 2 for name in tuned):
        return "no parameter importances: no tuned value differs between the completed trials"
    return None


def _last_value(trial: optuna.trial.FrozenTrial) -> tuple[int, float] | None:
    """A pruned trial's last reported (epoch, value), where it was stopped."""
    if not trial.intermediate_values:
        return None
    step = max(trial.intermediate_values)
    return step, trial.intermediate_values[step]


def history_figure(study: optuna.Study, spec: TuningSpec, path: Path) -> Path:
    """Completed trials as dots with the best so far, pruned ones as crosses at their last value."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, ax = plt.subplots(figsize=(7, 4))
    trials = study.get_trials(deepcopy=False)
    done = [t for t in trials if t.state == TrialState.COMPLETE and t.value is not None]
    pruned = [(t.number, *last) for t in trials if t.state == TrialState.PRUNED and (last := _last_value(t))]
    ax.scatter([t.number for t in done], [t.value for t in done], color="#1f77b4", zorder=3,
               label=f"completed ({len(done)})")
    if pruned:
        ax.scatter([n for n, _, _ in pruned], [v for _, _, v in pruned], marker="x", color="#b42318", zorder=3,
                   label=f"pruned ({len(pruned)}), at its last epoch")
        for n, step, v in pruned:
            ax.annotate(f"epoch {step}", (n, v), textcoords="offset points", xytext=(4, -10), fontsize=8,
                        color="#b42318")
    best, line = None, []
    better = max if spec.objective.maximize else min
    for t in sorted(done, key=lambda t: t.number):
        best = t.value if best is None else better(best, t.value)
        line.append((t.number, best))
    if line:
        line.append((max(t.number for t in trials), line[-1][1]))     # the best holds to the last trial
        ax.step([n for n, _ in line], [b for _, b in line], where="post", color="#17803d", label="best so far")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    failed = sum(t.state == TrialState.FAIL for t in trials)
    ax.set_title(f"Optimization history: {len(trials)} trials" + (f", {failed} failed" if failed else ""))
    ax.set_xlabel("trial")
    ax.set_ylabel(spec.objective.metric)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=FIGURE_DPI)
    plt.close(fig)
    return path


def write_plots(study: optuna.Study, spec: TuningSpec, out_dir: Path) -> tuple[dict[str, Path], list[str]]:
    """The PNGs that can be drawn for ``study``, and a note for each that cannot."""
    import matplotlib

    matplotlib.use("Agg")
    from optuna.visualization import matplotlib as ovm

    plots: dict[str, Path] = {}
    notes: list[str] = []
    if any(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in study.get_trials(deepcopy=False)):
        plots["history"] = history_figure(study, spec, out_dir / HISTORY_PNG)
    else:
        notes.append("no trial completed or reported a value: no optimization history")
    blocker = _importances_blocker(study)
    if blocker is None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
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
    plots, notes = write_plots(study, spec, out_dir)
    if (time_png := trial_time.figure(rows, out_dir / TRIAL_TIME_PNG)) is not None:
        plots["trial_time"] = time_png
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
