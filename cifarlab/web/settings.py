"""The web app's settings: one typed table, every entry readable from the environment, bad values one clear line."""
import ipaddress
import os
import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from .. import REPO
from ..errors import CifarlabError
from ..images import DEFAULT_MAX_PIXELS


class ConfigError(CifarlabError, ValueError):
    """A setting with a value the app cannot use; the message is one line naming the setting."""


def text(value):
    return value


MAX_WHOLE = 10**15  # no count or size here is sensibly larger; a 401-digit number is a typo or an attack


def whole(value):
    """A whole number >= 0 (underscores allowed: 25_000_000), at most MAX_WHOLE."""
    digits = value.strip().replace("_", "")
    if not re.fullmatch(r"\d+", digits) or not value.strip()[0].isdigit():
        raise ValueError("expected a whole number, e.g. 32")
    if len(digits.lstrip("0")) > len(str(MAX_WHOLE)) or int(digits) > MAX_WHOLE:
        raise ValueError(f"expected a whole number of at most {MAX_WHOLE:.0e}")
    return int(digits)


def between(low, high):
    """A parser of whole numbers from low to high."""
    def parse(value):
        number = whole(value)
        if not low <= number <= high:
            raise ValueError(f"expected a whole number from {low} to {high}")
        return number
    return parse


def bind_address(value):
    """host:port (IPv6 in brackets) or unix:/path, as gunicorn and nginx take it."""
    if value.startswith("unix:") and len(value) > 5:
        return value
    match = re.fullmatch(r"(\[[0-9a-fA-F:.]+\]|[\w.-]+):(\d{1,5})", value.strip())
    if not match or not 0 <= int(match.group(2)) <= 65535:  # 0: any free port
        raise ValueError("expected host:port (e.g. 127.0.0.1:8000, [::1]:8000) or unix:/path")
    return value.strip()


def positive(value):
    number = whole(value)
    if number < 1:
        raise ValueError("expected a whole number of at least 1")
    return number


MAX_BYTES = 2**40  # 1 TiB: above any request, upload folder or backend answer this app should accept
BYTE_UNITS = {"": 1, "b": 1, "k": 1024, "kb": 1024, "kib": 1024, "m": 1024**2, "mb": 1024**2, "mib": 1024**2,
              "g": 1024**3, "gb": 1024**3, "gib": 1024**3}


def byte_size(value):
    """Bytes, as a number or with a unit: 10485760, 10MB, 10 MiB, 512k (units are powers of 1024)."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", value)
    if not match or match.group(2).lower() not in BYTE_UNITS:
        raise ValueError("expected a size in bytes, e.g. 10485760 or 10MB")
    number = float(match.group(1))
    if not number * BYTE_UNITS[match.group(2).lower()] <= MAX_BYTES:  # also false for the inf of 401 digits
        raise ValueError(f"expected a size of at most {MAX_BYTES // 2**30} GiB")
    size = int(number * BYTE_UNITS[match.group(2).lower()])
    if size < 1:
        raise ValueError("expected a size of at least 1 byte")
    return size


def memory_size(value):
    """A byte_size of at least 64 MiB: less and a decoder could not hold one ordinary photo."""
    size = byte_size(value)
    if size < 64 * 2**20:
        raise ValueError("expected at least 64MB")
    return size


def number_within(value, within, hint):
    """A float for which within(number) holds (NaN never does); else ValueError(hint)."""
    try:
        number = float(value)
    except ValueError:
        raise ValueError(hint) from None
    if not within(number):
        raise ValueError(hint)
    return number


def seconds(value):
    return number_within(value, lambda n: 0 < n < 86400, "expected a number of seconds above 0 and below a day")


def poll_seconds(value):
    return number_within(value, lambda n: 0 <= n < 86400, "expected a number of seconds from 0 (never) to a day")


def duration(value):
    return number_within(value, lambda n: 0 < n <= 90 * 86400, "expected a number of seconds above 0, at most 90 days")


def database_url(value):
    """An SQLAlchemy URL: sqlite:///path or postgresql+psycopg://user@host/db."""
    if not re.match(r"(sqlite|postgresql(\+psycopg)?)://", value.strip()):
        raise ValueError("expected sqlite:///path/to/file.db or postgresql+psycopg://user:password@host/database")
    return value.strip().replace("postgresql://", "postgresql+psycopg://", 1)


def credentials(value):
    """user:password, the password at least 12 characters."""
    user, _, password = value.partition(":")
    if not user or len(password) < 12:
        raise ValueError("expected user:password with a password of at least 12 characters")
    return value


def milliseconds(value):
    return number_within(value, lambda n: 0 <= n <= 1000, "expected milliseconds from 0 (off) to 1000")


def fraction(value):
    """A probability threshold; above 1 means always unsure."""
    return number_within(value, lambda n: 0 <= n <= 1.01, "expected a number between 0 and 1, e.g. 0.5")


def finite(value):
    return number_within(value, lambda n: abs(n) < 1e6, "expected a finite number, e.g. 0.35")


def boolean(value):
    lowered = value.strip().lower()
    if lowered not in ("1", "true", "yes", "on", "0", "false", "no", "off"):
        raise ValueError("expected true or false")
    return lowered in ("1", "true", "yes", "on")


def log_level(value):
    lowered = value.strip().lower()
    if lowered not in ("debug", "info", "warning", "error"):
        raise ValueError("expected debug, info, warning or error")
    return lowered


def http_url(value):
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("expected an http:// or https:// URL, e.g. http://backend:8501")
    try:
        port = parts.port  # raises for a port that is not a number in 0..65535
    except ValueError:
        port = 0
    if port == 0:
        raise ValueError("expected a port number from 1 to 65535 after the host, e.g. http://backend:8501")
    return value.rstrip("/")


def host_list(value):
    """Comma-separated host names; '*' accepts any Host header."""
    hosts = [h.strip() for h in value.split(",") if h.strip()]
    if not hosts:
        raise ValueError("expected host names separated by commas, or *")
    return None if hosts == ["*"] else hosts


def address_list(value):
    """Comma-separated addresses or networks (127.0.0.1, 10.0.0.0/8, ::1); '*' allows every client."""
    items = [item.strip() for item in value.split(",") if item.strip()]
    if items == ["*"]:
        return None
    if not items:
        raise ValueError("expected addresses or networks separated by commas (10.0.0.0/8,::1), or *")
    try:
        return [ipaddress.ip_network(item, strict=False) for item in items]
    except ValueError:
        raise ValueError("expected addresses or networks separated by commas (10.0.0.0/8,::1), or *") from None


def proxy_list(value):
    """Comma-separated addresses or networks of proxies; '*' is refused (it would trust every client's header)."""
    if value.strip() == "*":
        raise ValueError("expected the proxies' addresses or networks (127.0.0.1,10.0.0.0/8); * would trust anyone")
    return address_list(value)


def canary_mode(value):
    lowered = value.strip().lower()
    if lowered not in ("split", "shadow"):
        raise ValueError("expected split or shadow")
    return lowered


def log_format(value):
    lowered = value.strip().lower()
    if lowered not in ("text", "json"):
        raise ValueError("expected text or json")
    return lowered


@dataclass(frozen=True)
class Setting:
    name: str
    default: object
    parse: object  # str -> value; raises ValueError with a hint
    help: str


SETTINGS = (
    Setting("BIND", "127.0.0.1:8000", bind_address, "make serve (nginx) or gunicorn alone: where to listen"),
    Setting("WEB_WORKERS", None, between(1, 64), "gunicorn worker processes (default: one per core)"),
    Setting("WEB_THREADS", 4, between(1, 256), "threads per gunicorn worker"),
    Setting("MODEL_PATH", str(REPO / "model" / "cifar10_cnn_int8.tflite"), text,
            ".tflite or .h5 model file, with its .json sidecar beside it (default: the int8 export)"),
    Setting("MODEL_DIR", None, text, "serve every model under this folder by name and version, as TF Serving lays "
            "them out (MODEL_DIR/<name>/<version>/<file> + sidecar); MODEL_PATH is then not used"),
    Setting("MODEL_POLL_SECONDS", 5.0, poll_seconds, "with MODEL_DIR: seconds between looks for new, changed or "
            "removed versions and labels (0: only at start-up)"),
    Setting("CANARY_SHARE", 0.0, fraction, "with MODEL_DIR: share of clients (the same ones each time) a model's "
            "version labelled canary answers; the rest get the version labelled stable (train.py models)"),
    Setting("CANARY_MODE", "split", canary_mode, "split: the canary answers its share; shadow: for that share it "
            "computes too, counted in /metrics against the answer, while stable answers everyone"),
    Setting("BATCH_WINDOW_MS", 2.0, milliseconds, "milliseconds a forward pass waits for the other requests in flight "
            "in its worker to join it (one pass for all); a request alone never waits; 0: each request on its own"),
    Setting("BATCH_MAX_IMAGES", 64, between(1, 4096), "images per shared forward pass at most"),
    Setting("UPLOAD_FOLDER", str(REPO / "uploads"), text, "where validated, re-encoded uploads are kept"),
    Setting("SECRET_KEY", None, text, "signs sessions and CSRF tokens; a random one per process when unset"),
    Setting("TRUSTED_HOSTS", ["localhost", "127.0.0.1"], host_list,
            "Host headers the app answers (comma-separated, * for any); others get 400"),
    Setting("MAX_CONTENT_LENGTH", 10 * 1024 * 1024, byte_size, "bytes per request (10MB, 512k, ...)"),
    Setting("MAX_FORM_PARTS", 64, positive, "multipart parts per request"),
    Setting("MAX_IMAGE_PIXELS", DEFAULT_MAX_PIXELS, positive, "width x height of one image"),
    Setting("MAX_REQUEST_PIXELS", 100_000_000, positive,
            "pixels decoded for one request, all its images together (JPEGs count at their reduced decode size)"),
    Setting("REQUEST_DEADLINE", 10.0, seconds, "seconds one request may spend decoding; the rest is refused"),
    Setting("DECODE_PROCESSES", 2, between(0, 64), "decoder processes per web process: uploads are decoded there, "
            "killed at REQUEST_DEADLINE; 0 decodes in the web process itself (no sandbox)"),
    Setting("DECODE_MEMORY", 512 * 2**20, memory_size, "memory a decoder process may take beyond its start-up size; "
            "an image that needs more is refused (413)"),
    Setting("MAX_BATCH_FILES", 32, positive, "images per form post or /api/predict request"),
    Setting("MAX_SERVING_INSTANCES", 256, positive, "instances per TF-Serving-style :predict request"),
    Setting("UPLOAD_MAX_FILES", 500, positive, "retention cap on the upload folder: files (two per result) ..."),
    Setting("UPLOAD_MAX_BYTES", 200 * 1024 * 1024, byte_size, "... and bytes; the oldest are removed first ..."),
    Setting("UPLOAD_KEEP_SECONDS", 600.0, seconds, "... but none younger than this: past the caps, new results are "
            "shown inline (no stored copy, no explanation link) rather than break links just given out"),
    Setting("UPLOAD_CLIENT_SHARE", 0.25, fraction, "... except a client's (by address) beyond this share of either "
            "cap: one client's burst evicts its own results, not everyone's room"),
    Setting("FEEDBACK", True, boolean, "keep each answer for a while under an id, so users can flag it (form and "
            "POST /api/feedback) and operators review it; false: no ids, nothing stored"),
    Setting("DATABASE_URL", f"sqlite:///{REPO / 'instance' / 'feedback.db'}", database_url, "where answers, flags "
            "and reviews live: SQLite (one machine) or postgresql+psycopg://... (several workers or machines); "
            "migrated at start-up"),
    Setting("FEEDBACK_FOLDER", str(REPO / "instance" / "feedback"), text, "the answers' 32x32 images, one PNG per "
            "content hash"),
    Setting("FEEDBACK_KEEP_SECONDS", 86400.0, duration, "an answer nobody flagged is removed after this long"),
    Setting("FEEDBACK_MAX_ANSWERS", 200_000, positive, "... and the oldest unflagged answers past this count"),
    Setting("FEEDBACK_MAX_ITEMS", 100_000, positive, "flagged or sampled answers kept for review; past it a new "
            "flag is refused (507) until an operator reviews or exports"),
    Setting("FEEDBACK_MAX_BYTES", 2**30, byte_size, "... and bytes of their images"),
    Setting("FEEDBACK_SAMPLE_RATE", 0.1, fraction, "share of unsure and unknown answers kept for review unasked"),
    Setting("FEEDBACK_SAMPLE_PER_HOUR", 100, whole, "... at most this many an hour (0: no sampling)"),
    Setting("REVIEW_CREDENTIALS", None, credentials, "user:password of the operators' review queue at /review (HTTP "
            "Basic; use TLS beyond loopback); unset: /review answers 403"),
    Setting("SERVING_MODEL_NAME", "cifar10", text, "the NAME in /v1/models/NAME of MODEL_PATH's model; with "
            "MODEL_DIR, the model served when a request names none (default: the first folder)"),
    Setting("SESSION_COOKIE_SECURE", False, boolean, "mark the session cookie Secure (set true behind TLS)"),
    Setting("UNSURE_THRESHOLD", None, fraction, "top probability below which a result says unsure; default: sidecar's"),
    Setting("OOD_THRESHOLD", None, finite, "ood_score above which a result says unknown (none of the classes); "
            "default: sidecar's"),
    Setting("LOG_LEVEL", "info", log_level, "app log on stderr: info = a line per request, warning = problems only"),
    Setting("LOG_FORMAT", "text", log_format, "request log lines: text (method, path, status, ms) or json (one "
            "object per request: time, route, status, ms, images, verdicts, model version, request id)"),
    Setting("METRICS_ALLOW", address_list("127.0.0.0/8,::1"), address_list, "clients /metrics answers (comma-"
            "separated addresses or networks, * for any); others get 403. Behind make serve's nginx: X-Real-IP"),
    Setting("TRUSTED_PROXIES", [], proxy_list, "make serve: proxies in front of its nginx (a TLS terminator on "
            "127.0.0.1, a load balancer) whose X-Forwarded-For names the client, for METRICS_ALLOW, canary buckets "
            "and upload shares; none by default (then every client behind such a proxy is the proxy)"),
    Setting("GRADCAM", True, boolean, "offer Grad-CAM on result pages (needs TensorFlow and the .h5 the model came from)"),
    Setting("GRADCAM_PRELOAD", False, boolean, "prepare Grad-CAM at start-up, so the first explanation does not wait "
            "for TensorFlow and the .h5; costs TensorFlow's memory in every process (make run turns it on; make "
            "serve's workers stay lean)"),
    Setting("EXPLAIN_SOCKET", None, text, "Unix socket of the explain worker that computes every heatmap (make serve "
            "starts one per server and sets this); unset: explanations are computed in the web process"),
    Setting("EXPLAIN_QUEUE", 4, between(1, 1000), "explanations waiting in the explain worker; more answer 503 at once"),
    Setting("EXPLAIN_TIMEOUT", 20.0, seconds, "seconds a web worker waits for the explain worker's heatmap, then 503"),
    Setting("EXPLAIN_MEMORY", 2**30, memory_size, "memory the explain worker may take beyond its size after warm-up"),
    Setting("PROXY_TIMEOUT", 60.0, seconds, "make serve: seconds nginx waits for the app's answer, then a JSON or "
            "page 504"),
    Setting("INFERENCE_URL", None, http_url, "predict through a TF-Serving REST backend instead of a local model"),
    Setting("INFERENCE_TIMEOUT", 8.0, seconds, "overall deadline of one backend call, retries included"),
    Setting("INFERENCE_RETRIES", 1, whole, "extra attempts after a failed backend call, inside the deadline"),
    Setting("INFERENCE_MAX_INFLIGHT", 3, positive, "backend calls at once per process; more answer 503 at once"),
    Setting("INFERENCE_MAX_RESPONSE", 4 * 1024 * 1024, byte_size, "largest backend answer read, in bytes"),
    Setting("BREAKER_FAILURES", 3, positive, "failed backend calls in a row that open the circuit breaker"),
    Setting("BREAKER_COOLDOWN", 15.0, seconds, "seconds an open breaker answers 503 without calling the backend"),
)


def defaults():
    """{name: default} of every setting."""
    return {s.name: s.default for s in SETTINGS}


def current(environ=None):
    """Every setting: its default, overridden by the environment; ConfigError on a bad value."""
    return {**defaults(), **from_environ(environ)}


def from_environ(environ=None):
    """{name: parsed value} of the settings set (non-empty) in the environment; ConfigError on a bad value."""
    environ = os.environ if environ is None else environ
    values = {}
    for setting in SETTINGS:
        raw = environ.get(setting.name)
        if raw is None or raw == "":
            continue
        try:
            values[setting.name] = setting.parse(raw)
        except ValueError as exc:
            shown = (raw if len(raw) <= 40 else f"{raw[:20]}...({len(raw)} characters)") \
                if setting.name not in ("SECRET_KEY", "REVIEW_CREDENTIALS") else "..."
            raise ConfigError(f"setting {setting.name}={shown!r}: {exc}") from None
    return values


def markdown_table():
    """The settings as the README's configuration table."""
    lines = ["| setting | default | what |", "|---|---|---|"]
    for s in SETTINGS:
        default = s.default
        if isinstance(default, str) and str(REPO) in default:  # paths in the repository, as a clone anywhere says
            default = default.replace(str(REPO) + os.sep, "")
        elif isinstance(default, list):
            default = ",".join(map(str, default)) or None
        lines.append(f"| `{s.name}` | {'' if default is None else f'`{default}`'} | {s.help} |")
    return "\n".join(lines)


if __name__ == "__main__":
    try:
        print(markdown_table(), flush=True)
    except BrokenPipeError:  # piped into head: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), 1)
