"""Feedback on answers: the id each answer carries, the flag (form and POST /api/feedback), the operators' review
queue at /review and what users send at /review/traffic, behind REVIEW_CREDENTIALS."""
import collections
import datetime
import logging
import secrets
import threading
import time

from flask import Blueprint, abort, current_app, jsonify, redirect, render_template, request, send_file, url_for
from prometheus_client.core import GaugeMetricFamily
from sqlalchemy.exc import SQLAlchemyError

from ..feedback import insights
from ..feedback.store import DECISIONS, FeedbackError, Limits, Store
from .context import parts
from .registry import NotServed, served_class_names

log = logging.getLogger(__name__)
bp = Blueprint("feedback", __name__)
api_bp = Blueprint("feedback_api", __name__)  # JSON, no cookies: exempt from CSRF like the prediction API
FAILED_LOGINS = 10        # wrong review passwords from one address ...
FAILED_WINDOW = 300.0     # ... within this many seconds: 429 until the window passes
TRAFFIC_DAYS = 14         # days /review/traffic shows unless ?days= says otherwise (1 to MAX_TRAFFIC_DAYS)
MAX_TRAFFIC_DAYS = 90
GAUGE_DAYS = 7            # days the cifarlab_sent_* gauges summarise


def init_app(app):
    """Open (and migrate) the store when FEEDBACK is on, for the served models' classes; register the routes either
    way (they say when it is off)."""
    parts(app).feedback = Store.open(
        app.config["DATABASE_URL"], app.config["FEEDBACK_FOLDER"], Limits.from_config(app.config),
        classes=served_class_names(parts(app).models)) if app.config["FEEDBACK"] else None
    parts(app).review_logins = FailedLogins(FAILED_LOGINS, FAILED_WINDOW)
    if app.config["FEEDBACK"]:
        parts(app).metrics.registry.register(SentCollector(app))
    app.register_blueprint(bp)
    app.register_blueprint(api_bp)


def store():
    found = parts().feedback
    if found is None:
        raise FeedbackError("Feedback is switched off on this server (FEEDBACK=false).", 404)
    return found


def record(items, model_name, model_version):
    """Give each classified item an id (item.extras["id"]) and store it; a store that fails is logged and the
    answers go out without ids rather than not at all."""
    found = parts().feedback
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
    parts().metrics.flags.labels(flagged.model_name, flagged.model_version).inc()
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
    logins, client, now = parts().review_logins, request.remote_addr or "", time.monotonic()
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


@bp.get("/review/traffic")
def traffic():
    """What users send: the last days' verdict mix, flag rate, class mix against the prior, confused pairs, drift."""
    days = request.args.get("days", str(TRAFFIC_DAYS))
    if not days.isdigit() or not 1 <= int(days) <= MAX_TRAFFIC_DAYS:
        abort(400, f"days must be a whole number from 1 to {MAX_TRAFFIC_DAYS}.")
    return render_template("traffic.html", sent=sent_insights(store(), int(days)), gauge_days=GAUGE_DAYS,
                           min_answers=insights.DRIFT_MIN_ANSWERS)


def sent_insights(found, days):
    """insights.Insights of the last `days` days, judged against the default model's sidecar (prior, unknown rate)."""
    try:
        meta = parts().models.get()[1].classifier.meta
    except NotServed:
        meta = {}
    today = datetime.datetime.now(datetime.timezone.utc).date()
    since = insights.window(days, today)[0]
    return insights.summarise(found.daily_counts(since), found.flag_pairs(since), found.class_names(),
                              meta.get("train_class_counts"), (meta.get("ood") or {}).get("test_unknown_rate"),
                              days, today)


class SentCollector:
    """The cifarlab_sent_* gauges: /review/traffic's figures over the last GAUGE_DAYS days, read at each scrape."""

    def __init__(self, app):
        self.app = app

    def describe(self):
        return []  # nothing to read when registered: the figures come from the database at scrape time

    def collect(self):
        with self.app.app_context():
            try:
                sent = sent_insights(parts(self.app).feedback, GAUGE_DAYS)
            except SQLAlchemyError as exc:
                log.warning("cifarlab_sent_* gauges left out of this scrape: %s", exc)
                return
        yield from sent_gauges(sent)


def sent_gauges(sent):
    """Prometheus gauge families of an Insights."""
    window = f"over the last {GAUGE_DAYS} days (UTC)"
    verdicts = GaugeMetricFamily("cifarlab_sent_verdict_share", f"Share of answers by verdict {window}",
                                 labels=["verdict"])
    for verdict in insights.VERDICTS:
        verdicts.add_metric([verdict], sent.verdict_share(verdict))
    classes = GaugeMetricFamily("cifarlab_sent_class_share", "Share of known and unsure answers by predicted class "
                                f"{window}", labels=["class"])
    prior = GaugeMetricFamily("cifarlab_training_class_share", f"Share of each class in the training images "
                              f"({sent.prior_source})", labels=["class"])
    for name, share, prior_share in sent.class_mix:
        classes.add_metric([name], share)
        prior.add_metric([name], prior_share)
    confused = GaugeMetricFamily("cifarlab_sent_confused_flags", f"Flags saying an answer of one class was another, "
                                 f"the {insights.CONFUSED_PAIRS} most frequent pairs {window}",
                                 labels=["predicted", "flagged"])
    for predicted, said, count in sent.confused:
        confused.add_metric([predicted, said], count)
    yield verdicts
    yield classes
    yield prior
    yield confused
    yield GaugeMetricFamily("cifarlab_sent_answers", f"Answers given {window}", value=sent.answers)
    yield GaugeMetricFamily("cifarlab_sent_flag_rate", f"Flags per answer {window}", value=sent.flag_rate)
    yield GaugeMetricFamily("cifarlab_sent_unknown_share_today", "Share of today's answers (UTC) judged unknown",
                            value=sent.days[-1].unknown_share)
    if sent.expected_unknown is not None:
        yield GaugeMetricFamily("cifarlab_expected_unknown_share", "Share of held-out test images the served model "
                                "judges unknown (its sidecar)", value=sent.expected_unknown)
    yield GaugeMetricFamily("cifarlab_drift_warning", "1 when the latest day with enough answers has an unknown share "
                            "well above the expected one (/review/traffic says by how much)",
                            value=float(sent.drift is not None))
