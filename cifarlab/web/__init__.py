"""The web layer: app factory, pages, JSON API, error answers, uploads, settings and the production launcher.

Imports neither TensorFlow nor matplotlib: a local Keras model is loaded lazily by cifarlab.inference.
"""
