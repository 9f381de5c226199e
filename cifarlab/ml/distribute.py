"""tf.distribute for train.py: which strategy, how many replicas, which process writes the files."""
import contextlib
import hashlib
import json
import os

from .. import quiet
from ..errors import CifarlabError

STRATEGIES = ("auto", "mirrored", "multiworker")


class StrategyError(CifarlabError, ValueError):
    """A --strategy that cannot run here; the message says why."""


def make_strategy(name):
    """The tf.distribute strategy for --strategy NAME, or None for Keras' default single device.

    auto: multiworker when TF_CONFIG is set, mirrored on several local GPUs, else one device.
    Must run before TensorFlow executes anything (collective ops are configured at start-up).
    """
    quiet.tensorflow()
    import keras

    if keras.backend.backend() != "tensorflow":
        if name == "auto":
            return None
        raise StrategyError(f"--strategy {name} uses tf.distribute and needs KERAS_BACKEND=tensorflow.")
    tf = quiet.tensorflow()

    if name == "auto":
        if os.environ.get("TF_CONFIG"):
            name = "multiworker"
        elif len(tf.config.list_physical_devices("GPU")) > 1:
            name = "mirrored"
        else:
            return None
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    check_tf_config(os.environ.get("TF_CONFIG"))
    return tf.distribute.MultiWorkerMirroredStrategy()


def check_tf_config(text):
    """Raise StrategyError unless TF_CONFIG names a cluster and this process's task in it."""
    if not text:
        raise StrategyError("--strategy multiworker reads the cluster from TF_CONFIG, which is not set "
                            "(see docs/deployment.md, 'Scaling out').")
    try:
        config = json.loads(text)
        task = config["task"]
        members = config["cluster"][task["type"]]
        if not 0 <= int(task["index"]) < len(members):
            raise IndexError(task["index"])
    except (ValueError, KeyError, TypeError, IndexError) as exc:
        raise StrategyError(f"TF_CONFIG must look like {{\"cluster\": {{\"worker\": [\"host:port\", ...]}}, "
                            f"\"task\": {{\"type\": \"worker\", \"index\": 0}}}} ({type(exc).__name__}: {exc}).") from None


def replicas(strategy):
    """Replicas that each take one slice of every global batch."""
    return strategy.num_replicas_in_sync if strategy else 1


def describe(strategy):
    """The strategy's name in tf.distribute (whose MultiWorkerMirroredStrategy class has another name)."""
    if strategy is None:
        return "one device"
    tf = quiet.tensorflow()

    names = {tf.distribute.MultiWorkerMirroredStrategy: "MultiWorkerMirroredStrategy",
             tf.distribute.MirroredStrategy: "MirroredStrategy"}
    return next((name for cls, name in names.items() if isinstance(strategy, cls)), type(strategy).__name__)


def is_chief(strategy):
    """True for the one process that writes the model, sidecar and plots."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return True
    if resolver.task_type == "chief":
        return True
    return resolver.task_type == "worker" and resolver.task_id == 0 and "chief" not in resolver.cluster_spec().as_dict()


def scope(strategy):
    """strategy.scope(), or nothing to enter without a strategy."""
    return strategy.scope() if strategy else contextlib.nullcontext()


@contextlib.contextmanager
def multiworker_fit_fix(strategy):
    """Let Keras 3.15's fit and evaluate run under MultiWorkerMirroredStrategy (keras-team/keras#20585).

    Across processes, its TensorFlow trainer asks tf.distribute for two reductions it cannot do:
    a whole (x, y) batch, only to learn shapes before building (here: the local slice, same
    shapes, no communication), and a mean over axis 0 of scalar losses and metrics (here: the
    mean over replicas, axis None). Both swaps are undone on exit; other strategies are untouched.
    """
    if strategy is None:  # one device, whatever the backend: nothing to fix, and no TensorFlow needed
        yield
        return
    tf = quiet.tensorflow()

    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        yield
        return
    from keras import tree
    from keras.src.backend.tensorflow import trainer

    original_build, original_reduce = trainer.TensorFlowTrainer._maybe_symbolic_build, trainer.reduce_per_replica
    distributed = tf.distribute.DistributedValues

    def build_from_local_slice(model, iterator=None, data_batch=None):
        if iterator is not None and data_batch is None:
            for _, _, batches in iterator:
                data_batch = tree.map_structure(
                    lambda v: strategy.experimental_local_results(v)[0] if isinstance(v, distributed) else v,
                    next(batches))
                break
        return original_build(model, data_batch=data_batch)

    def reduce_scalars_over_replicas(values, strategy, reduction):
        def reduce(v):
            local = strategy.experimental_local_results(v)[0] if isinstance(v, distributed) else v
            if reduction in ("auto", "mean") and getattr(local, "shape", None) is not None and local.shape.rank == 0:
                return strategy.reduce("MEAN", v, axis=None)
            return original_reduce(v, strategy, reduction)
        return tree.map_structure(reduce, values)

    trainer.TensorFlowTrainer._maybe_symbolic_build = build_from_local_slice
    trainer.reduce_per_replica = reduce_scalars_over_replicas
    try:
        yield
    finally:
        trainer.TensorFlowTrainer._maybe_symbolic_build = original_build
        trainer.reduce_per_replica = original_reduce


def weights_digest(model):
    """SHA-256 over every weight array of the model, in order (equal digests: equal weights)."""
    digest = hashlib.sha256()
    for w in model.get_weights():
        digest.update(w.tobytes())
    return digest.hexdigest()
