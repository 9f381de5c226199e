"""cifarlab.web.explain: Grad-CAM explanations offered for stored inputs, prepared at start-up when asked."""
import re

import pytest

from cifarlab.web import explain
from cifarlab.web.context import parts
from tests.helpers import image_bytes, post_file


def test_explanation_on_demand_for_the_stored_input(client, app):
    html = post_file(client, image_bytes(size=(64, 48))).get_data(as_text=True)
    link = re.search(r'class="explain-link" href="([^"]+)"', html).group(1).replace("&amp;", "&")
    page = client.get(link)
    assert page.status_code == 200 and b'with a Grad-CAM heatmap for' in page.data and b"data:image/png;base64," in page.data
    fragment = client.get(link + "&fragment=1")
    assert fragment.status_code == 200 and fragment.data.lstrip().startswith(b"<figure") and b"<html" not in fragment.data
    name = link.split("/")[2].split("?")[0]
    for bad in (f"/explain/{name}?index=10", f"/explain/{name}", "/explain/" + "0" * 32 + ".png?index=1",
                f"/explain/{name[:-4]}_input.png?index=1", "/explain/..%2Fapp.py?index=1"):
        assert client.get(bad).status_code == 404


def test_explanations_are_prepared_in_the_background_at_start_up(make_app):
    explain = parts(make_app(GRADCAM_PRELOAD=True)).explain
    explain.preloading.join(60)
    assert explain.explainer is not None  # the first request finds it built and traced


def test_no_background_preparation_when_preload_is_off(make_app):
    explain = parts(make_app(GRADCAM_PRELOAD=False)).explain
    assert explain.preloading is None and explain.explainer is None


def test_no_explanations_when_disabled(make_app):
    client = make_app(GRADCAM=False).test_client()
    html = post_file(client, image_bytes()).get_data(as_text=True)
    assert "explain-link" not in html


def test_the_explanations_are_for_the_first_served_model_version(app):
    assert parts(app).explained == (app.config["SERVING_MODEL_NAME"], 1)


@pytest.mark.parametrize("overrides, meta, expected", [
    ({}, {"arch": "fast"}, "model.h5"),
    ({}, {"arch": "transfer"}, None),  # a backbone nested in the model: Grad-CAM does not know it
    ({}, {"arch": "remote"}, None),  # not trained here
    ({"GRADCAM": False}, {"arch": "fast"}, None),
    ({"INFERENCE_URL": "http://backend:8501"}, {"arch": "fast"}, None),
])
def test_explainable_names_the_keras_file_grad_cam_reads_or_none(overrides, meta, expected):
    config = {"GRADCAM": True, "INFERENCE_URL": None, **overrides}
    assert explain.explainable(config, meta, "model.h5") == expected
