"""Feedback on answers: the id each answer carries, the flag (form and POST /api/feedback), and the operators' review
queue at /review behind REVIEW_CREDENTIALS."""
import collections
import logging
import secrets
import threading
import time

from flask import Blueprint, abort, current_app, jsonify, redirect, render_template, request, send_file, url_for
from sqlalchemy.exc import SQLAlchemyError

from ..feedback.store import DECISIONS, FeedbackError, Limits, Store

log = logging.getLogger(__name__)
bp = Blueprint("feedback", __name__)
api_bp = Blueprint("feedback_api", __name__)  # JSON, no cookies: exempt from CSRF like the prediction API
FAILED_LOGINS = 10        # wrong review passwords from one address ...
FAILED_WINDOW = 300.0     # ... within this many seconds: 429 until the window passes


def init_app(app, class_names):
    """Open (and migrate) the store when FEEDBACK is on; register the routes either way (they say when it is off)."""
    app.extensions["feedback"] = Store.open(
        app.config["DATABASE_URL"], app.config["FEEDBACK_FOLDER"], Limits.from_config(app.config),
        classes=class_names) if app.config["FEEDBACK"] else None
    app.extensions["review_logins"] = FailedLogins(FAILED_LOGINS, FAILED_WINDOW)
    app.register_blueprint(bp)
    app.register_blueprint(api_bp)


def store():
    found = current_app.extensions["feedback"]
    if found is None:
        raise FeedbackError("Feedback is switched off on this server (FEEDBACK=false).", 404)
    return found


def record(items, model_name, model_version):
    """Give each classified item an id (item.extras["id"]) and store it; a store that fails is logged and the
    answers go out without ids rather than not at all."""
    found = current_app.extensions["feedback"]
    good = [item for item in items if item.error is None]
    if found is None or not good:
        return
    try:
        ids = found.record([(item.pixels, item.prediction) for item in good], model_name, model_version)
    except (SQLAlchemyError, OSError) as exc:
        log.warning("answers not stored (no ids given): %s", exc)
        return
    for item, answer_id in zip(good, ids):
        item.extras["id"] = answer_id


def flag(answer_id, label):
    """Store a user's flag, counted in /metrics by the model version that gave the answer; True when it replaced one."""
    flagged = store().flag(answer_id, label)
    current_app.extensions["metrics"].flags.labels(flagged.model_name, flagged.model_version).inc()
    return flagged.replaced


@api_bp.post("/api/feedback")
def api_flag():
    """{"id": ..., "label": class | "none" | "correct"} -> 201 (new flag) or 200 (replaced the earlier one)."""
    body = request.get_json(silent=True)
    if not isinstance(body, dict) or not isinstance(body.get("id"), str) or not isinstance(body.get("label"), str):
        raise FeedbackError('Send JSON {"id": "<the answer\'s id>", "label": "<class>" | "none" | "correct"}.', 400)
    replaced = flag(body["id"], body["label"])
    return jsonify(id=body["id"], label=body["label"], replaced=replaced), 200 if replaced else 201


@bp.post("/feedback")
def form_flag():
    """The result page's "Is this right?" form."""
    answer_id, label = request.form.get("id", ""), request.form.get("label", "")
    if label == "other":
        label = request.form.get("class", "")
    replaced = flag(answer_id, label)
    return render_template("feedback_done.html", label=label, replaced=replaced), 200 if replaced else 201


class FailedLogins:
    """Wrong passwords per client address within a sliding window (per process)."""

    def __init__(self, limit, window):
        self.limit, self.window = limit, window
        self.seen, self.lock = collections.defaultdict(collections.deque), threading.Lock()

    def blocked(self, client, now):
        with self.lock:
            times = self.seen[client]
            while times and now - times[0] > self.window:
                times.popleft()
            if not times:
                del self.seen[client]
            return len(times) >= self.limit

    def add(self, client, now):
        with self.lock:
            self.seen[client].append(now)


@bp.before_request
def operators_only():
    """/review needs REVIEW_CREDENTIALS by HTTP Basic: 403 when unset, 401 without them, 429 after repeated misses."""
    if not request.path.startswith("/review"):
        return None
    expected = current_app.config["REVIEW_CREDENTIALS"]
    if not expected:
        abort(403, "The review queue is off: set REVIEW_CREDENTIALS=user:password to open it.")
    logins, client, now = current_app.extensions["review_logins"], request.remote_addr or "", time.monotonic()
    if logins.blocked(client, now):
        abort(429, f"Too many wrong passwords: try again in {FAILED_WINDOW / 60:g} minutes.")
    auth = request.authorization
    given = f"{auth.username}:{auth.password}" if auth and auth.type == "basic" else ""
    if not secrets.compare_digest(given.encode(), expected.encode()):
        if given:
            logins.add(client, now)
        return current_app.response_class("Operator credentials needed.\n", 401,
                                          {"WWW-Authenticate": 'Basic realm="review", charset="UTF-8"',
                                           "Content-Type": "text/plain; charset=utf-8"})
    return None


@bp.get("/review")
def review():
    """The queue, least sure first, with counts per class and per model version."""
    found = store()
    return render_template("review.html", items=found.queue(), counts=found.counts(), classes=found.class_names(),
                           decisions=DECISIONS)


@bp.post("/review/<answer_id>")
def decide(answer_id):
    store().decide(answer_id, request.form.get("decision", ""), request.form.get("label") or None)
    return redirect(url_for("feedback.review"), 303)


@bp.get("/review/image/<answer_id>")
def image(answer_id):
    found = store()
    row = found.get(answer_id)
    if row is None:
        abort(404, "No such answer.")
    return send_file(found.image_path(row["image_sha256"]), mimetype="image/png", max_age=0)
