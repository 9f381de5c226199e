"""The feedback store: every answer kept for a while under an unguessable id, the user's flag on it, the sampling rule,
the operators' review, and the export of what review kept as an image-folder dataset.

Rows live in SQL (SQLite by default, PostgreSQL for several workers or machines); each answer's 32x32 model input is
a PNG named by its SHA-256 under the store's folder, written once however often it is sent.
"""
import collections
import datetime
import fcntl
import hashlib
import io
import json
import os
import random
import secrets
from dataclasses import dataclass
from typing import NamedTuple
from pathlib import Path

import numpy as np
from PIL import Image
from sqlalchemy import create_engine, event, func, select, update
from sqlalchemy.dialects import postgresql, sqlite

from ..atomic import replace_atomically, write_json
from ..errors import CifarlabError
from .schema import answers, daily

MIGRATIONS = Path(__file__).with_name("migrations")
FLAG_WORDS = ("correct", "none")  # besides a class name: "the answer is right", "it is none of the classes"
REVIEWS = {"accept": "accepted", "relabel": "relabelled", "reject": "rejected"}  # decision -> what the row records
DECISIONS = tuple(REVIEWS)
KEPT = answers.c.flag.is_not(None) | answers.c.sampled  # flagged or sampled: kept for review, never pruned
WAITING = answers.c.review.is_(None) & KEPT              # ... and not reviewed yet
SETTLED = answers.c.review.in_(("accepted", "relabelled"))  # what review kept, with its label
PRUNE_EVERY = 200  # answers recorded between two looks for expired ones (per process)
DAILY_KEEP_DAYS = 400  # days the per-day counts are kept
DAILY_KEY = ("day", "model_name", "model_version", "verdict", "label")
FLAG_COLUMNS = [answers.c[name] for name in ("flag", "sampled", "created_at", "model_name", "model_version", "verdict",
                                             "label")]  # what a flag reads of its answer (not its probabilities)


class FeedbackError(CifarlabError):
    """A feedback request the store refuses: its message and HTTP status."""


def now():
    return datetime.datetime.now(datetime.timezone.utc)


def engine_for(url):
    """An engine for DATABASE_URL; SQLite files get their folder, WAL and a busy timeout (several workers write)."""
    if url.startswith("sqlite:///"):
        Path(url[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url)

        @event.listens_for(engine, "connect")
        def sqlite_pragmas(connection, _record):
            cursor = connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")  # readers never wait for the writer
            cursor.execute("PRAGMA synchronous=NORMAL")  # a commit survives a killed process (not a power cut)
            cursor.execute("PRAGMA busy_timeout=10000")
            cursor.close()
        return engine
    return create_engine(url, pool_pre_ping=True)


def upgrade(engine, revision="head"):
    """Apply the migrations up to `revision`, one process at a time (a lock file for SQLite, an advisory lock for
    PostgreSQL), so workers starting together do not race."""
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    lock_path = (Path(engine.url.database).with_suffix(".migrate-lock") if engine.dialect.name == "sqlite"
                 and engine.url.database not in (None, "", ":memory:") else None)
    with open(lock_path or os.devnull, "a") as lock:
        if lock_path:
            fcntl.flock(lock, fcntl.LOCK_EX)
        with engine.begin() as connection:
            if engine.dialect.name == "postgresql":
                connection.exec_driver_sql("SELECT pg_advisory_xact_lock(4646)")
            config.attributes["connection"] = connection
            command.upgrade(config, revision)


def revision_of(engine):
    """The schema revision the database is at (None: empty)."""
    from alembic.migration import MigrationContext

    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def png_of(pixels):
    """The model input as PNG bytes (re-encoded: nothing the user sent is kept byte for byte)."""
    buffer = io.BytesIO()
    Image.fromarray(np.asarray(pixels, np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


@dataclass(frozen=True)
class Limits:
    """What the store may hold and for how long."""
    max_items: int = 100_000           # flagged or sampled answers kept for review; past it a flag is refused (507)
    max_bytes: int = 1 << 30           # bytes of their images
    keep_seconds: float = 86_400.0     # an unflagged answer waits this long for a flag, then is removed
    max_answers: int = 200_000         # unflagged answers kept at most (the oldest go first)
    sample_rate: float = 0.1           # share of unsure and unknown answers kept for review unasked
    sample_per_hour: int = 100         # ... at most this many an hour

    @classmethod
    def from_config(cls, config):
        return cls(config["FEEDBACK_MAX_ITEMS"], config["FEEDBACK_MAX_BYTES"], config["FEEDBACK_KEEP_SECONDS"],
                   config["FEEDBACK_MAX_ANSWERS"], config["FEEDBACK_SAMPLE_RATE"], config["FEEDBACK_SAMPLE_PER_HOUR"])


class Flagged(NamedTuple):
    """What a flag did: replaced an earlier one or not; the model version that gave the flagged answer."""

    replaced: bool
    model_name: str
    model_version: str


class Store:
    """Answers, flags and reviews in SQL; images as content-addressed PNG files under `folder`."""

    def __init__(self, engine, folder, limits=Limits(), rng=None, classes=()):
        """classes: the labels a flag may name (the served models' classes; default: those predicted so far)."""
        self.engine, self.folder, self.limits, self.classes = engine, Path(folder), limits, tuple(classes)
        self.rng = rng or random.Random()
        self.recorded = 0

    @classmethod
    def open(cls, url, folder, limits=Limits(), classes=()):
        """The store at DATABASE_URL, migrated to the current schema first."""
        engine = engine_for(url)
        upgrade(engine)
        return cls(engine, folder, limits, classes=classes)

    def image_path(self, sha256):
        return self.folder / "images" / sha256[:2] / f"{sha256}.png"

    def save_image(self, pixels):
        """(sha256, bytes) of the stored PNG, written once (atomically) however often the same input comes."""
        data = png_of(pixels)
        digest = hashlib.sha256(data).hexdigest()
        path = self.image_path(digest)
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            replace_atomically(path, lambda tmp: tmp.write_bytes(data))
        return digest, len(data)

    def record(self, entries, model_name, model_version):
        """Store [(pixels, Prediction)] answered together; returns their ids in order."""
        rows, stamp = [], now()
        for pixels, prediction in entries:
            digest, size = self.save_image(pixels)
            rows.append({
                "id": secrets.token_urlsafe(16), "created_at": stamp, "image_sha256": digest, "image_bytes": size,
                "model_name": model_name, "model_version": str(model_version), "label": prediction.label,
                "class_index": prediction.index, "confidence": prediction.confidence,
                "probabilities": json.dumps([round(float(p), 6) for p in prediction.probs]),
                "ood_score": prediction.ood_score, "verdict": prediction.verdict, "sampled": False})
        with self.engine.begin() as connection:
            taken = None  # answers sampled in the last hour, counted once when the first candidate comes
            for row, (_, prediction) in zip(rows, entries):
                if self.is_candidate(prediction):
                    if taken is None:
                        taken = self.sampled_last_hour(connection)
                    row["sampled"] = taken < self.limits.sample_per_hour
                    taken += row["sampled"]
            connection.execute(answers.insert(), rows)
            add_daily(connection, collections.Counter(daily_key(row) for row in rows))
        self.recorded += len(rows)
        if self.recorded >= PRUNE_EVERY:
            self.recorded = 0
            self.prune()
        return [row["id"] for row in rows]

    def is_candidate(self, prediction):
        """The sampling rule: an unsure or unknown answer is kept for review at sample_rate (at most sample_per_hour
        an hour)."""
        return prediction.verdict != "known" and self.rng.random() < self.limits.sample_rate

    @staticmethod
    def sampled_last_hour(connection):
        hour_ago = now() - datetime.timedelta(hours=1)
        return connection.execute(select(func.count()).select_from(answers).where(
            answers.c.sampled, answers.c.created_at > hour_ago)).scalar_one()

    def flag(self, answer_id, label):
        """Record the user's flag ("correct", "none" or a class name); a Flagged (whether it replaced an earlier one,
        and the model version that gave the answer). FeedbackError 404 for an unknown id, 400 for a bad label, 507
        when the store is full."""
        if not isinstance(answer_id, str) or not 0 < len(answer_id) <= 32:
            raise FeedbackError("No such answer: give the id the prediction came with.", 404)
        with self.engine.begin() as connection:
            row = connection.execute(select(*FLAG_COLUMNS).where(answers.c.id == answer_id)).mappings().first()
            if row is None:
                raise FeedbackError("No such answer (or it is older than the store keeps unflagged answers).", 404)
            self.check_label(label)
            if row["flag"] is None and not row["sampled"]:
                self.check_room(connection)
            connection.execute(update(answers).where(answers.c.id == answer_id)
                               .values(flag=label, flagged_at=now(), review=None, review_label=None, reviewed_at=None))
            if row["flag"] is None:
                add_daily(connection, {daily_key(row): 0}, flags=1)
        return Flagged(row["flag"] is not None, row["model_name"], row["model_version"])

    def check_label(self, label, words=FLAG_WORDS):
        classes = self.class_names()
        if not isinstance(label, str) or (label not in words and label not in classes):
            raise FeedbackError(f"label must be one of {', '.join(words)} or a class name "
                                f"({', '.join(classes) or 'none known yet'}).", 400)

    def class_names(self):
        """The class names a flag may name: the served models' classes, else those predicted so far."""
        if self.classes:
            return list(self.classes)
        with self.engine.connect() as connection:
            return sorted(connection.execute(select(answers.c.label).distinct()).scalars())

    def check_room(self, connection):
        """FeedbackError 507 when the flagged and sampled answers fill the store's count or bytes."""
        count, size = connection.execute(select(func.count(), func.coalesce(func.sum(answers.c.image_bytes), 0))
                                         .where(KEPT)).one()
        if count >= self.limits.max_items or size >= self.limits.max_bytes:
            raise FeedbackError(f"The feedback store is full ({count:,} items kept for review); an operator must "
                                "review or export some first.", 507)

    def prune(self):
        """Remove unflagged, unsampled answers past keep_seconds or past max_answers (oldest first), and images no
        answer refers to any more; returns how many answers went."""
        waiting = ~KEPT
        cutoff = now() - datetime.timedelta(seconds=self.limits.keep_seconds)
        with self.engine.begin() as connection:
            extra = connection.execute(select(func.count()).select_from(answers).where(waiting)).scalar_one() \
                - self.limits.max_answers
            expired = connection.execute(select(answers.c.id, answers.c.image_sha256).where(
                waiting, answers.c.created_at < cutoff)).all()
            if extra > len(expired):
                expired += connection.execute(select(answers.c.id, answers.c.image_sha256).where(
                    waiting, answers.c.created_at >= cutoff).order_by(answers.c.created_at)
                    .limit(extra - len(expired))).all()
            ids, hashes = [r.id for r in expired], {r.image_sha256 for r in expired}
            for start in range(0, len(ids), 500):
                connection.execute(answers.delete().where(answers.c.id.in_(ids[start:start + 500])))
            connection.execute(daily.delete().where(
                daily.c.day < now().date() - datetime.timedelta(days=DAILY_KEEP_DAYS)))
            still_used = set(connection.execute(select(answers.c.image_sha256).distinct().where(
                answers.c.image_sha256.in_(hashes))).scalars()) if hashes else set()
        for digest in hashes - still_used:
            self.image_path(digest).unlink(missing_ok=True)
        return len(ids)

    def queue(self, limit=50):
        """Flagged or sampled answers not yet reviewed, the least sure first."""
        with self.engine.connect() as connection:
            return connection.execute(
                select(answers).where(WAITING)
                .order_by(answers.c.confidence, answers.c.created_at).limit(limit)).mappings().all()

    def get(self, answer_id):
        with self.engine.connect() as connection:
            return connection.execute(select(answers).where(answers.c.id == answer_id)).mappings().first()

    def decide(self, answer_id, decision, label=None):
        """An operator's review: accept (the flag, or the prediction when the flag says correct or there is none),
        relabel to `label` (a class or "none"), or reject (left out of exports)."""
        if decision not in DECISIONS:
            raise FeedbackError(f"decision must be one of {', '.join(DECISIONS)}.", 400)
        row = self.get(answer_id)
        if row is None:
            raise FeedbackError("No such answer.", 404)
        if decision == "relabel":
            self.check_label(label, words=("none",))
        settled = {"accept": accepted_label(row), "relabel": label, "reject": None}[decision]
        with self.engine.begin() as connection:
            connection.execute(update(answers).where(answers.c.id == answer_id).values(
                review=REVIEWS[decision],
                review_label=settled, reviewed_at=now()))

    def counts(self):
        """What review sees at a glance: waiting items, flags per class, and per model version answers, flags and the
        flag rate."""
        with self.engine.connect() as connection:
            waiting = connection.execute(select(func.count()).where(WAITING)).scalar_one()
            per_class = connection.execute(select(answers.c.label, func.count()).where(answers.c.flag.is_not(None))
                                           .group_by(answers.c.label).order_by(answers.c.label)).all()
            per_version = connection.execute(
                select(daily.c.model_name, daily.c.model_version, func.sum(daily.c.answers), func.sum(daily.c.flags))
                .group_by(daily.c.model_name, daily.c.model_version)
                .order_by(daily.c.model_name, daily.c.model_version)).all()
        return {"waiting": waiting, "flags_per_class": [tuple(r) for r in per_class],
                "per_version": [(name, version, int(total), int(flags), flags / total if total else 0.0)
                                for name, version, total, flags in per_version]}

    def daily_counts(self, since):
        """Rows (day, model_name, model_version, verdict, label, answers, flags) from the UTC date `since` on."""
        with self.engine.connect() as connection:
            return connection.execute(select(daily).where(daily.c.day >= since)
                                      .order_by(daily.c.day)).all()

    def flag_pairs(self, since):
        """[(predicted, flag, review, review_label, count)] of answers given from the UTC date `since` on that users
        flagged."""
        start = datetime.datetime.combine(since, datetime.time(), datetime.timezone.utc)
        with self.engine.connect() as connection:
            return connection.execute(
                select(answers.c.label, answers.c.flag, answers.c.review, answers.c.review_label, func.count())
                .where(answers.c.flag.is_not(None), answers.c.created_at >= start)
                .group_by(answers.c.label, answers.c.flag, answers.c.review, answers.c.review_label)).all()

    def export(self, out, reviewed_only=False):
        """Write out/train/<class>/<id>.png for class labels and out/outliers/<id>.png for "none", leaving out what
        review rejected (and, with reviewed_only, what it has not accepted), plus out/manifest.json; returns the
        manifest."""
        condition = SETTLED if reviewed_only else SETTLED | (answers.c.review.is_(None) & answers.c.flag.is_not(None))
        with self.engine.connect() as connection:
            rows = connection.execute(select(answers).where(condition).order_by(answers.c.created_at)).mappings().all()
        out = Path(out)
        items = []
        for row in rows:
            label = row["review_label"] if row["review"] else accepted_label(row)
            target = out / "outliers" if label == "none" else out / "train" / label
            target.mkdir(parents=True, exist_ok=True)
            data = self.image_path(row["image_sha256"]).read_bytes()
            replace_atomically(target / f"{row['id']}.png", lambda tmp: tmp.write_bytes(data))
            items.append({"id": row["id"], "label": label, "predicted": row["label"], "flag": row["flag"],
                          "review": row["review"], "model": row["model_name"], "model_version": row["model_version"],
                          "created_at": row["created_at"].isoformat(), "file": str((target / f"{row['id']}.png")
                                                                                    .relative_to(out))})
        manifest = {"exported_at": now().isoformat(), "reviewed_only": reviewed_only, "items": items}
        write_json(out / "manifest.json", manifest)
        return manifest


def daily_key(row):
    """An answer's row in the daily table: its UTC day, model version, verdict and predicted class."""
    stamp = row["created_at"]
    day = (stamp.astimezone(datetime.timezone.utc) if stamp.tzinfo else stamp).date()  # SQLite gives it back naive
    return (day, row["model_name"], row["model_version"], row["verdict"], row["label"])


def daily_upsert(insert):
    """INSERT into the daily table that adds to the row a key already has (one statement per dialect, built once)."""
    statement = insert(daily)
    return statement.on_conflict_do_update(index_elements=DAILY_KEY, set_={
        "answers": daily.c.answers + statement.excluded.answers, "flags": daily.c.flags + statement.excluded.flags})


DAILY_UPSERT = {"sqlite": daily_upsert(sqlite.insert), "postgresql": daily_upsert(postgresql.insert)}


def add_daily(connection, answered, flags=0):
    """Add {daily key: answers} (and `flags` to each) to the daily table, inserting rows a day has not had yet; keys in
    order, so that two writers never wait on each other's rows in opposite orders."""
    connection.execute(DAILY_UPSERT[connection.dialect.name], [
        {**dict(zip(DAILY_KEY, key)), "answers": count, "flags": flags} for key, count in sorted(answered.items())])


def accepted_label(row):
    """The label an answer stands for when its flag (or, without one, its prediction) is taken as right."""
    flag = row["flag"]
    return row["label"] if flag in (None, "correct") else flag
