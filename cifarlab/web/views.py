"""The HTML pages: upload form, results (one image or a batch), examples, explanations, model card, stored uploads."""
import logging
import os

from flask import Blueprint, abort, current_app, render_template, request, send_file, send_from_directory

from .. import modelfile, sidecar
from ..modelfile import ModelFileError
from ..prediction import FIELDS
from . import storage, uploads
from .current import classifier, client_address, count_refused_request, decode, predictor, record_answers, served
from .context import parts
from .explain import ExplanationUnavailable
from .registry import NotReady

bp = Blueprint("views", __name__)
bp.add_app_template_filter(sidecar.display_name)  # templates name the model as users would, not by its run
bp.add_app_template_filter(sidecar.training_time)
log = logging.getLogger(__name__)
PLOTS = ("confusion", "reliability", "curves", "mistakes")  # model-card figures written beside the .h5


@bp.app_template_filter("pct")
def percent(value):
    """A share as a percentage with one decimal; a dash when it was not measured (None)."""
    return "–" if value is None else f"{100 * value:.1f}%"


def render_form(message=None, status=200):
    """The upload form, optionally with an error message."""
    return render_template("index.html", message=message, examples=parts().examples), status


def render_results(items, stored_name=None):
    """Result page for one image, results table for several; stored_name: a bundled example's fixed name."""
    threshold = classifier().unsure_threshold
    for item in items:
        if item.error is None:
            item.extras["src"] = save_upload(item, stored_name)
    explainable = parts().explain is not None and \
        parts().explained == (served()[0], served()[1].version)
    verdicts = dict(threshold=threshold, ood_threshold=classifier().detector.threshold, explainable=explainable)
    if len(items) == 1:
        return render_template("result.html", item=items[0], **verdicts)
    refused = sum(item.error is not None for item in items)
    return render_template("batch.html", items=items, classified=len(items) - refused, refused=refused, **verdicts)


def save_upload(item, stored_name=None):
    """Store the display copy and model input; the copy's URL, or a data: URI when the disk refuses.

    A bundled example is stored once under its content name and evicts nothing: a GET (an <img> on any site can
    send one) must not push other users' results out of the upload folder.
    """
    config = current_app.config
    try:
        name = storage.save_image(item.image, config["UPLOAD_FOLDER"], item.pixels, stored_name, client_address())
        if stored_name is None and not storage.enforce_retention(
                config["UPLOAD_FOLDER"], config["UPLOAD_MAX_FILES"], config["UPLOAD_MAX_BYTES"],
                config["UPLOAD_KEEP_SECONDS"], client_share=config["UPLOAD_CLIENT_SHARE"]):
            storage.remove(config["UPLOAD_FOLDER"], name)  # full of results pages have just linked: shown inline
            return uploads.png_data_uri(item.image)
        item.extras["upload"] = name
        return f"/uploads/{name}"
    except OSError as exc:
        log.warning("could not save upload: %s", exc)
        return uploads.png_data_uri(item.image)


@bp.get("/")
def index():
    try:
        served()  # a ?model= that is not served is a 404, not the default model's form
    except NotReady as exc:  # the page still works; an upload is answered 503 until a version loads
        return render_form(exc.message, 200)
    return render_form()


@bp.post("/")
def predict():
    try:
        items = uploads.classify_uploads(request.files, current_app.config["MAX_BATCH_FILES"], decode, predictor())
    except uploads.UploadRefused as exc:
        count_refused_request(exc)
        return render_form(exc.message, exc.status)
    record_answers(items)
    return render_results(items)


@bp.get("/examples/<name>")
def example(name):
    if name not in parts().examples:
        abort(404)
    with open(os.path.join(current_app.static_folder, "examples", f"{name}.png"), "rb") as f:
        data = f.read()
    items = decode([(f"{name}.png", data)])
    uploads.classify_items(predictor(), items)
    return render_results(items, stored_name=storage.content_name(data))


@bp.get("/api")
def api_docs():
    return render_template("api.html", serving_name=current_app.config["SERVING_MODEL_NAME"], fields=FIELDS)


@bp.get("/explain/<name>")
def explain(name):
    """Grad-CAM for a stored result: a page without JavaScript, the figure alone for app.js (?fragment=1)."""
    explanations = parts().explain
    pixels = storage.load_input(current_app.config["UPLOAD_FOLDER"], name)
    index = request.args.get("index", type=int)
    if explanations is None or pixels is None or index is None or not 0 <= index < len(classifier().class_names):
        abort(404)
    try:
        figure = {"src": explanations.overlay(pixels, index), "label": classifier().class_names[index]}
    except ModelFileError as exc:
        log.warning("explanations unavailable: %s", exc)
        abort(503, "Explanations are unavailable: the model file they are computed from cannot be loaded.")
    except ExplanationUnavailable as exc:
        abort(exc.status, exc.message)
    template = "_explain.html" if request.args.get("fragment") else "explain.html"
    return render_template(template, figure=figure, upload=f"/uploads/{name}")


def plot_paths():
    """Evaluation plots of the served model; an export shows those of its source model, beside it."""
    model_path = served()[1].path
    return modelfile.artefact_paths(modelfile.source_model_path(model_path, classifier().meta) or model_path)


@bp.get("/model")
def model_card():
    meta, paths = classifier().meta, plot_paths()
    return render_template("model.html", meta=meta, ev=meta.get("evaluation"), cal=meta.get("calibration"),
                           plots=[k for k in PLOTS if os.path.exists(paths[k])])


@bp.get("/model/<kind>.png")
def model_plot(kind):
    if kind not in PLOTS:
        abort(404)
    path = plot_paths()[kind]
    if not os.path.exists(path):
        abort(404)
    return send_file(os.path.abspath(path), mimetype="image/png", max_age=3600)


@bp.get("/uploads/<name>")
def uploaded(name):
    if not storage.is_valid_name(name):
        abort(404)
    response = send_from_directory(current_app.config["UPLOAD_FOLDER"], name, mimetype="image/png", max_age=3600)
    response.cache_control.public = False
    response.cache_control.private = True  # someone's upload: no shared cache keeps it
    return response


def init_app(app):
    """The bundled example photos' names, read once."""
    parts(app).examples = example_names(os.path.join(app.static_folder, "examples"))


def example_names(folder):
    """Class names with a bundled example image in the folder (read once, at start-up)."""
    return sorted(name[:-4] for name in os.listdir(folder) if name.endswith(".png")) if os.path.isdir(folder) else []
