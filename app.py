"""Flask web app: upload an image, get the CIFAR-10 class with calibrated top-3 probabilities.

    flask --app app run                     # development server
    python app.py --host 127.0.0.1 --port 5000

The app itself lives in cifarlab/web (factory, pages, API, errors); production serving: python -m cifarlab.web.serve.
"""
import argparse
import logging
import sys

from cifarlab.modelfile import ModelFileError
from cifarlab.web.factory import create_app
from cifarlab.web.settings import ConfigError

__all__ = ["create_app", "main"]  # gunicorn and flask find the factory here: app:create_app()


def main(argv=None):
    """Development server; exit code 2 with one line on a bad setting or model file."""
    parser = argparse.ArgumentParser(description="Serve the CIFAR-10 classifier (development server).")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=5000)
    parser.add_argument("--debug", action="store_true", help="Flask debug mode (never in production)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        app = create_app()
    except (ModelFileError, ConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    app.run(host=args.host, port=args.port, debug=args.debug)
    return 0


if __name__ == "__main__":
    sys.exit(main())
