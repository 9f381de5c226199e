"""cifarlab.web.views: the HTML pages, uploads and their refusals, examples, the model card."""
import io
import os
import re

import pytest

from cifarlab.ml.data import CIFAR10_CLASSES
from cifarlab.web.context import parts
from tests.helpers import image_bytes, post_file


def test_form_is_served(client):
    response = client.get("/")
    assert response.status_code == 200
    assert b'enctype="multipart/form-data"' in response.data
    assert b'name="file"' in response.data


@pytest.mark.parametrize("fmt,mode", [("PNG", "RGB"), ("PNG", "RGBA"), ("PNG", "L"), ("PNG", "P"),
                                      ("JPEG", "RGB"), ("GIF", "P"), ("BMP", "RGB"), ("WEBP", "RGB")])
def test_result_page_shows_class_index_and_top3(client, app, fmt, mode):
    response = post_file(client, image_bytes(fmt, mode, size=(64, 48)), filename=f"x.{fmt.lower()}")
    assert response.status_code == 200
    html = response.get_data(as_text=True)
    name = re.search(r'class="class-name">([^<]+)<', html).group(1)
    index = int(re.search(r'class="class-index">(\d+)<', html).group(1))
    assert CIFAR10_CLASSES[index] == name
    article = "an" if name[0] in "aeiou" else "a"
    assert f'It looks like {article} <span class="label">{name}</span>' in html
    top3 = re.search(r'<table class="probabilities top3">(.*?)</table>', html, re.S).group(1)
    percents = [float(p) for p in re.findall(r'class="pct">([\d.]+)%<', top3)]
    assert len(percents) == 3 and percents == sorted(percents, reverse=True)
    every = re.search(r'<table class="probabilities all">(.*?)</table>', html, re.S).group(1)
    assert len(re.findall(r'class="pct">', every)) == len(CIFAR10_CLASSES)
    assert 'class="explain-link"' in html and f"made it say “{name}”" in html
    assert "Classify another image" in html


def test_result_matches_the_classifier(client, app):
    from cifarlab.images import preprocess_bytes
    from cifarlab.prediction import Prediction

    data = image_bytes(size=(32, 32), seed=3)
    classifier = parts(app).models.get()[1].classifier
    expected = Prediction(classifier.probabilities(preprocess_bytes(data)[None])[0], classifier.class_names)
    html = post_file(client, data).get_data(as_text=True)
    assert f'class="class-index">{expected.index}<' in html
    top_pct = "%.1f%%" % (100 * expected.top(1)[0][2])
    assert top_pct in html


def test_upload_is_stored_under_a_generated_name(client, app):
    response = post_file(client, image_bytes(), filename="../../evil name.png")
    assert response.status_code == 200
    stored = sorted(os.listdir(app.config["UPLOAD_FOLDER"]))  # the display copy and the 32x32 model input
    assert len(stored) == 2 and re.fullmatch(r"[0-9a-f]{32}\.png", stored[0]) and stored[1] == stored[0][:-4] + "_input.png"
    served = client.get(f"/uploads/{stored[0]}")
    assert served.status_code == 200
    assert served.headers["Content-Type"] == "image/png"
    assert served.headers["X-Content-Type-Options"] == "nosniff"


BAD_UPLOADS = [
    pytest.param(None, 400, "No file was sent", id="no-field"),
    pytest.param((b"", ""), 400, "No file was selected", id="empty-filename"),
    pytest.param((b"", "empty.png"), 400, "empty", id="zero-bytes"),
    pytest.param((b"hello, I am text", "note.png"), 415, "not an image", id="text-as-png"),
    pytest.param((b"<html><script>alert(1)</script></html>", "x.png"), 415, "not an image", id="html-as-png"),
    pytest.param((image_bytes("PNG")[:60], "cut.png"), 400, "damaged or truncated", id="truncated-png"),
    pytest.param((image_bytes("JPEG", size=(64, 64))[:300], "cut.jpg"), 400, "damaged or truncated", id="truncated-jpeg"),
    pytest.param((image_bytes("ICO", size=(32, 32)), "x.ico"), 415, "not an image", id="ico-not-allowed"),
    pytest.param((image_bytes("EPS", size=(8, 8)), "x.eps"), 415, "not an image", id="eps-not-allowed"),
]


@pytest.mark.parametrize("upload,status,message", BAD_UPLOADS)
def test_bad_uploads_get_a_message_and_4xx(client, app, upload, status, message):
    if upload is None:
        response = client.post("/", data={}, content_type="multipart/form-data")
    else:
        response = post_file(client, upload[0], filename=upload[1])
    assert response.status_code == status
    assert message in response.get_data(as_text=True)
    assert b'name="file"' in response.data  # the form again
    assert os.listdir(app.config["UPLOAD_FOLDER"]) == []  # nothing kept


def test_too_many_pixels_is_413(make_app):
    app = make_app(MAX_IMAGE_PIXELS=1000)
    response = post_file(app.test_client(), image_bytes(size=(100, 100)))
    assert response.status_code == 413
    assert "the limit is 1,000 pixels" in response.get_data(as_text=True)


def test_body_over_limit_is_413(make_app):
    app = make_app(MAX_CONTENT_LENGTH=1024)
    response = post_file(app.test_client(), os.urandom(4096))
    assert response.status_code == 413
    assert "too large" in response.get_data(as_text=True)


@pytest.mark.parametrize("name", ["..%2Fapp.py", "../app.py", "%2Fetc%2Fpasswd", "x.png", "ABC.png"])
def test_uploads_route_serves_only_generated_names(client, name):
    assert client.get(f"/uploads/{name}").status_code == 404


def test_wrong_method_is_405_page_with_allow(client):
    response = client.put("/")
    assert response.status_code == 405
    assert b"Back to the upload form" in response.data
    assert set(response.headers["Allow"].split(", ")) >= {"GET", "POST"}
    api = client.delete("/api/predict")
    assert api.status_code == 405 and api.is_json and "POST" in api.headers["Allow"]


@pytest.mark.parametrize("host,status", [("localhost", 200), ("127.0.0.1:5000", 200), ("evil.example", 400),
                                         ("localhost.evil.example", 400), ("[::1]:8000", 400)])
def test_only_trusted_hosts_are_answered(client, host, status):
    response = client.get("/api", headers={"Host": host})
    assert response.status_code == status
    assert "evil" not in response.get_data(as_text=True)


def test_uploads_are_cached_privately(client):
    html = post_file(client, image_bytes()).get_data(as_text=True)
    src = re.search(r'src="(/uploads/[0-9a-f]{32}\.png)"', html).group(1)
    cache = client.get(src).headers["Cache-Control"]
    assert "private" in cache and "public" not in cache


def test_csrf_token_required(make_app):
    app = make_app(WTF_CSRF_ENABLED=True)
    client = app.test_client()
    page = client.get("/").get_data(as_text=True)
    token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    refused = post_file(client, image_bytes())
    assert refused.status_code == 400 and "please try again" in refused.get_data(as_text=True)
    accepted = client.post("/", data={"csrf_token": token, "file": (io.BytesIO(image_bytes()), "a.png")},
                           content_type="multipart/form-data")
    assert accepted.status_code == 200


def test_model_card_page(client):
    response = client.get("/model")
    assert response.status_code == 200
    assert b"Model card" in response.data and b"airplane" in response.data
    assert client.get("/model/secrets.png").status_code == 404


def post_files(client, payloads, url="/"):
    return client.post(url, data={"file": [(io.BytesIO(data), name) for name, data in payloads]},
                       content_type="multipart/form-data")


def test_batch_upload_gives_one_row_per_file(client, app):
    payloads = [(f"img{i}.png", image_bytes(seed=i)) for i in range(3)] + [("notes.png", b"plain text")]
    response = post_files(client, payloads)
    assert response.status_code == 200
    html = response.get_data(as_text=True)
    assert html.count('<tr class="classified">') == 3 and html.count('<tr class="refused">') == 1
    assert "Refused: " in html and "img2.png" in html
    assert "<h1>3 images classified, 1 file refused</h1>" in html  # refused files are not counted as images
    assert html.count("<details><summary>Full result for") == 3
    assert len(os.listdir(app.config["UPLOAD_FOLDER"])) == 2 * 3  # only the valid images were kept (copy + input)


def test_batch_of_only_bad_files_is_400(client, app):
    response = post_files(client, [("a.png", b"x"), ("b.png", b"")])
    assert response.status_code == 400
    assert "None of the files" in response.get_data(as_text=True)
    assert os.listdir(app.config["UPLOAD_FOLDER"]) == []


def test_too_many_files_is_refused(make_app):
    app = make_app(MAX_BATCH_FILES=2)
    response = post_files(app.test_client(), [(f"{i}.png", image_bytes(seed=i)) for i in range(3)])
    assert response.status_code == 400 and "at most 2" in response.get_data(as_text=True)


def test_too_many_form_parts_is_413_saying_so(make_app):
    app = make_app(MAX_FORM_PARTS=5)
    data = {f"field{i}": "x" for i in range(10)}
    response = app.test_client().post("/", data=data, content_type="multipart/form-data")
    assert response.status_code == 413
    assert b'name="file"' in response.data and b"at most 5 parts" in response.data


def test_examples_classify_with_one_click(client):
    index = client.get("/").get_data(as_text=True)
    links = re.findall(r'href="(/examples/[a-z]+)"', index)
    assert len(links) == len(CIFAR10_CLASSES)
    response = client.get(links[0])
    assert response.status_code == 200 and b'class="class-name"' in response.data
    assert client.get("/examples/not-a-class").status_code == 404


def test_unsure_threshold_is_configurable(make_app):
    always = make_app(UNSURE_THRESHOLD=1.01).test_client()
    never = make_app(UNSURE_THRESHOLD=0.0).test_client()
    html = post_file(always, image_bytes()).get_data(as_text=True)
    first, second = re.findall(r"<tr><td>(\w+)</td>", re.search(r'class="probabilities top3">(.*?)</table>', html,
                                                                  re.S).group(1))[:2]
    assert f"Unsure: it is torn between {first} (" in html and f"and\n  {second} (" in html  # the two, not all ten
    assert "Unsure: it is torn between" not in post_file(never, image_bytes()).get_data(as_text=True)


def test_pages_link_the_script_only_as_a_file(client):
    html = client.get("/").get_data(as_text=True)
    assert '<script src="/static/app.js" defer></script>' in html
    assert re.search(r"<script(?![^>]*\bsrc=)", html) is None  # no inline scripts (the CSP forbids them)
    assert client.get("/static/app.js").status_code == 200


def test_an_example_get_writes_once_and_never_evicts_other_results(make_app, tmp_path):
    client = make_app(UPLOAD_MAX_FILES=4).test_client()
    uploads = tmp_path / "uploads"
    posted = [re.search(r'src="/uploads/([0-9a-f]{32}\.png)"', post_file(client, image_bytes(seed=k)).get_data(
        as_text=True)).group(1) for k in range(2)]  # two users' results: 4 files, the cap
    pages = [client.get("/examples/cat").get_data(as_text=True) for _ in range(30)]
    assert all(name in os.listdir(uploads) for name in posted)  # nothing evicted by the GETs
    shown = {re.search(r'src="/uploads/([0-9a-f]{32}\.png)"', page).group(1) for page in pages}
    assert len(shown) == 1 and len(os.listdir(uploads)) == 6  # one stored copy (and its input) for all 30 GETs
    link = re.search(r'class="explain-link" href="([^"]+)"', pages[0]).group(1).replace("&amp;", "&")
    assert client.get(link).status_code == 200  # its explanation works like an upload's


def test_one_clients_burst_does_not_take_everyone_elses_stored_results(make_app, tmp_path):
    client = make_app(UPLOAD_MAX_FILES=8, UPLOAD_KEEP_SECONDS=600, UPLOAD_CLIENT_SHARE=0.5).test_client()
    for k in range(6):  # 12 files from one address, every one younger than the keep time
        client.post("/", data={"file": (io.BytesIO(image_bytes(seed=k)), "a.png")},
                    headers={"X-Real-IP": "203.0.113.9"}, content_type="multipart/form-data")
    page = client.post("/", data={"file": (io.BytesIO(image_bytes(seed=9)), "b.png")},
                       headers={"X-Real-IP": "203.0.113.1"}, content_type="multipart/form-data").get_data(as_text=True)
    assert re.search(r'src="/uploads/([0-9a-f]{32}\.png)"', page) and "explain-link" in page
    assert len(os.listdir(tmp_path / "uploads")) <= 8


def test_a_full_upload_folder_shows_new_results_inline_rather_than_break_fresh_links(make_app, tmp_path):
    client = make_app(UPLOAD_MAX_FILES=4, UPLOAD_KEEP_SECONDS=600, UPLOAD_CLIENT_SHARE=1.0).test_client()
    pages = [post_file(client, image_bytes(seed=k)).get_data(as_text=True) for k in range(3)]
    stored = [re.search(r'src="/uploads/([0-9a-f]{32}\.png)"', page) for page in pages]
    assert stored[0] and stored[1] and stored[2] is None  # the third is over the cap while the others are fresh
    assert 'src="data:image/png;base64,' in pages[2] and "explain-link" not in pages[2]
    assert sorted(os.listdir(tmp_path / "uploads")) == sorted(
        name for match in stored[:2] for name in (match.group(1), match.group(1)[:-4] + "_input.png"))
    for match in stored[:2]:
        assert client.get(f"/uploads/{match.group(1)}").status_code == 200
