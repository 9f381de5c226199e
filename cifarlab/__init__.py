"""Shared code for the CIFAR-10 classifier: images, checkpoints, inference; `ml`, `report` and `web` build on them."""
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent  # the repository root: model/, templates/, static/, uploads/
