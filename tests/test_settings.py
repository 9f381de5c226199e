import pytest

from cifarlab.web import settings


@pytest.mark.parametrize("name,raw,value", [
    ("MAX_CONTENT_LENGTH", "10485760", 10 * 2**20),
    ("MAX_CONTENT_LENGTH", "10MB", 10 * 2**20),
    ("MAX_CONTENT_LENGTH", "512k", 512 * 1024),
    ("MAX_IMAGE_PIXELS", "25_000_000", 25_000_000),
    ("REQUEST_DEADLINE", "2.5", 2.5),
    ("UNSURE_THRESHOLD", "0.4", 0.4),
    ("GRADCAM", "off", False),
    ("TRUSTED_HOSTS", "example.org, .example.org", ["example.org", ".example.org"]),
    ("TRUSTED_HOSTS", "*", None),
    ("INFERENCE_URL", "http://backend:8501/", "http://backend:8501"),
    ("INFERENCE_RETRIES", "0", 0),
    ("LOG_LEVEL", " WARNING", "warning"),
])
def test_settings_parse_from_the_environment(name, raw, value):
    assert settings.from_environ({name: raw}) == {name: value}


@pytest.mark.parametrize("name,raw", [
    ("MAX_CONTENT_LENGTH", "ten megabytes"), ("MAX_CONTENT_LENGTH", "10XB"), ("MAX_BATCH_FILES", "0"),
    ("MAX_BATCH_FILES", "-3"), ("UNSURE_THRESHOLD", "high"), ("UNSURE_THRESHOLD", "2"), ("REQUEST_DEADLINE", "0"),
    ("GRADCAM", "maybe"), ("INFERENCE_URL", "backend:8501"), ("INFERENCE_URL", "http://127.0.0.1:99999"),
    ("INFERENCE_URL", "http://backend:0"), ("INFERENCE_URL", "http://backend:x"), ("INFERENCE_TIMEOUT", "nan"),
    ("TRUSTED_HOSTS", ","), ("LOG_LEVEL", "verbose"),
])
def test_a_bad_value_is_one_line_naming_the_setting(name, raw):
    with pytest.raises(settings.ConfigError) as info:
        settings.from_environ({name: raw})
    message = str(info.value)
    assert message.startswith(f"setting {name}={raw!r}: expected") and "\n" not in message


def test_unset_and_empty_settings_keep_their_defaults():
    assert settings.from_environ({"MAX_BATCH_FILES": "", "PATH": "/bin"}) == {}
    assert set(settings.defaults()) == {s.name for s in settings.SETTINGS}


def test_secret_key_is_never_echoed():
    assert settings.from_environ({"SECRET_KEY": "s3cret"}) == {"SECRET_KEY": "s3cret"}


def test_the_session_cookie_can_be_marked_secure(make_app):
    assert make_app(SESSION_COOKIE_SECURE=True).config["SESSION_COOKIE_SECURE"] is True
    assert settings.from_environ({"SESSION_COOKIE_SECURE": "true"})["SESSION_COOKIE_SECURE"] is True
