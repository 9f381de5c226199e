import csv
import io

import jsonschema
import pytest

from cifarlab.batch import Writer
from cifarlab.prediction import CSV_FIELDS, FIELDS, SERVING_FIELDS, Prediction
from cifarlab.web import openapi

CLASSES = ("cat", "dog", "ship", "frog")


@pytest.fixture(params=[(False, False), (True, False), (False, True)], ids=["known", "unsure", "unknown"])
def prediction(request):
    return Prediction([0.1, 0.6, 0.25, 0.05], CLASSES, 0.123456789, *request.param)


def test_the_json_answer_has_every_field_in_order_and_fits_the_openapi_schema(prediction):
    answer = prediction.to_json()
    assert list(answer) == [field.name for field in FIELDS]
    assert answer["class"] == "dog" and answer["index"] == 1 and answer["ood_score"] == 0.123457
    assert [row["class"] for row in answer["top3"]] == ["dog", "ship", "cat"]
    jsonschema.validate({"filename": "a.png", **answer}, openapi.PREDICTION)


def test_the_openapi_schema_names_exactly_the_declared_fields():
    assert set(openapi.PREDICTION["properties"]) == {"filename", "id", *(field.name for field in FIELDS)}
    assert openapi.PREDICTION["required"] == ["filename", *(field.name for field in FIELDS)]


def test_the_csv_has_one_column_per_declared_field_then_one_per_class(prediction):
    writer = Writer(".csv", CLASSES)
    header, row, refused = (next(csv.reader(io.StringIO(line))) for line in
                            (writer.header(), writer.row("a.png", prediction), writer.row("b.png", error="no")))
    assert header == ["path", *(field.name for field in CSV_FIELDS), *CLASSES, "error"]
    assert len(row) == len(refused) == len(header) and refused[-1] == "no" and set(refused[1:-1]) == {""}
    cells = dict(zip(header, row))
    assert cells["verdict"] == prediction.verdict and cells["dog"] == "0.600000" and cells["ood_score"] == "0.1235"


def test_the_named_serving_row_holds_the_serving_fields_and_the_plain_one_the_probabilities(prediction):
    named = prediction.serving_row(named=True)
    assert set(named) == set(SERVING_FIELDS) == {"probabilities", "ood_score", "unsure", "unknown"}
    assert prediction.serving_row(named=False) == named["probabilities"] == [0.1, 0.6, 0.25, 0.05]
    assert (named["unsure"], named["unknown"]) == (prediction.unsure, prediction.unknown)


def test_the_api_page_lists_every_declared_field(client):
    page = client.get("/api").get_data(as_text=True)
    assert all(f'"{field.name}"' in page for field in FIELDS)
