"""Flask web app: upload an image, get the CIFAR-10 class with calibrated top-3 probabilities.

    flask --app app run                     # development server
    python app.py --host 127.0.0.1 --port 5000
"""
import argparse
import importlib.util
import io
import logging
import os
import secrets
import sys
import threading
import time

from flask import Flask, Request, abort, current_app, g, render_template, request, send_file, send_from_directory
from flask_wtf.csrf import CSRFError, CSRFProtect
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge, SecurityError

from cifarlab import api, checkpoint, memory, service, settings, storage
from cifarlab.checkpoint import ModelFileError
from cifarlab.remote import BackendUnavailable, CircuitBreaker, RemoteClassifier

log = logging.getLogger("cifarlab.app")
PLOTS = ("confusion", "reliability", "curves", "mistakes")  # model-card figures written beside the .h5
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
    app = Flask(__name__)
    app.request_class = InMemoryRequest
    app.config.from_mapping(settings.defaults(), SESSION_COOKIE_SAMESITE="Lax")
    app.config.update(settings.from_environ())
    if test_config:
        app.config.update(test_config)
    if not app.config["SECRET_KEY"]:
        app.config["SECRET_KEY"] = secrets.token_hex(32)
        log.warning("SECRET_KEY is not set: using a random per-process key (sessions and CSRF tokens "
                    "will not survive a restart or be shared between workers).")

    config = app.config
    if config["INFERENCE_URL"]:
        classifier = RemoteClassifier(
            config["INFERENCE_URL"], config["SERVING_MODEL_NAME"], config["INFERENCE_TIMEOUT"],
            config["INFERENCE_RETRIES"], max_inflight=config["INFERENCE_MAX_INFLIGHT"],
            max_response=config["INFERENCE_MAX_RESPONSE"],
            breaker=CircuitBreaker(config["BREAKER_FAILURES"], config["BREAKER_COOLDOWN"]))
    else:
        from cifarlab.inference import Classifier

        classifier = Classifier.from_path(app.config["MODEL_PATH"])  # raises ModelFileError, once per process
    classifier.warm_up()
    app.extensions["classifier"] = classifier
    app.extensions["unsure_threshold"] = unsure_threshold(config, classifier)
    app.extensions["explain"] = Explanations.for_classifier(config, classifier)
    app.extensions["examples"] = example_names(os.path.join(app.static_folder, "examples"))
    os.makedirs(app.config["UPLOAD_FOLDER"], exist_ok=True)
    csrf.init_app(app)
    csrf.exempt(api.bp)  # no cookies or sessions behind the JSON API, so nothing for a forged post to ride on
    app.register_blueprint(api.bp)
    register_routes(app)
    return app


def render_form(message=None, status=200):
    """The upload form, optionally with an error message."""
    return render_template("index.html", message=message, examples=current_app.extensions["examples"]), status


def example_names(folder):
    """Class names with a bundled example image in the folder (read once, at start-up)."""
    return sorted(name[:-4] for name in os.listdir(folder) if name.endswith(".png")) if os.path.isdir(folder) else []


def unsure_threshold(config, classifier):
    """Configured threshold, else the one chosen on validation data (sidecar), else 0.5."""
    configured = config["UNSURE_THRESHOLD"]
    if configured is not None:
        return float(configured)
    return float(classifier.meta.get("calibration", {}).get("unsure_threshold", 0.5))


GRADCAM_ARCHS = ("baseline", "fast", "muon")  # the nets gradcam.Explainer knows; a transfer net's backbone is not one


class Explanations:
    """Grad-CAM on demand, from a Keras model built lazily, once per process, on the first request for one."""

    def __init__(self, model_path=None, model=None):
        self.model_path, self.model = model_path, model
        self.explainer, self.lock = None, threading.Lock()

    @classmethod
    def for_classifier(cls, config, classifier):
        """Explanations for the served model: its own Keras model, or the .h5 a .tflite was exported from.

        None when disabled, remote, without TensorFlow, for a net Grad-CAM does not know, or when no .h5 is at hand.
        """
        if (not config["GRADCAM"] or config["INFERENCE_URL"] or classifier.meta.get("arch") not in GRADCAM_ARCHS
                or importlib.util.find_spec("tensorflow") is None):
            return None
        if classifier.model is not None:
            return cls(model=classifier.model)
        source = checkpoint.source_model_path(config["MODEL_PATH"], classifier.meta)
        return cls(model_path=source) if source else None

    def overlay(self, pixels, class_index):
        """A PNG data URI of the Grad-CAM heatmap of class_index over the 32x32 input."""
        from cifarlab.ml import gradcam

        with self.lock:
            if self.explainer is None:
                model = self.model or checkpoint.load(self.model_path)[0]
                self.explainer = gradcam.Explainer(model)
            cam, _ = self.explainer.heatmap(pixels, class_index)
        return service.png_data_uri(gradcam.overlay(pixels, cam))


def render_results(app, items):
    """Result page for one image, results table for several."""
    threshold = app.extensions["unsure_threshold"]
    for item in items:
        if item.error is None:
            item.extras["unsure"] = item.prediction.confidence < threshold
            item.extras["src"] = save_upload(app, item)
    explainable = app.extensions["explain"] is not None
    if len(items) == 1:
        return render_template("result.html", item=items[0], threshold=threshold, explainable=explainable)
    return render_template("batch.html", items=items, threshold=threshold, explainable=explainable)


def register_routes(app):
    """URL rules, error pages, logging and security headers."""

    @app.before_request
    def start_timer():
        g.started = time.perf_counter()
        g.started_monotonic = time.monotonic()  # the request's decoding deadline counts from here

    @app.after_request
    def finish(response):
        response.headers.update(SECURITY_HEADERS)
        started = g.get("started")
        if started is not None:
            log.info("%s %s %s %.1fms", request.method, request.path, response.status_code,
                     (time.perf_counter() - started) * 1000)
        return response

    @app.teardown_request
    def give_memory_back(exc):
        if request.method == "POST":  # decoded images leave freed heap behind; hand it to the OS between requests
            memory.release()

    @app.context_processor
    def model_info():
        return {"model_meta": app.extensions["classifier"].meta}

    @app.get("/")
    def index():
        return render_form()

    @app.post("/")
    def predict():
        if "file" not in request.files:
            return render_form("No file was sent: choose an image to upload.", 400)
        try:
            uploads = service.read_uploads(request.files, app.config["MAX_BATCH_FILES"])
        except service.TooManyFiles as exc:
            return render_form(f"Too many files: at most {exc.limit} at once.", 400)
        if not uploads:
            return render_form("No file was selected: choose an image to upload.", 400)
        try:
            items = decode(uploads)
        except service.OverBudget as exc:
            return render_form(exc.message, exc.status)
        refusal = service.refusal(items)
        if refusal:
            return render_form(refusal.message, refusal.status)
        service.classify_items(app.extensions["classifier"], items)
        return render_results(app, items)

    @app.get("/examples/<name>")
    def example(name):
        if name not in app.extensions["examples"]:
            abort(404)
        path = os.path.join(app.static_folder, "examples", f"{name}.png")
        with open(path, "rb") as f:
            items = decode([(f"{name}.png", f.read())])
        service.classify_items(app.extensions["classifier"], items)
        return render_results(app, items)

    def decode(uploads):
        return service.decode_items(uploads, app.extensions["classifier"].input_size,
                                    service.Budget.from_config(app.config), g.started_monotonic)

    @app.get("/api")
    def api_docs():
        return render_template("api.html", serving_name=app.config["SERVING_MODEL_NAME"])

    @app.get("/explain/<name>")
    def explain(name):
        """Grad-CAM for a stored result: a page without JavaScript, the figure alone for app.js (?fragment=1)."""
        explanations, classifier = app.extensions["explain"], app.extensions["classifier"]
        pixels = storage.load_input(app.config["UPLOAD_FOLDER"], name)
        index = request.args.get("index", type=int)
        if explanations is None or pixels is None or index is None or not 0 <= index < len(classifier.class_names):
            abort(404)
        try:
            figure = {"src": explanations.overlay(pixels, index), "label": classifier.class_names[index]}
        except ModelFileError as exc:
            log.warning("explanations unavailable: %s", exc)
            abort(503, "Explanations are unavailable: the model file they are computed from cannot be loaded.")
        template = "_explain.html" if request.args.get("fragment") else "explain.html"
        return render_template(template, figure=figure, upload=f"/uploads/{name}")

    def plot_paths():
        """Evaluation plots of the served model; an export shows those of its source model, beside it."""
        meta = app.extensions["classifier"].meta
        return checkpoint.artefact_paths(checkpoint.source_model_path(app.config["MODEL_PATH"], meta)
                                         or app.config["MODEL_PATH"])

    @app.get("/model")
    def model_card():
        meta = app.extensions["classifier"].meta
        return render_template("model.html", meta=meta, ev=meta.get("evaluation"), cal=meta.get("calibration"),
                               plots=[k for k in PLOTS if os.path.exists(plot_paths()[k])])

    @app.get("/model/<kind>.png")
    def model_plot(kind):
        if kind not in PLOTS:
            abort(404)
        path = plot_paths()[kind]
        if not os.path.exists(path):
            abort(404)
        return send_file(os.path.abspath(path), mimetype="image/png", max_age=3600)

    @app.get("/uploads/<name>")
    def uploaded(name):
        if not storage.is_valid_name(name):
            abort(404)
        response = send_from_directory(app.config["UPLOAD_FOLDER"], name, mimetype="image/png", max_age=3600)
        response.cache_control.public = False
        response.cache_control.private = True  # someone's upload: no shared cache keeps it
        return response

    @app.errorhandler(RequestEntityTooLarge)
    def too_large(exc):
        message = too_large_message(app.config, request.content_length)
        return api.error_json(message, 413) if api.is_json_path(request.path) else render_form(message, 413)

    @app.errorhandler(BackendUnavailable)
    def backend_down(exc):
        log.warning("inference backend unavailable: %s", exc)
        message = "The inference backend is unavailable right now; please try again in a moment."
        if api.is_json_path(request.path):
            return api.error_json(message, 503)
        return render_template("error.html", code=503, name="Service unavailable", description=message), 503

    @app.errorhandler(CSRFError)
    def csrf_failed(exc):
        return render_form("The form had expired or was not sent from this site; please try again.", 400)

    @app.errorhandler(SecurityError)
    def untrusted_host(exc):  # no URL adapter for an untrusted host, so no page templates either
        return "Bad request: this server does not answer for that host name.\n", 400, {"Content-Type": "text/plain"}

    @app.errorhandler(HTTPException)
    def http_error(exc):
        if api.is_json_path(request.path):
            response = api.error_json(exc.description, exc.code)[0]
        else:
            response = app.make_response(render_template("error.html", code=exc.code, name=exc.name,
                                                         description=exc.description))
        response.status_code = exc.code
        response.headers.extend((k, v) for k, v in exc.get_headers() if k != "Content-Type")  # Allow on 405
        return response

    @app.errorhandler(Exception)
    def unexpected(exc):
        log.exception("unhandled error on %s %s", request.method, request.path)
        if api.is_json_path(request.path):
            return api.error_json("internal error; it was logged", 500)
        return render_template("error.html", code=500, name="Internal error",
                               description="Something went wrong on our side; the error was logged."), 500


def too_large_message(config, content_length):
    """The 413 message naming the limit the request actually hit: its size, or its number of parts."""
    limit = config["MAX_CONTENT_LENGTH"]
    if content_length is not None and content_length > limit:
        return f"The upload is too large: {content_length / 2**20:.1f} MB; the limit is {limit / 2**20:g} MB per request."
    return (f"The form has too many parts or too large a field: at most {config['MAX_FORM_PARTS']} parts "
            f"and {limit / 2**20:g} MB per request.")


def save_upload(app, item):
    """Store the display copy and model input; the copy's URL, or a data: URI when the disk refuses."""
    try:
        name = storage.save_image(item.image, app.config["UPLOAD_FOLDER"], item.pixels)
        storage.enforce_retention(app.config["UPLOAD_FOLDER"], app.config["UPLOAD_MAX_FILES"],
                                  app.config["UPLOAD_MAX_BYTES"])
        item.extras["upload"] = name
        return f"/uploads/{name}"
    except OSError as exc:
        log.warning("could not save upload: %s", exc)
        return service.png_data_uri(item.image)


def main(argv=None):
    parser = argparse.ArgumentParser(description="Serve the CIFAR-10 classifier (development server).")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=5000)
    parser.add_argument("--debug", action="store_true", help="Flask debug mode (never in production)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        app = create_app()
    except (ModelFileError, settings.ConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    app.run(host=args.host, port=args.port, debug=args.debug)
    return 0


if __name__ == "__main__":
    sys.exit(main())
