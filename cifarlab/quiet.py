"""TensorFlow without the start-up lines a CPU-only user reads as failure; anything else it prints still shows."""
import contextlib
import functools
import importlib.util
import logging
import os
import re
import sys
import tempfile
import threading

_REDIRECTING = threading.RLock()  # file descriptor 2 is the process's: one capture at a time, whichever thread asks

# what TensorFlow prints at import and device set-up on a machine without CUDA: none of it asks the user to act
STARTUP_NOISE = re.compile(
    r"absl::InitializeLog|cudart_stub|cuda_platform|cuInit|cuda_executor|Unable to register cu(DNN|FFT|BLAS)"
    r"|computation_placer|TF-TRT Warning|oneDNN custom operations|TF_ENABLE_ONEDNN_OPTS"
    r"|This TensorFlow binary is optimized|rebuild TensorFlow with the appropriate compiler flags"
    r"|Could not find cuda drivers")
# LiteRT's announcement of its default CPU delegate, once per process; it asks nothing of the user
LITERT_NOISE = re.compile(r"Created TensorFlow Lite XNNPACK delegate for CPU")
# Keras's advice to leave .h5; the design card fixes .h5 as the saved format (README, "Model files")
LEGACY_H5 = "This file format is considered legacy"


@contextlib.contextmanager
def filtered_stderr(noise=STARTUP_NOISE):
    """Capture file descriptor 2 (C++ logging writes there, not to sys.stderr) and replay the lines noise misses."""
    with _REDIRECTING, _captured_stderr(noise):
        yield


@contextlib.contextmanager
def _captured_stderr(noise):
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            kept = [line for line in captured.read().decode(errors="replace").splitlines(keepends=True)
                    if not noise.search(line)]
            if kept:
                os.write(2, "".join(kept).encode())


class DropMessage(logging.Filter):
    """A logging filter that drops records containing one phrase."""

    def __init__(self, phrase):
        super().__init__()
        self.phrase = phrase

    def filter(self, record):
        return self.phrase not in record.getMessage()


@functools.cache
def tensorflow():
    """The tensorflow module, imported and its devices listed once per process with the start-up noise filtered.

    None where TensorFlow is not installed (Keras on JAX, a LiteRT-only serving worker).
    """
    if importlib.util.find_spec("tensorflow") is None:
        return None
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TF's own INFO/WARNING lines off unless the user asks
    with filtered_stderr():
        import tensorflow as tf

        tf.config.list_physical_devices()  # CUDA probing happens here, once; later calls are silent
    logging.getLogger("absl").addFilter(DropMessage(LEGACY_H5))
    return tf
