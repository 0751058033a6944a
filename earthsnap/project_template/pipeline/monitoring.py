"""The drift monitor of a SageMaker endpoint: one step, the notebook sagemaker_monitor.ipynb, run on a schedule.

`earthsnap sagemaker upsert --pipeline pipeline/monitoring.py` creates it on SageMaker (the pipeline earthsnap-monitor:
underscores become hyphens there; a processing job in earthsnap's image that reaches SageMaker, S3 and EventBridge
itself); cloud/release.yaml starts it every `MonitorMinutes` with the prod endpoint's name. `earthsnap run --pipeline
pipeline/monitoring.py -p endpoint=NAME` runs it on this machine with your AWS credentials. The step is never taken from
a cache: what it reads is the endpoint's traffic, which its parameters do not name.
"""

from pathlib import Path

from earthsnap.engine.definition import NotebookStep, Parameter, Pipeline

endpoint = Parameter(
    "endpoint",
    str,
    "",
    "The SageMaker endpoint whose captured traffic is checked, e.g. earthsnap-species-prod; "
    "empty: a first look at demo traffic, without AWS.",
)
minutes = Parameter(
    "minutes", float, 60.0, "The period checked: the last whole `minutes` before the run (the schedule's rate).", min=1
)
window = Parameter(
    "window",
    int,
    0,
    "Requests per window within the period; 0: the period is one window (of at least 20 requests).",
    min=0,
)
period_end = Parameter(
    "period_end",
    str,
    "",
    "Check the period ending at or before this UTC time (ISO 8601, e.g. "
    "2026-12-01T10:00:00Z), for a backfill; empty: now.",
)
bus = Parameter("bus", str, "default", "The EventBridge bus drift alerts are put on; empty: none sent.")

monitor = NotebookStep(
    "monitor",
    notebook="sagemaker_monitor.ipynb",
    output_names=("report",),
    cacheable=False,
    inputs={"endpoint": endpoint, "minutes": minutes, "window": window, "period_end": period_end, "bus": bus},
)

pipeline = Pipeline(
    "earthsnap_monitor",
    parameters=[endpoint, minutes, window, period_end, bus],
    steps=[monitor],
    pipeline_dir=Path(__file__).parent,
)
