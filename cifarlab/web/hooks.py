"""Per-request hooks: request ids, timing and logs, security headers, refused bodies drained, memory given back, the
model's sidecar in every template."""
import datetime
import json
import logging
import re
import time
import uuid
from urllib.parse import quote

from flask import abort, current_app, g, request

from .. import memory
from . import current
from .context import parts

log = logging.getLogger("cifarlab.app")
REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")  # an X-Request-ID passed through as is; others replaced
LOGGED_PATH_SAFE = "/:@!$&'()*+,;=-._~"  # RFC 3986 path characters; the rest (CR, LF, spaces) logged %-escaped
DRAIN_SLACK = 128 * 1024  # bytes past MAX_CONTENT_LENGTH an early answer still reads off (nginx lets 64 kB through)

SECURITY_HEADERS = {
    "Content-Security-Policy": ("default-src 'self'; img-src 'self' data: blob:; style-src 'self'; "
                                "script-src 'self'; media-src 'self' blob:; frame-ancestors 'none'; "
                                "form-action 'self'; base-uri 'none'; object-src 'none'"),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
}


def init_app(app):
    """Install the hooks; before any other subsystem's, so that a request refused while its form is read (or by
    CSRFProtect, whose check cannot read a form with an unnamed part) is timed, logged and drained too."""

    metrics = parts(app).metrics

    @app.before_request
    def start_timer():
        g.started = time.perf_counter()
        g.started_monotonic = time.monotonic()  # the request's decoding deadline counts from here
        given = request.headers.get("X-Request-ID", "")
        g.request_id = given if REQUEST_ID.fullmatch(given) else uuid.uuid4().hex
        g.verdicts = {}
        metrics.in_flight.inc()
        parts(app).in_flight.enter()

    @app.after_request
    def finish(response):
        response.headers.update(SECURITY_HEADERS)
        started = g.get("started")
        if started is None:  # answered before the request started (an untrusted host): nothing was counted
            return response
        response.headers["X-Request-ID"] = g.request_id
        seconds = time.perf_counter() - started
        route = request.url_rule.rule if request.url_rule is not None else "unmatched"
        metrics.observe_request(request.method, route, response.status_code, seconds)
        if app.config["LOG_FORMAT"] == "json":
            log.info("%s", json.dumps(request_record(route, response.status_code, seconds)))
        else:
            log.info("%s %s %s %.1fms", request.method, quote(request.path, safe=LOGGED_PATH_SAFE), response.status_code,
                     seconds * 1000)
        return response

    @app.teardown_request
    def leave(exc):
        if g.get("started") is not None:
            metrics.in_flight.dec()
            parts(app).in_flight.leave()

    app.before_request(refuse_unnamed_fields)
    app.after_request(drain_refused_body)  # registered after finish, so it runs before it (Flask runs them reversed)
    app.teardown_request(give_memory_back)

    @app.context_processor
    def model_info():
        name, served = current.served_or_default()
        return {"model_meta": served.classifier.meta if served else None, "model_name": name,
                "model_names": parts(app).models.names()}


def refuse_unnamed_fields():
    """400 for a multipart body with a part that has no name (werkzeug keys it None)."""
    if request.method == "POST" and request.mimetype == "multipart/form-data" and \
            (None in request.form or None in request.files):
        abort(400, "The form has a part without a name.")


def request_record(route, status, seconds):
    """One request as the JSON log's object."""
    model = g.get("model")
    return {"time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds"),
            "request_id": g.request_id, "method": request.method, "route": route, "path": request.path,
            "status": status, "ms": round(seconds * 1000, 2), "images": sum(g.verdicts.values()),
            "verdicts": g.verdicts, "model": model[0] if model else None, "model_version": model[1] if model else None}


def drain_refused_body(response):
    """Read and drop what is left of the body of a refused request (by its Content-Length before a byte was read,
    or by a form field too large midway): the kept-alive connection behind nginx then starts clean, instead of the
    next request on it meeting this one's tail (502). Only up to DRAIN_SLACK past the limit: nginx refuses larger
    bodies itself."""
    length, limit = request.content_length or 0, current_app.config["MAX_CONTENT_LENGTH"]
    if response.status_code < 400 or not 0 < length <= limit + DRAIN_SLACK:
        return response
    # over the limit nothing was read and request.stream would refuse; within it, read on where the form stopped
    stream = request.environ.get("wsgi.input") if length > limit else request.stream
    remaining = length
    while stream is not None and remaining > 0 and (chunk := stream.read(min(remaining, 65536))):
        remaining -= len(chunk)
    return response


def give_memory_back(exc):
    """Between requests, hand the heap a POST's decoded images freed back to the OS."""
    if request.method == "POST":
        memory.release()
