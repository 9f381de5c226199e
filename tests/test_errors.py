import pytest

from cifarlab.errors import CifarlabError
from cifarlab.ml.data import DataError
from cifarlab.web.explain import ExplanationUnavailable


@pytest.mark.parametrize("path, json_answer", [("/nowhere", False), ("/api/nowhere", True), ("/v1/nowhere", True)])
def test_not_found_is_json_on_api_paths_and_a_page_elsewhere(client, path, json_answer):
    response = client.get(path)
    assert response.status_code == 404
    if json_answer:
        assert response.is_json and "error" in response.get_json()
    else:
        assert response.mimetype == "text/html" and b"Back to the upload form" in response.data


def test_method_not_allowed_keeps_its_allow_header(client):
    response = client.delete("/api/predict")
    assert response.status_code == 405 and "POST" in response.headers["Allow"] and response.is_json


@pytest.mark.parametrize("path", ["/boom", "/api/boom"])
def test_an_unexpected_error_is_a_500_without_a_trace_and_is_logged(make_app, path, caplog):
    app = make_app()

    def boom():
        raise RuntimeError("secret internals")

    app.add_url_rule(path, "boom", boom)
    response = app.test_client().get(path)
    assert response.status_code == 500 and b"secret internals" not in response.data and b"Traceback" not in response.data
    assert response.is_json == path.startswith("/api/")
    assert any("secret internals" in r.exc_text for r in caplog.records if r.exc_text)


@pytest.mark.parametrize("error, status, title", [(DataError("the folder has no test/ split"), 400, "Bad request"),
                                                  (ExplanationUnavailable("busy, try again"), 503, "Service Unavailable"),
                                                  (CifarlabError("no room left", 507), 507, "Feedback store full")])
@pytest.mark.parametrize("path", ["/boom", "/api/boom"])
def test_an_error_of_the_package_answers_its_own_status_and_message(make_app, path, error, status, title):
    app = make_app()

    def boom():
        raise error

    app.add_url_rule(path, "boom", boom)
    response = app.test_client().get(path)
    assert response.status_code == status and b"Traceback" not in response.data
    if path.startswith("/api/"):
        assert response.get_json() == {"error": error.message}
    else:
        text = response.get_data(as_text=True)
        assert response.mimetype == "text/html" and error.message in text and title in text


def test_an_oversized_form_post_gets_the_form_back_with_the_limit(make_app):
    client = make_app(MAX_CONTENT_LENGTH=1000).test_client()
    response = client.post("/", data=b"x" * 5000, content_type="multipart/form-data; boundary=x")
    assert response.status_code == 413 and b"the limit is" in response.data and b'id="upload-form"' in response.data
