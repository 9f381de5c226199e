"""Feedback through the app: ids on answers, the flag by form and API, the review queue behind credentials."""
import base64
import datetime
import io
import re

import pytest

from cifarlab.feedback import store as feedback_store
from cifarlab.web.context import parts
from tests.helpers import image_bytes
from tests.test_web_metrics import sample

CREDENTIALS = "operator:correct horse battery"


def upload(client, path="/api/predict", count=1):
    return client.post(path, data={"file": [(io.BytesIO(image_bytes(seed=n)), f"{n}.png") for n in range(count)]},
                       content_type="multipart/form-data")


def basic(credentials=CREDENTIALS):
    return {"Authorization": "Basic " + base64.b64encode(credentials.encode()).decode()}


@pytest.fixture
def app(make_app, database_url):
    """Every test here that stores answers runs on SQLite and on PostgreSQL."""
    return make_app(DATABASE_URL=database_url)


@pytest.fixture
def review_app(make_app, database_url):
    return make_app(REVIEW_CREDENTIALS=CREDENTIALS, DATABASE_URL=database_url)


def test_api_answers_carry_ids_that_take_a_flag_then_a_replacement(client):
    predictions = upload(client, count=2).get_json()["predictions"]
    ids = [p["id"] for p in predictions]
    assert len(set(ids)) == 2 and all(len(i) >= 20 for i in ids)
    first = client.post("/api/feedback", json={"id": ids[0], "label": "dog"})
    assert first.status_code == 201 and first.get_json() == {"id": ids[0], "label": "dog", "replaced": False}
    again = client.post("/api/feedback", json={"id": ids[0], "label": "correct"})
    assert again.status_code == 200 and again.get_json()["replaced"] is True
    text = client.get("/metrics").get_data(as_text=True)
    assert sample(text, "cifarlab_flags_total", model="cifar10", version="1") == 2  # per version, for a canary's rate


@pytest.mark.parametrize("body, status", [
    ({"id": "nobody-has-this-id", "label": "dog"}, 404),
    ({"id": "REAL", "label": "wolf"}, 400),
    ({"id": "REAL"}, 400),
    ({"label": "dog"}, 400),
    (["REAL", "dog"], 400),
    ("not json", 400),
])
def test_bad_api_flags_are_json_4xx(client, body, status):
    answer_id = upload(client).get_json()["predictions"][0]["id"]
    if isinstance(body, dict) and body.get("id") == "REAL":
        body = {**body, "id": answer_id}
    elif isinstance(body, list):
        body = [answer_id, "dog"]
    reply = client.post("/api/feedback", json=body) if body != "not json" else \
        client.post("/api/feedback", data=b"{", content_type="application/json")
    assert reply.status_code == status and reply.get_json()["error"]


def test_the_result_page_asks_is_this_right_and_the_plain_form_records_the_flag(client):
    html = upload(client, path="/").get_data(as_text=True)
    assert "Is this right?" in html and 'value="none"' in html
    answer_id = re.search(r'name="id" value="([^"]+)"', html).group(1)
    reply = client.post("/feedback", data={"id": answer_id, "label": "other", "class": "ship"})
    assert reply.status_code == 201 and "the image shows a ship" in reply.get_data(as_text=True)
    store = parts(client.application).feedback
    assert store.get(answer_id)["flag"] == "ship"


def test_the_batch_page_offers_a_flag_per_image(client):
    html = upload(client, path="/", count=3).get_data(as_text=True)
    assert len(set(re.findall(r'name="id" value="([^"]+)"', html))) == 3


def test_the_feedback_form_needs_its_csrf_token(make_app):
    app = make_app(WTF_CSRF_ENABLED=True)
    reply = app.test_client().post("/feedback", data={"id": "x", "label": "none"})
    assert reply.status_code == 400 and "expired" in reply.get_data(as_text=True)


def test_with_feedback_off_answers_have_no_id_and_flags_are_404(make_app):
    client = make_app(FEEDBACK=False).test_client()
    assert "id" not in upload(client).get_json()["predictions"][0]
    assert "Is this right?" not in upload(client, path="/").get_data(as_text=True)
    assert client.post("/api/feedback", json={"id": "x", "label": "dog"}).status_code == 404


def test_review_is_off_without_credentials(client):
    assert client.get("/review").status_code == 403


@pytest.mark.parametrize("headers", [{}, basic("operator:wrong password!"), basic("someone:correct horse battery"),
                                     {"Authorization": "Bearer token"}])
def test_review_without_the_right_credentials_is_401(review_app, headers):
    reply = review_app.test_client().get("/review", headers=headers)
    assert reply.status_code == 401 and reply.headers["WWW-Authenticate"].startswith("Basic")


def test_repeated_wrong_passwords_are_throttled(review_app):
    client = review_app.test_client()
    for _ in range(10):
        assert client.get("/review", headers=basic("operator:wrong password!")).status_code == 401
    assert client.get("/review", headers=basic()).status_code == 429


def test_review_lists_the_least_sure_first_and_takes_a_decision(review_app):
    client = review_app.test_client()
    ids = [p["id"] for p in upload(client, count=2).get_json()["predictions"]]
    for answer_id in ids:
        client.post("/api/feedback", json={"id": answer_id, "label": "none"})
    page = client.get("/review", headers=basic())
    assert page.status_code == 200 and page.get_data(as_text=True).count('class="review-item"') == 2
    assert client.get(f"/review/image/{ids[0]}", headers=basic()).mimetype == "image/png"
    reply = client.post(f"/review/{ids[0]}", data={"decision": "relabel", "label": "frog"}, headers=basic())
    assert reply.status_code == 303
    assert client.get("/review", headers=basic()).get_data(as_text=True).count('class="review-item"') == 1
    assert parts(review_app).feedback.get(ids[0])["review_label"] == "frog"


def test_train_py_feedback_export_writes_what_users_flagged(client, tmp_path, capsys, monkeypatch):
    import train

    ids = [p["id"] for p in upload(client, count=3).get_json()["predictions"]]
    for answer_id, label in zip(ids, ("dog", "none", "correct")):
        client.post("/api/feedback", json={"id": answer_id, "label": label})
    config = client.application.config
    out = tmp_path / "export"
    monkeypatch.setenv("FEEDBACK_FOLDER", config["FEEDBACK_FOLDER"])
    assert train.main(["feedback", "export", "--out", str(out), "--database", config["DATABASE_URL"]]) == 0
    predicted = parts(client.application).feedback.get(ids[2])["label"]
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*.png")) == sorted(
        [f"train/dog/{ids[0]}.png", f"outliers/{ids[1]}.png", f"train/{predicted}/{ids[2]}.png"])
    assert "Wrote 3 images" in capsys.readouterr().out
    assert train.main(["feedback", "export", "--out", str(out)]) == 2  # never overwrites


def test_what_users_send_is_for_operators_only(app, review_app):
    assert app.test_client().get("/review/traffic").status_code == 403
    client = review_app.test_client()
    assert client.get("/review/traffic").status_code == 401
    assert client.get("/review/traffic", headers=basic("operator:wrong password!")).status_code == 401


@pytest.mark.parametrize("days", ["0", "91", "x", "-1", "7.5", ""])
def test_what_users_send_refuses_a_bad_window(review_app, days):
    reply = review_app.test_client().get(f"/review/traffic?days={days}", headers=basic())
    assert reply.status_code == 400 and "from 1 to 90" in reply.get_data(as_text=True)


def test_what_users_send_shows_verdicts_flags_classes_and_confused_pairs(review_app):
    client = review_app.test_client()
    predictions = upload(client, count=3).get_json()["predictions"]
    predicted = predictions[0]["class"]
    other = next(name for name in ("airplane", "automobile") if name != predicted)
    client.post("/api/feedback", json={"id": predictions[0]["id"], "label": other})
    page = client.get("/review/traffic?days=7", headers=basic())
    text = page.get_data(as_text=True)
    assert page.status_code == 200 and "The last 7 days (UTC): 3 answers, 1 flagged (33.3%)" in text
    assert text.count("<svg") >= 2 and f"<td>{predicted}</td><td>{other}</td>" in text
    assert "No drift" in text or "No drift check" in text


def test_the_drift_warning_and_the_gauges_show_the_same_figures(review_app, monkeypatch):
    client = review_app.test_client()
    monkeypatch.setitem(parts(review_app).models.get()[1].classifier.meta, "ood", {"test_unknown_rate": 0.0})
    store = parts(review_app).feedback
    today = datetime.datetime.now(datetime.timezone.utc).date()
    with store.engine.begin() as connection:
        feedback_store.add_daily(connection, {(today, "cifar10", "1", "unknown", "cat"): 30,
                                              (today, "cifar10", "1", "known", "dog"): 90})
    text = client.get("/review/traffic", headers=basic()).get_data(as_text=True)
    assert 'role="alert"' in text and "25.0% of 120 answers were unknown" in text
    metrics = client.get("/metrics").get_data(as_text=True)
    assert sample(metrics, "cifarlab_drift_warning") == 1.0
    assert sample(metrics, "cifarlab_sent_unknown_share_today") == pytest.approx(0.25)
    assert sample(metrics, "cifarlab_sent_verdict_share", verdict="known") == pytest.approx(0.75)
    assert sample(metrics, "cifarlab_sent_class_share", **{"class": "dog"}) == pytest.approx(1.0)
    assert sample(metrics, "cifarlab_sent_answers") == 120


def test_with_feedback_off_there_are_no_sent_gauges(make_app):
    assert "cifarlab_sent_" not in make_app(FEEDBACK=False).test_client().get("/metrics").get_data(as_text=True)
