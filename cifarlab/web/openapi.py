"""The OpenAPI 3 description of every route, served at /openapi.json; tests check it against the URL map and
fuzz the live app with it (schemathesis)."""

from ..prediction import FIELDS, PROBABILITY, SERVING_FIELDS

ERROR = {"type": "object", "required": ["error"], "properties": {"error": {"type": "string"}}}
PREDICTION = {
    "type": "object",
    "required": ["filename", *(field.name for field in FIELDS)],
    "properties": {
        "filename": {"type": "string"}, "id": {"type": "string", "description": "the answer's id, for /api/feedback "
                                                                                  "(absent when FEEDBACK is off)"},
        **{field.name: field.schema for field in FIELDS},
    },
}
FILE_ERROR = {"type": "object", "required": ["filename", "error", "status"],
              "properties": {"filename": {"type": "string"}, "error": {"type": "string"},
                             "status": {"type": "integer", "minimum": 400, "maximum": 599}}}
PREDICTIONS = {"type": "object", "required": ["predictions", "model"], "properties": {
    "predictions": {"type": "array", "items": {"oneOf": [PREDICTION, FILE_ERROR]}},
    "model": {"type": "object", "required": ["name", "run", "training", "version", "class_names", "served_name",
                                             "served_version"], "properties": {
        "name": {"type": "string", "description": "what the model is, as the pages name it"},
        "run": {"type": ["string", "null"], "description": "the training run's name (its sidecar's name)"},
        "training": {"type": "string", "description": "how it was trained and for how long, fine-tunes counted"}}},
    "error": {"type": "string"}}}
VERSION_STATUS = {"type": "object", "required": ["model_version_status"], "properties": {
    "model_version_status": {"type": "array", "items": {
        "type": "object", "required": ["version", "state", "status"],
        "properties": {"version": {"type": "string"}, "state": {"enum": ["LOADING", "AVAILABLE", "END"]},
                       "status": {"type": "object", "required": ["error_code", "error_message"]}}}}}}
SERVING_ANSWER = {"type": "object", "required": ["predictions"], "properties": {"predictions": {"type": "array", "items": {
    "oneOf": [{"type": "array", "items": PROBABILITY},
              {"type": "object", "required": list(SERVING_FIELDS)}]}}}}
INSTANCES = {"type": "object", "properties": {
    "instances": {"type": "array", "minItems": 1, "items": {"oneOf": [
        {"type": "array", "description": "32x32x3 pixel values 0..255"},
        {"type": "object", "required": ["b64"], "properties": {"b64": {"type": "string", "format": "byte"}}}]}},
    "inputs": {"type": "array", "description": "the same as instances"},
    "signature_name": {"enum": ["serving_default", "verdicts"]}}}
UPLOAD = {"multipart/form-data": {"schema": {"type": "object", "required": ["file"], "properties": {
    "file": {"type": "array", "minItems": 1, "items": {"type": "string", "format": "binary"}},
    "model": {"type": "string", "description": "a model name (several models served: MODEL_DIR)"}}}}}
FLAG = {"type": "object", "required": ["id", "label"], "properties": {
    "id": {"type": "string", "description": "the id a prediction came with"},
    "label": {"type": "string", "description": "a class name, \"none\" (none of the classes) or \"correct\""}}}
FLAGGED = {"type": "object", "required": ["id", "label", "replaced"], "properties": {
    "id": {"type": "string"}, "label": {"type": "string"}, "replaced": {"type": "boolean"}}}
MODEL_QUERY = {"name": "model", "in": "query", "required": False, "schema": {"type": "string"},
               "description": "the model to use, by name (default: the server's default model)"}


def json_answer(schema, description):
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def errors(*codes):
    """JSON error answers for these status codes."""
    return {str(code): json_answer(ERROR, "error") for code in codes}


def html(description, *codes, params=()):
    """A GET of an HTML page."""
    answers = {"200": {"description": description, "content": {"text/html": {}}}}
    answers.update({str(code): {"description": "error page", "content": {"text/html": {}}} for code in codes})
    return {"get": {"summary": description, "parameters": list(params), "responses": answers}}


def path_param(name, kind="string"):
    return {"name": name, "in": "path", "required": True, "schema": {"type": kind}}


def serving_paths(suffix, params):
    """TF Serving's status, metadata and :predict under one model prefix (latest, a version, a label)."""
    return {
        f"/v1/models/{{name}}{suffix}": {"get": {
            "summary": "model_version_status of the model's versions", "parameters": params,
            "responses": {"200": json_answer(VERSION_STATUS, "versions and states"), **errors(404)}}},
        f"/v1/models/{{name}}{suffix}/metadata": {"get": {
            "summary": "signatures and class names", "parameters": params,
            "responses": {"200": json_answer({"type": "object", "required": ["model_spec", "metadata"]}, "metadata"),
                          **errors(404)}}},
        f"/v1/models/{{name}}{suffix}:predict": {"post": {
            "summary": "TF Serving REST predict", "parameters": params,
            "requestBody": {"required": True, "content": {"application/json": {"schema": INSTANCES}}},
            "responses": {"200": json_answer(SERVING_ANSWER, "one row per instance"),
                          **errors(400, 404, 413, 415, 422, 503)}}},
    }


def spec(max_files):
    """The OpenAPI 3.0 document."""
    return {"openapi": "3.0.3",
            "info": {"title": "CIFAR-10 classifier", "version": "1",
                     "description": "Upload images, get a class, calibrated probabilities and a verdict (known, "
                                    "unsure, unknown); TF Serving's REST protocol beside it."},
            "paths": {**api_paths(max_files), **feedback_paths(), **page_paths()}}


def api_paths(max_files):
    """The JSON routes: predictions, probes, metrics, this document and TF Serving's."""
    name = path_param("name")
    return {
        "/api/predict": {"post": {
            "summary": "classify uploaded images (each refused or classified on its own)", "parameters": [MODEL_QUERY],
            "requestBody": {"required": True, "content": UPLOAD,
                            "description": f"one or up to {max_files} images in the field file"},
            "responses": {"200": json_answer(PREDICTIONS, "a prediction or an error per file"),
                          **{str(code): json_answer({"anyOf": [ERROR, PREDICTIONS]}, "refused")
                             for code in (400, 404, 413, 415, 422, 503)}}}},
        "/healthz": {"get": {"summary": "the process answers", "responses": {
            "200": json_answer({"type": "object", "required": ["status"]}, "ok")}}},
        "/readyz": {"get": {"summary": "every model is loaded and warmed up", "responses": {
            "200": json_answer({"type": "object", "required": ["status", "detail"]}, "ready"),
            "503": json_answer({"type": "object", "required": ["status", "detail"]}, "not ready")}}},
        "/metrics": {"get": {"summary": "Prometheus metrics (clients in METRICS_ALLOW only)", "responses": {
            "200": {"description": "Prometheus text format", "content": {"text/plain": {}}},
            "403": {"description": "not an allowed client", "content": {"text/html": {}}}}}},
        "/openapi.json": {"get": {"summary": "this document", "responses": {
            "200": json_answer({"type": "object", "required": ["openapi", "paths"]}, "OpenAPI 3")}}},
        **serving_paths("", [name]),
        **serving_paths("/versions/{version}", [name, path_param("version", "integer")]),
        **serving_paths("/labels/{label}", [name, path_param("label")]),
    }


def feedback_paths():
    """The flag (JSON and form) and the operators' pages."""
    operators_refuse = {code: {"description": "refused", "content": {"text/plain": {}, "text/html": {}}}
                        for code in ("401", "403", "429")}
    return {
        "/api/feedback": {"post": {
            "summary": "flag an answer: right, another class, or none of the classes",
            "requestBody": {"required": True, "content": {"application/json": {"schema": FLAG}}},
            "responses": {"201": json_answer(FLAGGED, "flag recorded"),
                          "200": json_answer(FLAGGED, "an earlier flag on this answer replaced"),
                          **errors(400, 404, 507)}}},
        "/feedback": {"post": {
            "summary": "the result page's \"Is this right?\" form (needs the form's CSRF token)",
            "requestBody": {"content": {"application/x-www-form-urlencoded": {"schema": {"type": "object"}}}},
            "responses": {code: {"description": "thanks page, or an error page", "content": {"text/html": {}}}
                          for code in ("200", "201", "400", "404", "507")}}},
        "/review": {"get": {"summary": "the operators' review queue (HTTP Basic, REVIEW_CREDENTIALS)", "responses": {
            "200": {"description": "the queue", "content": {"text/html": {}}}, **operators_refuse}}},
        "/review/traffic": {"get": {
            "summary": "what users send: verdicts, flags, classes per day, confused pairs, drift (operators)",
            "parameters": [{"name": "days", "in": "query", "required": False,
                            "schema": {"type": "integer", "minimum": 1, "maximum": 90}}],
            "responses": {"200": {"description": "the page", "content": {"text/html": {}}},
                          "400": {"description": "a bad days", "content": {"text/html": {}}}, **operators_refuse}}},
        "/review/{answer_id}": {"post": {
            "summary": "an operator's decision on one answer (accept, relabel, reject)",
            "parameters": [path_param("answer_id")],
            "requestBody": {"content": {"application/x-www-form-urlencoded": {"schema": {"type": "object"}}}},
            "responses": {code: {"description": "back to the queue, or refused",
                                 "content": {"text/plain": {}, "text/html": {}}}
                          for code in ("303", "400", "401", "403", "404", "429")}}},
        "/review/image/{answer_id}": {"get": {
            "summary": "an answer's stored 32x32 image (operators)", "parameters": [path_param("answer_id")],
            "responses": {"200": {"description": "PNG", "content": {"image/png": {}}},
                          **{code: {"description": "refused", "content": {"text/plain": {}, "text/html": {}}}
                             for code in ("401", "403", "404", "429")}}}},
    }


def page_paths():
    """The HTML pages and the files they show."""
    return {
        "/": {**html("the upload form", 404, params=[MODEL_QUERY]), "post": {
            "summary": "the upload form's post (needs the form's CSRF token)",
            "requestBody": {"content": UPLOAD},
            "responses": {code: {"description": "result page, or the form with a message",
                                 "content": {"text/html": {}}} for code in ("200", "400", "404", "413", "415", "422",
                                                                            "503")}}},
        "/api": html("the API's documentation"),
        "/model": html("the model card", 404, params=[MODEL_QUERY]),
        "/model/{kind}.png": {"get": {"summary": "a model-card figure", "parameters": [path_param("kind")],
                                      "responses": {"200": {"description": "PNG", "content": {"image/png": {}}},
                                                    "404": {"description": "no such figure",
                                                            "content": {"text/html": {}}}}}},
        "/examples/{name}": html("a bundled example classified", 404, params=[path_param("name"), MODEL_QUERY]),
        "/explain/{name}": html("Grad-CAM of a stored result", 404, 503, params=[
            path_param("name"), {"name": "index", "in": "query", "required": True, "schema": {"type": "integer"}},
            {"name": "fragment", "in": "query", "required": False, "schema": {"type": "string"}}]),
        "/uploads/{name}": {"get": {"summary": "a stored upload's display copy", "parameters": [path_param("name")],
                                    "responses": {"200": {"description": "PNG", "content": {"image/png": {}}},
                                                  "404": {"description": "not stored", "content": {"text/html": {}}}}}},
    }


def flask_rule(path):
    """/v1/models/{name}:predict -> the URL rule text without converters, for comparing with the app's URL map."""
    return path.replace("{", "<").replace("}", ">")
