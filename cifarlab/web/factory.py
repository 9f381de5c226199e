"""The application factory: settings, then each subsystem's init_app, CSRF and the blueprints; it only composes."""
import io
import logging
import secrets

from flask import Flask, Request
from flask_wtf.csrf import CSRFProtect

from .. import REPO
from . import api, context, decoding, errors, explain, feedback, hooks, metrics, registry, settings, storage, views

log = logging.getLogger("cifarlab.app")
csrf = CSRFProtect()


class InMemoryRequest(Request):
    """Uploaded files stay in memory (MAX_CONTENT_LENGTH bounds them): nothing is spooled to a TMPDIR that may be full."""

    def _get_file_stream(self, total_content_length, content_type, filename=None, content_length=None):
        return io.BytesIO()


def create_app(test_config=None):
    """Application factory: config from the settings table's defaults, then environment, then test_config; then each
    subsystem's init_app, in the order they need each other.

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
    app.extensions[context.KEY] = context.Parts()  # each init_app below sets its own part
    app.url_map.merge_slashes = False  # /v1/models/%2F/metadata is a JSON 404, not an HTML redirect to a merged path
    metrics.init_app(app)
    registry.init_app(app)  # needs the metrics
    explain.init_app(app)  # needs the models
    views.init_app(app)
    storage.init_app(app)
    decoding.init_app(app)
    hooks.init_app(app)  # before CSRFProtect's check, so that its refusals are timed and logged too
    csrf.init_app(app)
    csrf.exempt(api.bp)  # no cookies or sessions behind the JSON API, so nothing for a forged post to ride on
    csrf.exempt(feedback.api_bp)
    feedback.init_app(app)  # needs the models and the metrics
    app.register_blueprint(api.bp)
    app.register_blueprint(views.bp)
    errors.init_app(app)
    return app


def configure_logging(level):
    """The app's loggers write to stderr at `level`, unless whoever runs the app (pytest, a host app) set up logging."""
    logger = logging.getLogger("cifarlab")
    if not logger.handlers and not logging.getLogger().handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("[%(asctime)s] [%(process)d] [%(levelname)s] %(name)s: %(message)s",
                                               "%Y-%m-%d %H:%M:%S %z"))  # gunicorn's own line format
        logger.addHandler(handler)
    logger.setLevel(level.upper())


