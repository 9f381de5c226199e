"""The full start-up check behind `make serve` and gunicorn: build the app as a worker would (model loaded and checked
against its sidecar, upload folder writable, every setting), in a child process so that the launcher never holds
TensorFlow before its workers fork. One line on stderr and exit 2 when the app could not start.

    python -m cifarlab.web.preflight        # the same environment as the server
"""
import sys

from . import settings
from ..modelfile import ModelFileError
from .context import parts


def main():
    from .factory import create_app

    try:
        app = create_app({"GRADCAM_PRELOAD": False})
    except (settings.ConfigError, ModelFileError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    unloadable = parts(app).models.unloadable()  # a worker boots without them; a first start refuses
    if unloadable:
        print(f"error: {unloadable[0]}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
