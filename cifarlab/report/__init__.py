"""Evaluation of a trained model: metrics and calibration, the model card, its plots."""
