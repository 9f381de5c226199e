"""The contract of a saved Keras model file, in one place; inference, export, Grad-CAM and training read models here.

Every model maps raw 0..255 RGB pixels (N, H, W, 3) to class probabilities. A model with test-time views makes
views VIEW0, VIEW1, ... of its input (view0 the identity), runs its backbone (a nested model, logits out) on each,
and ends in the softmax PROBABILITIES over the MEAN of their logits. Any other model (the baseline, the transfer net)
is its own single-view network ending in a softmax: its logits are its log-probabilities, up to a constant.
Each training run records describe(model) in the sidecar as `model_file`. Imports no TensorFlow.
"""
import numpy as np

PROBABILITIES = "probabilities"  # the final softmax of a model with test-time views
MEAN = "tta_mean"  # the weighted mean of its views' logits (the softmax's input)
VIEW = "view{}"  # its view layers, in view order


def log_probabilities(probs, dtype=np.float32):
    """log(p), clipped at 1e-12: logits up to a constant, for files that output probabilities."""
    return np.log(np.clip(np.asarray(probs, np.float64), 1e-12, 1.0)).astype(dtype)


def views(model):
    """[(mirror, dx, dy, weight)] of a model's test-time views in view order; [] for a single-view model."""
    names = {layer.name for layer in model.layers}
    view_layers = [model.get_layer(VIEW.format(i)) for i in range(len(names)) if VIEW.format(i) in names]
    if not view_layers:
        return []
    weights = model.get_layer(MEAN).view_weights if len(view_layers) > 1 else [1.0]
    return [(view.mirror, view.dx, view.dy, weight) for view, weight in zip(view_layers, weights)]


def backbone(model):
    """The single-view network of a model: the nested one of a model with views (logits out), else the model."""
    if not views(model):
        return model
    import keras

    return next(layer for layer in model.layers if isinstance(layer, keras.Model))


def ends_in_softmax(network):
    """True when the network's last layer applies a softmax (the baseline, any full model), False for logits."""
    activation = getattr(network.layers[-1], "activation", None)
    return getattr(activation, "__name__", "") == "softmax"


def logits_model(model):
    """(network, to_logits): the model up to its logits, and what turns that network's output into logits."""
    if not views(model):
        return model, log_probabilities
    import keras

    return keras.Model(model.inputs[0], model.get_layer(PROBABILITIES).input), np.asarray


def symbolic_logits(model, inputs):
    """The model's logits on symbolic Keras inputs (to build a model on top of them, e.g. a calibrated softmax)."""
    import keras

    network, _ = logits_model(model)
    outputs = network(inputs)
    return outputs if network is not model else keras.ops.log(keras.ops.maximum(outputs, 1e-12))


def describe(model):
    """The sidecar's `model_file` record: what the file outputs, where its logits are, its backbone and views."""
    parts = views(model)
    return {"output": "probabilities (softmax), from raw 0..255 RGB pixels",
            "logits": f"input of layer '{PROBABILITIES}' (mean of the views' logits)" if parts
                      else "log of the output, up to a constant",
            "backbone": backbone(model).name if parts else None,
            "views": len(parts) or 1}
