"""The explain worker of `make serve`: one process per server computes every Grad-CAM heatmap, one at a time, on a
Unix socket (EXPLAIN_SOCKET), so that the web workers stay TensorFlow-free and explanations cannot exhaust memory:
at most EXPLAIN_QUEUE wait (more are answered "busy", a 503), and its address space is capped at its size after
warm-up plus EXPLAIN_MEMORY.

    EXPLAIN_SOCKET=/run/dir/explain.sock python -m cifarlab.web.explain_worker
"""
import logging
import queue
import sys
import threading
from multiprocessing.connection import Listener

from .. import memory, modeldir, modelfile
from . import settings
from .explain import Explanations, explainable

log = logging.getLogger("cifarlab.explain")


def accept(listener, waiting):
    """Queue each connection; answer "busy" at once when EXPLAIN_QUEUE are already waiting."""
    while True:
        try:
            conn = listener.accept()
        except OSError:
            return
        try:
            waiting.put_nowait(conn)
        except queue.Full:
            with conn:
                try:
                    if conn.poll(1.0):  # read the request first: the client must not find the pipe shut mid-send
                        conn.recv()
                    conn.send(("busy", "Too many explanations are being computed right now; try again in a few "
                                       "seconds."))
                except (EOFError, OSError):
                    continue


def serve(explanations, listener, queue_size):
    """Answer queued requests one at a time, forever: ("ok", PNG data URI) or ("error", message)."""
    waiting = queue.Queue(maxsize=queue_size)
    threading.Thread(target=accept, args=(listener, waiting), name="explain-accept", daemon=True).start()
    while True:
        conn = waiting.get()
        with conn:
            try:
                pixels, index = conn.recv()
                conn.send(("ok", explanations.overlay(pixels, index)))
            except (EOFError, OSError):  # the web worker gave up waiting
                continue
            except Exception:  # noqa: BLE001  one request's failure must not stop the server's only explainer
                log.exception("explanation failed")
                conn.send(("error", "The explanation could not be computed."))


def main():
    config = settings.current()
    logging.basicConfig(level=config["LOG_LEVEL"].upper(),
                        format="[%(asctime)s] [%(process)d] [%(levelname)s] %(name)s: %(message)s")
    try:
        path = modeldir.first_model_path(config)
        source = explainable(config, modelfile.preflight(path), path)
    except modelfile.ModelFileError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if source is None or not config["EXPLAIN_SOCKET"]:
        log.warning("explain worker: nothing to do (no explainable model, or EXPLAIN_SOCKET unset)")
        return 0
    explanations = Explanations(model_path=source)
    explanations.warm_up()
    memory.limit_address_space(config["EXPLAIN_MEMORY"])
    with Listener(config["EXPLAIN_SOCKET"], family="AF_UNIX", backlog=64) as listener:
        log.info("explanations ready on %s", config["EXPLAIN_SOCKET"])
        serve(explanations, listener, config["EXPLAIN_QUEUE"])


if __name__ == "__main__":
    sys.exit(main())
