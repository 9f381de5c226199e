"""The current request's model, client, decoding and predictor: what the pages and the JSON API both read."""
import time

from flask import current_app, g, request

from . import decoding, feedback, metrics
from .context import parts
from .registry import NotServed


def requested_model():
    """(name, version, label) this request asks for: from a /v1 URL, else ?model= or the form's model field."""
    args = (request.view_args or {}) if request.path.startswith("/v1/") else {}  # elsewhere <name> is a file's
    name = args.get("name") or request.args.get("model") or (
        request.form.get("model") if request.method == "POST" and request.mimetype == "multipart/form-data" else None)
    return name or None, args.get("version"), args.get("label")


def served():
    """(name, Served) of this request's model, looked up once per request; NotServed (404) when there is none."""
    if "served" not in g:
        name, version, label = requested_model()
        g.served = parts().models.get(name, version, label, client_id())
        g.model = (g.served[0], str(g.served[1].version))
    return g.served


def client_id():
    """Who is asking, for a sticky canary split: the X-Client-ID header (API clients), else the client's address."""
    given = request.headers.get("X-Client-ID", "")
    return "id:" + given if 0 < len(given) <= 128 else "ip:" + client_address()


def client_address():
    """The client's address (nginx's X-Real-IP behind make serve): what a client cannot choose per request."""
    return str(metrics.client_address(request.remote_addr, request.headers.get("X-Real-IP")))


def served_or_default():
    """For templates and error pages: the request's model when it was looked up, or ?model='s, else the default;
    (name, None) when none is loaded. Never reads the body (an error page may be answering for a body that could not
    be read)."""
    if "served" in g:
        return g.served
    models = parts().models
    try:
        return models.get(request.args.get("model") or None)
    except NotServed:
        try:
            return models.get()
        except NotServed:
            return models.default, None


def classifier():
    """The classifier of this request's model (class names, thresholds, sidecar)."""
    return served()[1].classifier


class RecordedPredictor:
    """predict() on this request's model, through its batcher, counted in the metrics and the request's log."""

    def predict(self, images):
        name, model = served()
        started = time.perf_counter()
        predictions = model.predict(images)
        counted = parts().metrics
        counted.observe_predictions(name, str(model.version), predictions, time.perf_counter() - started)
        if model.predictor is model.classifier:  # no batcher: the request's images are the forward pass
            counted.batch_size.labels(name).observe(len(predictions))
        shadow = parts().models.shadow(name, model.version, client_id())
        if shadow is not None:  # the canary computes beside the answer, which stays stable's
            counted.observe_shadow(name, str(shadow.version), predictions, shadow.predict(images))
        for prediction in predictions:
            g.verdicts[prediction.verdict] = g.verdicts.get(prediction.verdict, 0) + 1
        return predictions


def count_refused_request(exc):
    """An upload refused before any file was read (none sent, too many) counts as one refusal for reason "request"."""
    if not exc.items and exc.status != 413:  # 413s were counted where their budget ran out
        parts().metrics.observe_refused("request")


def record_answers(items):
    """Store this request's classified items under ids, by the model that answered (FEEDBACK)."""
    name, model = served()
    feedback.record(items, name, model.version)


def predictor():
    return RecordedPredictor()


def decode(named_payloads):
    """[(filename, bytes)] -> decoded items, within this request's pixel budget and deadline, in the app's decoders;
    refused images counted by reason."""
    counted = parts().metrics
    try:
        items = decoding.decode_items(named_payloads, classifier().input_size,
                                      decoding.Budget.from_config(current_app.config), g.get("started_monotonic"),
                                      parts().decoders)
    except decoding.OverBudget as exc:
        counted.observe_refused(exc.reason)
        raise
    for item in items:
        if item.error is not None:
            counted.observe_refused(item.error.reason)
    return items
