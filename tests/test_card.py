import json
import re

from cifarlab import modelfile, REPO
from cifarlab.report import card

SHIPPED = REPO / "model" / "cifar10_cnn.h5"


def test_the_card_states_the_sidecar_figures_and_links_its_plots():
    meta = json.loads(modelfile.sidecar_path(SHIPPED).read_text())
    text = card.model_card(meta, modelfile.artefact_paths(SHIPPED))
    ev = meta["evaluation"]
    assert f"| accuracy | {ev['accuracy']:.2%} |" in text
    assert f"Temperature {meta['calibration']['temperature']:.3f}" in text
    assert "JPEG copy of the CIFAR-10 test set" in text  # the shipped model is trained and tested on the JPEG copy
    assert all(f"| {name} | {m['precision']:.3f} |" in text for name, m in ev["per_class"].items())
    assert re.findall(r"\]\((\w+)_(\w+)\.png\)", text) == [("cifar10_cnn", k) for k in
                                                           ("confusion", "reliability", "curves", "mistakes")]
    assert f"`{meta['command']}`" in text


def test_the_committed_card_is_the_one_the_sidecar_renders():
    meta = json.loads(modelfile.sidecar_path(SHIPPED).read_text())
    committed = open(modelfile.artefact_paths(SHIPPED)["card"]).read()
    assert committed == card.model_card(meta, modelfile.artefact_paths(SHIPPED))


def test_the_card_shows_the_ood_benchmark_with_its_mild_corruptions():
    meta = json.loads(modelfile.sidecar_path(SHIPPED).read_text())
    text = card.model_card(meta, modelfile.artefact_paths(SHIPPED))
    bench = meta["ood_benchmark"]
    assert f"`{bench['command']}`" in text
    assert all(f"| {r['set']} | {r['baseline_auroc']:.3f} |" in text for r in bench["rows"])
    assert all(f"| {m['corruption']} | {m['accuracy']:.1%} | {m['unknown_when_right']:.1%} |" in text
               for m in bench["corruptions"])
