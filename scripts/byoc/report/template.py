"""The report's jinja2 template (kept in Python so it ships with the package, no data files)."""

TEMPLATE = r"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>Profiler report: {{ job_name }}</title>
<style>
  body { font-family: -apple-system, "Segoe UI", Roboto, Helvetica, Arial, sans-serif; margin: 24px auto;
         max-width: 1100px; color: #222; line-height: 1.45; }
  h1 { margin-bottom: 0; } h2 { border-bottom: 2px solid #ddd; padding-bottom: 4px; margin-top: 32px; }
  .sub { color: #666; margin-top: 4px; }
  table { border-collapse: collapse; width: 100%; margin: 8px 0 16px; font-size: 14px; }
  th, td { border: 1px solid #ddd; padding: 6px 8px; text-align: left; vertical-align: top; }
  th { background: #f4f4f4; }
  .status { font-weight: 600; white-space: nowrap; }
  .Triggered, .IssuesFound, .Error { color: #b00020; }
  .OK, .NoIssuesFound { color: #1b7f3b; }
  .Notapplicable, .Notevaluated { color: #888; }
  .Noissuesinthechecksthatran { color: #92400e; }
  .cards { display: flex; gap: 12px; flex-wrap: wrap; }
  .card { border: 1px solid #ddd; border-radius: 6px; padding: 10px 14px; min-width: 150px; }
  .card .v { font-size: 22px; font-weight: 600; } .card .k { color: #666; font-size: 12px; }
  img { max-width: 100%; border: 1px solid #eee; }
  ul.recs li { margin-bottom: 6px; }
  .basis { color: #777; font-size: 12px; }
  code { background: #f4f4f4; padding: 0 3px; }
</style>
</head>
<body>
<h1>Profiler report</h1>
<p class="sub">Job output: <code>{{ output_dir }}</code> &middot; generated {{ generated }}</p>

<h2 id="summary">Summary</h2>
<div class="cards">
  {% for card in cards %}<div class="card"><div class="v">{{ card.value }}</div><div class="k">{{ card.label }}</div></div>{% endfor %}
</div>

<h2 id="recommendations">Recommendations</h2>
{% if recommendations %}
<ul class="recs">{% for r in recommendations %}<li><b>{{ r.source }}</b>: {{ r.text }}</li>{% endfor %}</ul>
{% else %}<p>No rule triggered; nothing to change based on this run.</p>{% endif %}

<h2 id="phases">Time by phase</h2>
{% if phase_table %}
{% if plots.phases %}<img alt="time by phase" src="{{ plots.phases }}">{% endif %}
<table><tr><th>Phase</th><th>Seconds</th><th>Share of the job</th></tr>
{% for row in phase_table %}<tr><td>{{ row.phase }}</td><td>{{ row.seconds }}</td><td>{{ row.share }}</td></tr>{% endfor %}
</table>{% else %}<p>No phase timings recorded (a job from before they were written).</p>{% endif %}

<h2 id="profiler-rules">Profiler rules</h2>
<p>The rules SageMaker's <code>ProfilerReport</code> runs, with its default thresholds.</p>
<table>
<tr><th>Rule</th><th>Status</th><th>What it checks</th><th>Finding</th><th>Thresholds</th></tr>
{% for c in checks %}
<tr><td>{{ c.rule }}</td><td class="status {{ c.status | replace(' ', '') }}">{{ c.status }}</td>
<td>{{ c.description }}{% if c.basis %}<div class="basis">Local basis: {{ c.basis }}</div>{% endif %}</td>
<td>{{ c.finding }}</td>
<td>{% for k, v in c.parameters.items() %}{{ k }}={{ v }}{% if not loop.last %}, {% endif %}{% endfor %}</td></tr>
{% endfor %}
</table>

<h2 id="utilization">System utilisation over time</h2>
{% if plots.utilization %}<img alt="utilisation over time" src="{{ plots.utilization }}">{% else %}<p>No system samples recorded.</p>{% endif %}
{% if usage_table %}
<table><tr><th>Metric</th><th>p5</th><th>p50</th><th>p95</th><th>max</th></tr>
{% for row in usage_table %}<tr><td>{{ row.metric }}</td><td>{{ row.p5 }}</td><td>{{ row.p50 }}</td><td>{{ row.p95 }}</td><td>{{ row.max }}</td></tr>{% endfor %}
</table>{% endif %}

<h2 id="steps">Step durations and outliers</h2>
{% if plots.histogram %}<img alt="step duration histogram" src="{{ plots.histogram }}">{% endif %}
{% if plots.timeline %}<img alt="step durations over time" src="{{ plots.timeline }}">{% endif %}
{% if step_table %}
<table><tr><th>Mode</th><th>Steps</th><th>mean (s)</th><th>p50 (s)</th><th>p95 (s)</th><th>max (s)</th><th>Outliers (&gt; mean + 3&sigma;)</th></tr>
{% for row in step_table %}<tr><td>{{ row.mode }}</td><td>{{ row.steps }}</td><td>{{ row.mean }}</td><td>{{ row.p50 }}</td><td>{{ row.p95 }}</td><td>{{ row.max }}</td><td>{{ row.outliers }}</td></tr>{% endfor %}
</table>{% else %}<p>No step timings recorded.</p>{% endif %}

<h2 id="dataloading">Data loading</h2>
<p>Share of the time of the {{ loading_what }} spent waiting for the next batch: <b>{{ data_wait_share }}</b>{% if loading_what != "training steps" %} (the head trained on cached features, so the extraction is where the images were read){% endif %}.</p>
{% if plots.data_wait %}<img alt="share of the {{ loading_what }}' time spent waiting for data" src="{{ plots.data_wait }}">{% endif %}

<h2 id="epochs">Per-epoch summary</h2>
{% if epoch_table %}
<table><tr>{% for h in epoch_headers %}<th>{{ h }}</th>{% endfor %}</tr>
{% for row in epoch_table %}<tr>{% for h in epoch_headers %}<td>{{ row[h] }}</td>{% endfor %}</tr>{% endfor %}
</table>{% else %}<p>No per-epoch data.</p>{% endif %}

<h2 id="debugger-rules">Debugger rules</h2>
{% if rule_results %}
<table><tr><th>Rule</th><th>Status</th><th>Step</th><th>Message</th><th>Parameters</th></tr>
{% for r in rule_results %}
<tr><td>{{ r.rule }}</td><td class="status {{ r.shown | replace(' ', '') }}">{{ r.shown }}</td>
<td>{% if r.step is not none %}{{ r.step }} ({{ r.mode }} {{ r.mode_step }}){% endif %}</td>
<td>{{ r.message }}{% for n in r.notes %}<div class="basis">{{ n }}</div>{% endfor %}</td>
<td>{% for k, v in r.parameters.items() %}{{ k }}={{ v }}{% if not loop.last %}, {% endif %}{% endfor %}</td></tr>
{% endfor %}</table>
{% else %}<p>No Debugger rule results for this job (run <code>byoc report --job-dir JOB_DIR</code>).</p>{% endif %}
{% if skipped_lines %}<p class="basis">{{ skipped_lines }} unreadable record line(s) were skipped.</p>{% endif %}
</body>
</html>
"""
