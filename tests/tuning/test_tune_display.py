"""The live progress display and the leaderboard table render what happened."""

from __future__ import annotations

import io

from rich.console import Console

from byoc.tuning import leaderboard
from byoc.tuning.display import LiveDisplay, PlainDisplay
from byoc.tuning.spec import parse_spec


def test_live_progress_shows_trials_counts_and_best():
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=160)
    with LiveDisplay(4, "validation:accuracy", already_done=1, console=console) as show:
        show.trial_started(3, {"lr": 0.0123, "batch-size": 32}, epochs=2)
        show.trial_epoch(3, 1, 0.5)
        show.counts(2, 1, 1, 0, "0.9000 (trial 0)")
        show._progress.refresh()
        live = out.getvalue()
        show.trial_finished(3, "PRUNED", 0.5, "stopped after epoch 1")
    text = out.getvalue()
    assert "trial 3" in live and "lr=0.0123 batch-size=32 | validation:accuracy=0.5000" in live
    assert "running 1 | pruned 1 | failed 0 | best 0.9000 (trial 0)" in live
    assert "trial 3 pruned validation:accuracy=0.5000 - stopped after epoch 1" in text


def test_leaderboard_table_lists_rows_in_rank_order():
    spec = parse_spec({"objective": {"metric": "validation:loss", "direction": "Minimize"},
                       "strategy": "Random", "max_jobs": 2,
                       "parameters": {"lr": {"type": "continuous", "min": 0.001, "max": 0.1}}})
    rows = [
        {"rank": 1, "trial": 1, "status": "complete", "value": 0.5, "lr": 0.01, "epochs_reported": 2,
         "duration_s": 10.0, "failure_reason": ""},
        {"rank": 2, "trial": 0, "status": "failed", "value": None, "lr": 0.09, "epochs_reported": 0,
         "duration_s": 3.0, "failure_reason": "training job exited with code 1: boom"},
    ]
    out = io.StringIO()
    leaderboard.render(rows, spec, console=Console(file=out, width=200))
    text = out.getvalue()
    assert "validation:loss (minimize)" in text
    assert text.index("complete") < text.index("failed")
    assert "exited with code 1: boom" in text


def test_a_trials_feature_extraction_shows_images_per_second_and_eta():
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=200)
    with LiveDisplay(2, "validation:accuracy", console=console) as show:
        show.trial_started(0, {"lr": 0.002}, epochs=3)
        show.trial_extracting(0, 3200, 10000, 21.3, "0:05:19")
        show._progress.refresh()
        live = out.getvalue()
    assert "lr=0.002 | extracting features 3200/10000 images, 21.3 img/s, ETA 0:05:19" in live

    lines: list[str] = []
    PlainDisplay(2, "validation:accuracy", print_fn=lines.append).trial_extracting(1, 10, 100, 2.5, "0:00:36")
    assert lines == ["trial 1 extracting features 10/100 images, 2.5 img/s, ETA 0:00:36"]      # a log line
