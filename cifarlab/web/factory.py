"""The application factory: settings, the classifier (local or remote), CSRF, blueprints, per-request hooks."""
import datetime
import io
import json
import logging
import os
import re
import secrets
import tempfile
import time
import uuid
from urllib.parse import quote

from flask import Flask, Request, abort, current_app, g, request
from flask_wtf.csrf import CSRFProtect

from .. import REPO, memory, modeldir
from . import api, context, errors, feedback, registry, settings, views
from .batching import Batcher, InFlight
from .decoding import DecoderPool
from .explain import Explanations
from .metrics import CONTENT_TYPE, Metrics, allowed, client_address
from .remote import CircuitBreaker, RemoteClassifier

log = logging.getLogger("cifarlab.app")
REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")  # an X-Request-ID passed through as is; others replaced
LOGGED_PATH_SAFE = "/:@!$&'()*+,;=-._~"  # RFC 3986 path characters; the rest (CR, LF, spaces) logged %-escaped
DRAIN_SLACK = 128 * 1024  # bytes past MAX_CONTENT_LENGTH an early answer still reads off (nginx lets 64 kB through)
csrf = CSRFProtect()

SECURITY_HEADERS = {
    "Content-Security-Policy": ("default-src 'self'; img-src 'self' data: blob:; style-src 'self'; "
                                "script-src 'self'; media-src 'self' blob:; frame-ancestors 'none'; "
                                "form-action 'self'; base-uri 'none'; object-src 'none'"),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
}


class InMemoryRequest(Request):
    """Uploaded files stay in memory (MAX_CONTENT_LENGTH bounds them): nothing is spooled to a TMPDIR that may be full."""

    def _get_file_stream(self, total_content_length, content_type, filename=None, content_length=None):
        return io.BytesIO()


def create_app(test_config=None):
    """Application factory: config from the settings table's defaults, then environment, then test_config.

    Raises settings.ConfigError for a bad setting and ModelFileError for a bad model, each with a one-line message.
    """
    app = Flask("app", root_path=str(REPO))  # templates/, static/ and uploads/ live at the repository root
    app.request_class = InMemoryRequest
    app.config.from_mapping(settings.defaults(), SESSION_COOKIE_SAMESITE="Lax")
    app.config.update(settings.from_environ())
    if test_config:
        app.config.update(test_config)
    configure_logging(app.config["LOG_LEVEL"])
    if not app.config["SECRET_KEY"]:
        app.config["SECRET_KEY"] = secrets.token_hex(32)
        log.warning("SECRET_KEY is not set: using a random per-process key (sessions and CSRF tokens "
                    "will not survive a restart or be shared between workers).")
    app.extensions[context.KEY] = built = context.Parts(metrics=Metrics(), in_flight=InFlight())
    built.models = make_servables(app.config, built.metrics, built.in_flight)
    built.explain, built.explained = make_explanations(app.config, built.models)
    built.examples = example_names(os.path.join(app.static_folder, "examples"))
    check_upload_folder(app.config["UPLOAD_FOLDER"])
    built.decoders = make_decoders(app.config)
    app.url_map.merge_slashes = False  # /v1/models/%2F/metadata is a JSON 404, not an HTML redirect to a merged path
    register_hooks(app)  # first, so that a request refused while its form is read is timed, logged and drained too
    app.before_request(refuse_unnamed_fields)  # before CSRFProtect's check, which cannot read such a form
    csrf.init_app(app)
    csrf.exempt(api.bp)  # no cookies or sessions behind the JSON API, so nothing for a forged post to ride on
    csrf.exempt(feedback.api_bp)
    feedback.init_app(app, served_class_names(built.models))
    app.register_blueprint(api.bp)
    app.register_blueprint(views.bp)
    errors.register(app)
    app.add_url_rule("/metrics", "metrics", scrape)
    return app


def make_explanations(config, models):
    """(Grad-CAM explanations or None, the (name, version) they are for); TensorFlow preloaded when asked."""
    try:
        name, first = models.get()
    except registry.NotServed:  # nothing loaded yet: the worker boots, says not ready, and offers no heatmaps
        return None, None
    explanations = Explanations.for_classifier(config, first.classifier, first.path)
    if isinstance(explanations, Explanations) and config["GRADCAM_PRELOAD"]:
        explanations.preload()
    return explanations, (name, first.version)  # heatmaps are offered for this model version only


def refuse_unnamed_fields():
    """400 for a multipart body with a part that has no name (werkzeug keys it None)."""
    if request.method == "POST" and request.mimetype == "multipart/form-data" and \
            (None in request.form or None in request.files):
        abort(400, "The form has a part without a name.")


def scrape():
    """Prometheus's text format, to the clients METRICS_ALLOW lets in (loopback by default), 403 for others."""
    client = client_address(request.remote_addr, request.headers.get("X-Real-IP"))
    if not allowed(current_app.config["METRICS_ALLOW"], client):
        abort(403, "Metrics are served to the addresses in METRICS_ALLOW only (by default loopback).")
    return context.parts().metrics.exposition(), 200, {"Content-Type": CONTENT_TYPE}


def check_upload_folder(folder):
    """Create the upload folder if needed and check it takes files; settings.ConfigError in one line if not."""
    try:
        os.makedirs(folder, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-check-"):
            pass
    except OSError as exc:
        raise settings.ConfigError(f"setting UPLOAD_FOLDER={folder!r}: cannot create or write files there "
                                   f"({exc.strerror or exc}).") from None


def make_servables(config, metrics, in_flight):
    """The served models: every version folder under MODEL_DIR (polled for new ones), else MODEL_PATH's file or the
    remote front as one model; each warmed up, behind a batcher when BATCH_WINDOW_MS is set."""
    def batching(name, classifier):
        if not config["BATCH_WINDOW_MS"] or config["INFERENCE_URL"]:
            return None
        return Batcher(classifier.predict, config["BATCH_WINDOW_MS"] / 1000, config["BATCH_MAX_IMAGES"], in_flight,
                       observe=metrics.batch_size.labels(name).observe)

    def load(path):
        classifier = make_classifier(config, path)
        classifier.warm_up()
        return classifier

    if config["MODEL_DIR"] and not config["INFERENCE_URL"]:
        models = registry.Servables.from_folder(config["MODEL_DIR"], modeldir.default_name(config), load,
                                                 batching, metrics.observe_model_load, config["CANARY_SHARE"],
                                                 config["CANARY_MODE"])
        if config["MODEL_POLL_SECONDS"]:
            models.start_polling(config["MODEL_POLL_SECONDS"])
        return models
    models = registry.Servables.fixed(config["SERVING_MODEL_NAME"], config["MODEL_PATH"],
                                       load(config["MODEL_PATH"]), batching)
    metrics.observe_model_load(config["SERVING_MODEL_NAME"], "loaded")
    return models


def served_class_names(models):
    """Every class name of the models loaded now, in their order, each once."""
    names = []
    for name in models.names():
        try:
            classes = models.get(name)[1].classifier.class_names
        except registry.NotServed:
            continue
        names += [c for c in classes if c not in names]
    return names


def make_classifier(config, model_path):
    """The remote front's client when INFERENCE_URL is set, else the model file loaded here (once per process)."""
    if config["INFERENCE_URL"]:
        return RemoteClassifier(
            config["INFERENCE_URL"], config["SERVING_MODEL_NAME"], config["INFERENCE_TIMEOUT"],
            config["INFERENCE_RETRIES"], max_inflight=config["INFERENCE_MAX_INFLIGHT"],
            max_response=config["INFERENCE_MAX_RESPONSE"],
            breaker=CircuitBreaker(config["BREAKER_FAILURES"], config["BREAKER_COOLDOWN"]))
    from ..inference import Classifier  # TensorFlow only for a local .h5 (a .tflite needs just LiteRT)

    return Classifier.from_path(model_path, unsure_threshold=config["UNSURE_THRESHOLD"],
                                ood_threshold=config["OOD_THRESHOLD"])  # raises ModelFileError


def make_decoders(config):
    """The pool of decoder processes (None when DECODE_PROCESSES is 0); outside tests one decoder starts now."""
    if not config["DECODE_PROCESSES"]:
        return None
    pool = DecoderPool(config["DECODE_PROCESSES"], config["DECODE_MEMORY"])
    if not config["TESTING"]:
        pool.warm_up()
    return pool


def configure_logging(level):
    """The app's loggers write to stderr at `level`, unless whoever runs the app (pytest, a host app) set up logging."""
    logger = logging.getLogger("cifarlab")
    if not logger.handlers and not logging.getLogger().handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("[%(asctime)s] [%(process)d] [%(levelname)s] %(name)s: %(message)s",
                                               "%Y-%m-%d %H:%M:%S %z"))  # gunicorn's own line format
        logger.addHandler(handler)
    logger.setLevel(level.upper())


def request_record(route, status, seconds):
    """One request as the JSON log's object."""
    model = g.get("model")
    return {"time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds"),
            "request_id": g.request_id, "method": request.method, "route": route, "path": request.path,
            "status": status, "ms": round(seconds * 1000, 2), "images": sum(g.verdicts.values()),
            "verdicts": g.verdicts, "model": model[0] if model else None, "model_version": model[1] if model else None}


def example_names(folder):
    """Class names with a bundled example image in the folder (read once, at start-up)."""
    return sorted(name[:-4] for name in os.listdir(folder) if name.endswith(".png")) if os.path.isdir(folder) else []


def register_hooks(app):
    """Request timing and logging, security headers, heap trimming, the model's sidecar in every template."""

    metrics = context.parts(app).metrics

    @app.before_request
    def start_timer():
        g.started = time.perf_counter()
        g.started_monotonic = time.monotonic()  # the request's decoding deadline counts from here
        given = request.headers.get("X-Request-ID", "")
        g.request_id = given if REQUEST_ID.fullmatch(given) else uuid.uuid4().hex
        g.verdicts = {}
        metrics.in_flight.inc()
        context.parts(app).in_flight.enter()

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
            context.parts(app).in_flight.leave()

    app.after_request(drain_refused_body)  # registered after finish, so it runs before it (Flask runs them reversed)
    app.teardown_request(give_memory_back)

    @app.context_processor
    def model_info():
        name, served = api.served_or_default()
        return {"model_meta": served.classifier.meta if served else None, "model_name": name,
                "model_names": context.parts(app).models.names()}


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
