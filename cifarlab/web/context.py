"""The app's parts, in one typed object per app: what create_app builds once and every request uses."""
from dataclasses import dataclass
from typing import Any

from flask import current_app

KEY = "cifarlab"  # the app.extensions key of an app's Parts


@dataclass
class Parts:
    """Each subsystem's init_app sets its own parts once, at start-up; requests only read them."""

    metrics: Any = None  # metrics.Metrics: this process's Prometheus counters
    in_flight: Any = None  # batching.InFlight: requests being answered (the batcher waits for them)
    models: Any = None  # registry.Servables: the models by name and version
    explain: Any = None  # explain.Explanations or RemoteExplanations; None: no heatmaps
    explained: Any = None  # (name, version) the heatmaps are for
    examples: tuple = ()  # the example photos' names
    decoders: Any = None  # decoding.DecoderPool; None: decoded in the request's thread
    feedback: Any = None  # feedback.store.Store; None: FEEDBACK off
    review_logins: Any = None  # feedback.FailedLogins: failed review logins per client


def parts(app=None):
    """The Parts of app (by default the current one)."""
    return (app or current_app).extensions[KEY]
