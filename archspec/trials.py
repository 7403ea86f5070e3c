"""The search's trials on Ray Tune: one trial per network and seed.

Tune gives what a search needs and archspec does not write again: resources
per trial (one CPU; one GPU where the cluster has GPUs), trials run as
resources free up, a failed trial reported without stopping the others
(FailureConfig(max_failures=0): a failure is a result, not retried), and the
experiment's state saved as it goes, so `Tuner.restore` continues an
interrupted search without running a finished trial again. Only `archspec
search` imports this module (the extra archspec[search]).
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

# The reporter of Ray's older output engine honours verbose=0; the new one
# prints its tables regardless.
os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")

import ray
from ray import tune

from . import search
from .errors import SpecError

NAME = "search"  # the experiment's folder under OUT/ray


def _trainable(config: dict[str, Any], jobs: dict, data: dict) -> None:
    tune.report(search.train(jobs[config["trial"]], data))


class Record(tune.Callback):
    """Appends each ended trial to trials.jsonl, in the driver, as trials end
    (a killed search keeps what finished), and prints a progress line."""

    def __init__(self, path: str, meta: dict[str, dict], total: int) -> None:
        self.path = path
        self.meta = meta
        self.total = total

    def _write(self, trial: Any, record: dict) -> None:
        key = trial.config["trial"]
        done = search.recorded(Path(self.path))
        if key in done:
            return  # ended before an interruption that Tune's state missed
        record = {"trial": key, **self.meta[key], **record}
        with open(self.path, "a") as f:
            f.write(json.dumps(record, sort_keys=True) + "\n")
        print(
            f"[{len(done) + 1}/{self.total}] {search.describe(record)}",
            file=sys.stderr,
            flush=True,
        )

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        result = trial.last_result or {}
        kept = (
            "accuracy",
            "loss",
            "steps",
            "train_seconds",
            "device",
            "started",
            "ended",
        )
        self._write(trial, {"status": "ok", **{k: result[k] for k in kept}})

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        # Tune has just written the trial's error.txt (its traceback) locally;
        # the copy in storage comes later.
        path = trial.error_file
        text = Path(path).read_text() if path and Path(path).is_file() else ""
        self._write(
            trial,
            {"status": "failed", "error": _last_line(text) or "the trial failed"},
        )


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1][:300] if lines else text[:300]


def run(
    settings: search.Settings,
    jobs: dict[str, dict],
    meta: dict[str, dict],
    data: dict[str, Any],
    echo: Callable[[str], None],
) -> None:
    """Run every trial not yet recorded in OUT/trials.jsonl."""
    out = settings.out.resolve()
    storage = out / "ray"
    started = not ray.is_initialized()
    # Ray warns at every start that its token authentication is on: that is
    # the setting wanted, not news.
    logging.getLogger(
        "ray._private.authentication.authentication_token_setup"
    ).setLevel(logging.ERROR)
    # Restoring, Tune looks for the results of the trials an interruption
    # stopped, and warns that they have none.
    logging.getLogger("ray.tune.analysis.experiment_analysis").setLevel(logging.ERROR)
    # A failed trial is reported in one line (its last line of error; the
    # traceback stays in the trial's error.txt under OUT/ray): Tune's own
    # report of it is that traceback again, thirty lines of Ray internals.
    for name in ("ray.tune.execution.tune_controller", "ray.tune.tune"):
        logging.getLogger(name).setLevel(logging.CRITICAL)
    if started:
        try:
            ray.init(
                address=settings.ray,
                include_dashboard=False if settings.ray is None else None,
                logging_level=logging.WARNING,
                log_to_driver=False,
                configure_logging=True,
            )
        except ConnectionError as exc:
            raise SpecError(f"--ray {settings.ray}: {exc}") from None
    try:
        gpus = ray.cluster_resources().get("GPU", 0)
        resources = {"cpu": 1, "gpu": 1 if gpus else 0}
        echo(
            f"Ray: {ray.cluster_resources().get('CPU', 0):g} CPUs, {gpus:g} GPUs "
            f"({'cluster ' + settings.ray if settings.ray else 'started here'}); "
            f"each trial takes {resources['cpu']} CPU"
            + (f" and {resources['gpu']} GPU" if resources["gpu"] else "")
        )
        trainable = tune.with_resources(
            tune.with_parameters(_trainable, jobs=jobs, data=data), resources
        )
        experiment = storage / NAME
        if settings.resume and tune.Tuner.can_restore(str(experiment)):
            tuner = tune.Tuner.restore(
                str(experiment),
                trainable,
                resume_unfinished=True,
                resume_errored=False,
                restart_errored=False,
            )
        else:
            # A resumed search whose first run ended before Tune saved its
            # state starts over, skipping the trials recorded in trials.jsonl.
            done = search.recorded(out / "trials.jsonl")
            todo = [key for key in jobs if key not in done]
            if not todo:
                return
            tuner = tune.Tuner(
                trainable,
                param_space={"trial": tune.grid_search(todo)},
                # One worker process trains trial after trial: a new one per
                # trial would import torch and fetch the images again.
                tune_config=tune.TuneConfig(reuse_actors=True),
                run_config=tune.RunConfig(
                    name=NAME,
                    storage_path=str(storage),
                    verbose=0,
                    failure_config=tune.FailureConfig(max_failures=0),
                    callbacks=[Record(str(out / "trials.jsonl"), meta, len(jobs))],
                    log_to_file=True,
                ),
            )
        tuner.fit()
    finally:
        if started:
            ray.shutdown()
