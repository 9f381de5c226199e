"""Shared code for the CIFAR-10 classifier: data, images, models, inference."""
