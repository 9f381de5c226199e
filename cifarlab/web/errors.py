"""Error answers: JSON ({"error": ...}) on the API's paths, the upload form or an error page elsewhere; never a trace."""
import json
import logging
from http import HTTPStatus

from flask import Flask, render_template, request
from flask_wtf.csrf import CSRFError
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge, SecurityError

from .. import REPO
from ..errors import CifarlabError
from . import api, views
from .remote import BackendUnavailable
from .registry import NotServed

TITLES = {400: "Bad request", 404: "Not found", 507: "Feedback store full"}  # error page titles, else HTTP's phrase

log = logging.getLogger(__name__)


def reply(message, status, page_title=None):
    """{"error": message} on a JSON path; else the error page titled page_title, or the upload form when None."""
    if api.is_json_path(request.path):
        return api.error_json(message, status)
    if page_title is None:
        return views.render_form(message, status)
    return render_template("error.html", code=status, name=page_title, description=message), status


def too_large_message(config, content_length):
    """The 413 message naming the limit the request actually hit: its size, or its number of parts."""
    limit = config["MAX_CONTENT_LENGTH"]
    if content_length is not None and content_length > limit:
        return f"The upload is too large: {content_length / 2**20:.1f} MB; the limit is {limit / 2**20:g} MB per request."
    return (f"The form has too many parts or too large a text field: at most {config['MAX_FORM_PARTS']} parts, "
            f"{config['MAX_FORM_MEMORY_SIZE'] / 1000:g} kB per text field and {limit / 2**20:g} MB per request.")


def proxy_errors(max_content_length):
    """{status: (title, message)} of the errors nginx answers itself under `make serve`, before or instead of the app."""
    return {
        405: ("Method Not Allowed", "This method is not allowed here; the Allow header names those that are."),
        413: ("Request Entity Too Large", f"The upload is too large: the limit is {max_content_length / 2**20:g} MB "
                                          "per request."),
        502: ("Bad Gateway", "The classifier is not answering right now (it may be starting or restarting); "
                             "please try again in a moment."),
        504: ("Gateway Timeout", "The classifier took too long to answer; please try again, with fewer or smaller "
                                 "images."),
    }


def proxy_pages(max_content_length, model_meta):
    """{file name: text} of nginx's answers for its own errors, in the app's words: CODE.json ({"error": ...}) for
    the JSON paths, CODE.html (the app's error page, footer included) for the rest."""
    app = Flask("app", root_path=str(REPO))  # the templates and the URL map alone: no model is loaded
    app.register_blueprint(views.bp)
    pages = {}
    with app.test_request_context("/"):
        for code, (title, message) in proxy_errors(max_content_length).items():
            pages[f"{code}.json"] = json.dumps({"error": message}) + "\n"
            pages[f"{code}.html"] = render_template("error.html", code=code, name=title, description=message,
                                                    model_meta=model_meta)
    return pages


def init_app(app):
    """Install the error handlers on the app."""

    @app.errorhandler(RequestEntityTooLarge)
    def too_large(exc):
        return reply(too_large_message(app.config, request.content_length), 413)

    @app.errorhandler(BackendUnavailable)
    def backend_down(exc):
        log.warning("inference backend unavailable: %s", exc)
        return reply("The inference backend is unavailable right now; please try again in a moment.", 503,
                     "Service unavailable")

    @app.errorhandler(NotServed)
    def not_served(exc):
        if exc.status == 503 or api.is_json_path(request.path):  # JSON: TF Serving's own words
            return reply(exc.message, exc.status, "Service unavailable")
        return reply(f"No such model here: {exc.message}", 404, None if request.method == "POST" else "Not found")

    @app.errorhandler(CifarlabError)
    def refused(exc):
        """Any error of the package's family the handlers above do not answer: its message and its status."""
        if exc.status >= 500:
            log.warning("%s on %s %s: %s", type(exc).__name__, request.method, request.path, exc.message)
        return reply(exc.message, exc.status, TITLES.get(exc.status) or HTTPStatus(exc.status).phrase)

    @app.errorhandler(CSRFError)
    def csrf_failed(exc):
        return reply("The form had expired or was not sent from this site; please try again.", 400)

    @app.errorhandler(SecurityError)
    def untrusted_host(exc):  # no URL adapter for an untrusted host, so no page templates either
        return "Bad request: this server does not answer for that host name.\n", 400, {"Content-Type": "text/plain"}

    @app.errorhandler(HTTPException)
    def http_error(exc):
        response = app.make_response(reply(exc.description, exc.code, exc.name))
        response.headers.extend((k, v) for k, v in exc.get_headers() if k != "Content-Type")  # Allow on 405
        return response

    @app.errorhandler(Exception)
    def unexpected(exc):
        log.exception("unhandled error on %s %s", request.method, request.path)
        return reply("Internal error: something went wrong on our side; it was logged.", 500, "Internal error")
