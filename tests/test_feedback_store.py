"""The feedback store on SQLite and PostgreSQL: migrations, ids, flags, caps, sampling, pruning, review, export."""
import datetime
import json
import random

import numpy as np
import pytest
from sqlalchemy import text, update

from cifarlab.feedback import store as feedback
from cifarlab.feedback.schema import answers
from cifarlab.feedback.store import FeedbackError, Limits, Store
from cifarlab.prediction import Prediction
from cifarlab.ml.data import CIFAR10_CLASSES


def prediction(index=3, confidence=0.9, unsure=False, unknown=False):
    probs = np.full(10, (1 - confidence) / 9)
    probs[index] = confidence
    return Prediction(probs, list(CIFAR10_CLASSES), -3.0, unsure, unknown)


def pixels(seed):
    return np.random.default_rng(seed).integers(0, 256, (32, 32, 3), dtype=np.uint8)


@pytest.fixture
def make_store(database_url, tmp_path):
    def build(**limits):
        return Store.open(database_url, tmp_path / "feedback", Limits(**{"sample_rate": 0.0, **limits}),
                          classes=CIFAR10_CLASSES)
    return build


def test_migrations_build_the_schema_from_an_empty_database(database_url):
    engine = feedback.engine_for(database_url)
    assert feedback.revision_of(engine) is None
    feedback.upgrade(engine)
    assert feedback.revision_of(engine) == "0004"
    feedback.upgrade(engine)  # a second start-up finds nothing to do
    assert feedback.revision_of(engine) == "0004"


def test_migrations_upgrade_the_first_schema_keeping_its_rows(database_url):
    engine = feedback.engine_for(database_url)
    feedback.upgrade(engine, "0001")
    with engine.begin() as connection:
        connection.execute(text(
            "INSERT INTO answers (id, created_at, image_sha256, image_bytes, model_name, model_version, label, "
            "class_index, confidence, probabilities, ood_score, verdict, sampled, flag) VALUES ('old', "
            ":t, 'abc', 10, 'cifar10', '1', 'cat', 3, 0.5, '[]', -2.0, 'unsure', :f, 'dog')"),
            {"t": datetime.datetime.now(datetime.timezone.utc), "f": False})
    feedback.upgrade(engine)
    with engine.connect() as connection:
        row = connection.execute(answers.select().where(answers.c.id == "old")).mappings().one()
    assert row["flag"] == "dog" and row["review"] is None and feedback.revision_of(engine) == "0004"


def test_each_answer_gets_an_unguessable_id_and_its_image_is_stored_once(make_store):
    store = make_store()
    ids = store.record([(pixels(0), prediction()), (pixels(0), prediction()), (pixels(1), prediction())], "cifar10", 2)
    assert len(set(ids)) == 3 and all(len(i) >= 20 for i in ids)
    rows = [store.get(i) for i in ids]
    assert rows[0]["image_sha256"] == rows[1]["image_sha256"] != rows[2]["image_sha256"]
    assert len(list((store.folder / "images").glob("*/*.png"))) == 2
    assert rows[0]["label"] == "cat" and rows[0]["model_version"] == "2" and rows[0]["verdict"] == "known"
    assert json.loads(rows[0]["probabilities"])[3] == pytest.approx(0.9)


def test_a_flag_is_recorded_then_replaced(make_store):
    store = make_store()
    [answer] = store.record([(pixels(0), prediction())], "cifar10", 1)
    assert store.flag(answer, "dog") == (False, "cifar10", "1")
    assert store.flag(answer, "none").replaced is True
    assert store.get(answer)["flag"] == "none"


@pytest.mark.parametrize("answer_id, label, status", [
    ("no-such-answer", "dog", 404), ("", "dog", 404), ("x" * 33, "dog", 404), (None, "dog", 404),
    ("REAL", "wolf", 400), ("REAL", "", 400), ("REAL", 3, 400), ("REAL", None, 400),
])
def test_bad_flags_are_refused_with_their_status(make_store, answer_id, label, status):
    store = make_store()
    [answer] = store.record([(pixels(0), prediction())], "cifar10", 1)
    with pytest.raises(FeedbackError) as refused:
        store.flag(answer if answer_id == "REAL" else answer_id, label)
    assert refused.value.status == status and refused.value.message


def test_a_full_store_refuses_new_flags_with_507_but_takes_changes_to_old_ones(make_store):
    store = make_store(max_items=2)
    ids = store.record([(pixels(n), prediction()) for n in range(3)], "cifar10", 1)
    store.flag(ids[0], "dog")
    store.flag(ids[1], "dog")
    with pytest.raises(FeedbackError) as refused:
        store.flag(ids[2], "dog")
    assert refused.value.status == 507 and "full" in refused.value.message
    assert store.flag(ids[0], "correct").replaced is True


def test_sampling_keeps_unsure_and_unknown_answers_up_to_the_hourly_cap(make_store):
    store = make_store(sample_rate=1.0, sample_per_hour=3)
    store.rng = random.Random(0)
    ids = store.record([(pixels(n), prediction(unsure=True)) for n in range(5)] +
                       [(pixels(9), prediction())], "cifar10", 1)
    sampled = [store.get(i)["sampled"] for i in ids]
    assert sampled == [True, True, True, False, False, False]


def test_prune_removes_expired_unflagged_answers_and_their_images_but_keeps_flags(make_store):
    store = make_store(keep_seconds=60)
    kept, gone = store.record([(pixels(0), prediction()), (pixels(1), prediction())], "cifar10", 1)
    store.flag(kept, "dog")
    with store.engine.begin() as connection:
        connection.execute(update(answers).values(
            created_at=datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(hours=1)))
    assert store.prune() == 1
    assert store.get(gone) is None and store.get(kept)["flag"] == "dog"
    assert [p.stem for p in (store.folder / "images").glob("*/*.png")] == [store.get(kept)["image_sha256"]]


def test_prune_keeps_at_most_max_answers_unflagged_the_oldest_going_first(make_store):
    store = make_store(max_answers=2)
    ids = [store.record([(pixels(n), prediction())], "cifar10", 1)[0] for n in range(4)]
    assert store.prune() == 2
    assert [store.get(i) is not None for i in ids] == [False, False, True, True]


def test_the_queue_is_least_sure_first_and_decisions_settle_labels(make_store):
    store = make_store()
    ids = store.record([(pixels(n), prediction(confidence=c)) for n, c in enumerate((0.9, 0.4, 0.6, 0.8))],
                       "cifar10", 1)
    for answer, label in zip(ids, ("dog", "none", "correct", "cat")):
        store.flag(answer, label)
    assert [row["id"] for row in store.queue()] == [ids[1], ids[2], ids[3], ids[0]]
    store.decide(ids[1], "accept")
    store.decide(ids[2], "relabel", "truck")
    store.decide(ids[3], "reject")
    assert [store.get(i)["review_label"] for i in ids[1:]] == ["none", "truck", None]
    assert [row["id"] for row in store.queue()] == [ids[0]]
    with pytest.raises(FeedbackError):
        store.decide(ids[0], "relabel", "wolf")
    with pytest.raises(FeedbackError):
        store.decide(ids[0], "maybe")


def test_counts_per_class_and_per_model_version(make_store):
    store = make_store()
    first = store.record([(pixels(n), prediction()) for n in range(4)], "cifar10", 1)
    store.record([(pixels(9), prediction(index=5))], "cifar10", 2)
    store.flag(first[0], "dog")
    counts = store.counts()
    assert counts["waiting"] == 1 and counts["flags_per_class"] == [("cat", 1)]
    assert counts["per_version"] == [("cifar10", "1", 4, 1, 0.25), ("cifar10", "2", 1, 0, 0.0)]


def test_export_writes_the_image_folder_tree_and_a_manifest(make_store, tmp_path):
    store = make_store()
    ids = store.record([(pixels(n), prediction()) for n in range(5)], "cifar10", 1)
    for answer, label in zip(ids, ("dog", "none", "correct", "truck")):
        store.flag(answer, label)
    store.decide(ids[3], "reject")
    store.decide(ids[0], "accept")
    manifest = store.export(tmp_path / "out")
    files = sorted(str(p.relative_to(tmp_path / "out")) for p in (tmp_path / "out").rglob("*.png"))
    assert files == sorted([f"train/dog/{ids[0]}.png", f"outliers/{ids[1]}.png", f"train/cat/{ids[2]}.png"])
    assert json.loads((tmp_path / "out" / "manifest.json").read_text()) == manifest
    assert {item["id"]: item["model_version"] for item in manifest["items"]} == dict.fromkeys(ids[:3], "1")
    reviewed = store.export(tmp_path / "reviewed", reviewed_only=True)
    assert [item["id"] for item in reviewed["items"]] == [ids[0]]


@pytest.mark.parametrize("query", ["room", "queue"])
def test_the_room_check_and_the_queue_read_only_kept_answers(make_store, query):
    store = make_store()
    if store.engine.dialect.name != "sqlite":
        pytest.skip("PostgreSQL's planner picks its own plan on a tiny table; SQLite's plan is fixed by the indexes")
    from sqlalchemy import func, select

    from cifarlab.feedback.store import KEPT, WAITING

    statement = {"room": select(func.count(), func.coalesce(func.sum(answers.c.image_bytes), 0)).where(KEPT),
                 "queue": select(answers).where(WAITING).order_by(answers.c.confidence, answers.c.created_at)
                 .limit(50)}[query]
    compiled = statement.compile(store.engine, compile_kwargs={"literal_binds": True})
    with store.engine.connect() as connection:
        plan = " ".join(str(row) for row in connection.exec_driver_sql(f"EXPLAIN QUERY PLAN {compiled}"))
    assert {"room": "ix_answers_kept", "queue": "ix_answers_waiting"}[query] in plan, plan


def test_the_daily_counts_are_filled_from_the_answers_a_database_already_holds(database_url):
    engine = feedback.engine_for(database_url)
    feedback.upgrade(engine, "0003")
    stamp = datetime.datetime(2026, 11, 30, 23, 59, tzinfo=datetime.timezone.utc)
    with engine.begin() as connection:
        for n, (verdict, flag) in enumerate([("known", None), ("known", "dog"), ("unknown", None)]):
            connection.execute(text(
                "INSERT INTO answers (id, created_at, image_sha256, image_bytes, model_name, model_version, label, "
                "class_index, confidence, probabilities, ood_score, verdict, sampled, flag) VALUES (:id, :t, 'abc', "
                "10, 'cifar10', '1', 'cat', 3, 0.5, '[]', -2.0, :v, :s, :f)"),
                {"id": f"old{n}", "t": stamp, "v": verdict, "s": False, "f": flag})
    feedback.upgrade(engine)
    rows = Store(engine, "unused").daily_counts(datetime.date(2026, 11, 1))
    assert [tuple(row) for row in rows] == [(datetime.date(2026, 11, 30), "cifar10", "1", "known", "cat", 2, 1),
                                            (datetime.date(2026, 11, 30), "cifar10", "1", "unknown", "cat", 1, 0)]


def test_answers_and_flags_are_counted_per_day_and_outlive_pruning(make_store):
    store = make_store(keep_seconds=0)
    ids = store.record([(pixels(n), prediction()) for n in range(3)], "cifar10", 1)
    store.record([(pixels(5), prediction(index=5, unknown=True))], "cifar10", 1)
    store.flag(ids[0], "dog")
    store.flag(ids[0], "frog")  # a replaced flag is still one flag
    store.flag(ids[1], "correct")
    store.prune()  # the unflagged answers go; their counts stay
    assert store.get(ids[2]) is None
    today = feedback.now().date()
    rows = {row.verdict: (row.label, row.answers, row.flags) for row in store.daily_counts(today)}
    assert rows == {"known": ("cat", 3, 2), "unknown": ("dog", 1, 0)}
    assert store.counts()["per_version"] == [("cifar10", "1", 4, 2, 0.5)]
    pairs = {(row[0], row[1]): row[-1] for row in store.flag_pairs(today)}
    assert pairs == {("cat", "frog"): 1, ("cat", "correct"): 1}


def test_daily_counts_older_than_the_keeping_period_are_pruned(make_store):
    store = make_store()
    old = feedback.now().date() - datetime.timedelta(days=feedback.DAILY_KEEP_DAYS + 1)
    with store.engine.begin() as connection:
        feedback.add_daily(connection, {(old, "cifar10", "1", "known", "cat"): 5})
    store.record([(pixels(0), prediction())], "cifar10", 1)
    assert len(store.daily_counts(old)) == 2
    store.prune()
    assert [row.day for row in store.daily_counts(old)] == [feedback.now().date()]
