"""Training: data loading, presets, Keras models, the training loop, multi-worker runs, exports, Grad-CAM."""
