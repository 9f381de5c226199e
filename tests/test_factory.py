"""cifarlab.web.factory: settings, start-up refusals, the composed app."""
import pkgutil
import subprocess
import sys

import pytest

import cifarlab.web
from app import create_app
from cifarlab.modelfile import ModelFileError
from cifarlab.web.context import parts
from cifarlab.web.settings import ConfigError
from tests.helpers import image_bytes, multipart


def test_trusted_hosts_are_a_setting(make_app):
    client = make_app(TRUSTED_HOSTS=["classify.example.org"]).test_client()
    assert client.get("/", headers={"Host": "classify.example.org"}).status_code == 200
    assert client.get("/", headers={"Host": "localhost"}).status_code == 400


def test_session_cookie_is_samesite_lax(make_app):
    response = make_app(WTF_CSRF_ENABLED=True).test_client().get("/")
    assert "SameSite=Lax" in response.headers["Set-Cookie"] and "HttpOnly" in response.headers["Set-Cookie"]


def test_uploads_never_touch_tmpdir(app, client, monkeypatch, tmp_path):
    body, content_type = multipart({}, [("file", "big.bmp", image_bytes("BMP", size=(600, 600)))])  # past 500 kB
    parts(app).decoders.warm_up()  # as outside tests: a decoder process (and its socket folder) starts with the app
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path / "full-or-missing"))  # spooling to disk would fail here
    response = client.post("/", data=body, content_type=content_type)
    assert response.status_code == 200


def test_missing_model_file_fails_at_start(tmp_path):
    with pytest.raises(ModelFileError, match="not found"):
        create_app({"TESTING": True, "MODEL_PATH": str(tmp_path / "nope.h5"), "SECRET_KEY": "t"})


def test_corrupt_model_file_fails_at_start(tmp_path, tiny_model_path):
    bad = tmp_path / "bad.h5"
    bad.write_bytes(b"not hdf5")
    bad.with_suffix(".json").write_text(tiny_model_path.with_suffix(".json").read_text())
    with pytest.raises(ModelFileError, match="cannot load model"):
        create_app({"TESTING": True, "MODEL_PATH": str(bad), "SECRET_KEY": "t"})


def test_random_secret_key_when_unset(tiny_model_path, tmp_path, monkeypatch, caplog):
    monkeypatch.delenv("SECRET_KEY", raising=False)
    app1 = create_app({"MODEL_PATH": str(tiny_model_path), "UPLOAD_FOLDER": str(tmp_path)})
    app2 = create_app({"MODEL_PATH": str(tiny_model_path), "UPLOAD_FOLDER": str(tmp_path)})
    assert app1.config["SECRET_KEY"] != app2.config["SECRET_KEY"]
    assert "SECRET_KEY is not set" in caplog.text


@pytest.mark.parametrize("env,setting", [({"MAX_CONTENT_LENGTH": "lots"}, "MAX_CONTENT_LENGTH"),
                                         ({"UNSURE_THRESHOLD": "high"}, "UNSURE_THRESHOLD"),
                                         ({"MODEL_PATH": "/nonexistent/model.h5"}, "model file not found")])
def test_bad_setting_or_model_is_one_line_and_exit_2(monkeypatch, capsys, env, setting):
    import app as app_module

    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert app_module.main([]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and setting in err and "\n" not in err


def test_no_module_of_the_web_layer_imports_tensorflow_matplotlib_training_code_or_the_load_generator():
    modules = ["app"] + [f"cifarlab.web.{m.name}" for m in pkgutil.iter_modules(cifarlab.web.__path__)]
    forbidden = ("tensorflow", "keras", "matplotlib", "cifarlab.ml", "benchmarks", "loadtest")
    script = (f"import importlib, sys; [importlib.import_module(m) for m in {modules!r}]; "
              f"print(sorted(m for m in {forbidden!r} if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert len(modules) >= 10 and result.stdout.strip() == "[]"


def test_every_subsystem_sets_its_part_at_start_up(app):
    built = parts(app)
    assert built.models.names() == [app.config["SERVING_MODEL_NAME"]] and built.in_flight is not None
    assert len(built.examples) == 10 and built.explain is not None and built.review_logins is not None
    assert built.feedback is not None and built.metrics is not None
    assert {"/metrics", "/", "/api/predict", "/review"} <= {rule.rule for rule in app.url_map.iter_rules()}


def test_an_upload_folder_that_takes_no_files_stops_start_up_in_one_line(tiny_model_path, tmp_path):
    (tmp_path / "a-file").write_text("not a folder")
    with pytest.raises(ConfigError, match=r"^setting UPLOAD_FOLDER=.*cannot create or write files there"):
        create_app({"TESTING": True, "MODEL_PATH": str(tiny_model_path), "SECRET_KEY": "t",
                    "UPLOAD_FOLDER": str(tmp_path / "a-file" / "uploads")})
