"""The OpenAPI spec, fuzzed against the live app by schemathesis: no 5xx, every answer as the spec says."""
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import content_type_conformance, response_schema_conformance, \
    status_code_conformance

from cifarlab.web import openapi
from cifarlab.web.context import parts

pytestmark = pytest.mark.slow
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
OPERATIONS = [(path, method.upper()) for path, item in openapi.spec(32)["paths"].items() for method in item]


@pytest.fixture(scope="module")
def live_schema(tiny_model_path, tmp_path_factory):
    """The spec as the running app serves it, with calls going to that app (CSRF on, as in production)."""
    from app import create_app

    app = create_app({"TESTING": True, "MODEL_PATH": str(tiny_model_path), "SECRET_KEY": "test-only",
                      "UPLOAD_FOLDER": str(tmp_path_factory.mktemp("uploads")), "METRICS_ALLOW": None})
    yield schemathesis.openapi.from_wsgi("/openapi.json", app)
    if parts(app).decoders:
        parts(app).decoders.close()


@pytest.mark.parametrize("path,method", OPERATIONS)
def test_every_route_answers_as_the_spec_says(live_schema, path, method):
    operation = live_schema[path][method]

    @given(case=operation.as_strategy())
    @settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    def call(case):
        case.call_and_validate(checks=CHECKS, headers={"Host": "localhost"})

    call()


def test_the_upload_endpoint_requires_its_file_field():
    from cifarlab.web import openapi

    schema = openapi.UPLOAD["multipart/form-data"]["schema"]
    assert schema["required"] == ["file"] and schema["properties"]["file"]["minItems"] == 1
