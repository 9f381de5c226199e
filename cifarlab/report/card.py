"""Evaluate a saved model: calibrate on the validation split, report on the test split, write the card."""
from pathlib import Path

import numpy as np

from . import metrics, plots
from .. import atomic, modelfile, ood, outliers, sidecar
from ..inference import Classifier, calibrate, softmax
from ..progress import Progress

MISTAKES_SHOWN = 24  # images in the most-confident-mistakes grid


def evaluate(model_path, data):
    """Fit the temperature on the held-out validation split, evaluate on test, update sidecar and card."""
    classifier = Classifier.from_path(model_path)
    meta = classifier.meta
    names = classifier.class_names
    if list(data.class_names) != names:
        raise ValueError(f"dataset classes {data.class_names} differ from the model's {names}")
    _, val = data.split_validation(int(meta.get("val_images", 0)), seed=int(meta.get("seed", 0)))
    test_logits = logits_in_batches(classifier, data.x_test, label="evaluate: test split")
    test_raw = softmax(test_logits)
    detector = None
    if val is not None:
        val_logits = logits_in_batches(classifier, val[0], label="evaluate: validation split")
        val_raw = softmax(val_logits)
        temperature = metrics.fit_temperature(val_raw, val[1])
        threshold = metrics.unsure_threshold(calibrate(val_raw, temperature), val[1])
        detector = fit_detector(classifier, val_logits, temperature)
    else:  # nothing held out: no honest way to calibrate
        temperature, threshold = 1.0, 0.5
    test_cal = calibrate(test_raw, temperature)
    y = data.y_test
    report = metrics.classification_report(y, test_cal, names)
    report.update({
        "nll_before": metrics.negative_log_likelihood(test_raw, y),
        "nll_after": metrics.negative_log_likelihood(test_cal, y),
        "ece_before": metrics.expected_calibration_error(test_raw, y),
        "ece_after": metrics.expected_calibration_error(test_cal, y),
        "data_source": data.source,
    })
    calibration = {"temperature": temperature, "fitted_on": f"{0 if val is None else len(val[0])} "
                   "validation images held out from training", "unsure_threshold": threshold,
                   "unsure_rule": f"calibrated top probability below this; at or above it, >= "
                                  f"{metrics.UNSURE_PRECISION:.0%} of validation predictions are right"}
    if detector is not None:
        meta = {**meta, "ood": {**detector, **test_rates(test_logits, detector, temperature, threshold)}}
    meta = sidecar.with_evaluation(meta, calibration, report)
    atomic.write_json(modelfile.sidecar_path(model_path), meta)

    paths = modelfile.artefact_paths(model_path)
    plots.confusion_matrix(report["confusion_matrix"], names, paths["confusion"])
    plots.reliability_diagram([
        ("raw", metrics.reliability_bins(test_raw, y), report["ece_before"]),
        (f"temperature {temperature:.2f}", metrics.reliability_bins(test_cal, y), report["ece_after"]),
    ], paths["reliability"])
    wrong = np.flatnonzero(test_cal.argmax(1) != y)
    worst = wrong[np.argsort(-test_cal[wrong].max(1))][:MISTAKES_SHOWN]
    plots.mistakes_grid(data.x_test[worst], [names[i] for i in y[worst]], [names[i] for i in test_cal[worst].argmax(1)],
                        test_cal[worst].max(1), paths["mistakes"])
    Path(paths["card"]).write_text(model_card(meta, paths))
    return meta


def logits_in_batches(classifier, x, batch=500, label=None):
    """Logits for many images; progress lines under label when given."""
    progress = Progress(label, len(x)) if label else None
    parts = []
    for i in range(0, len(x), batch):
        parts.append(classifier.logits(x[i:i + batch]))
        if progress:
            progress.update(len(parts[-1]))
    return np.concatenate(parts)


def test_rates(test_logits, detector, temperature, unsure_threshold):
    """Fractions of the test split a fitted detector marks unknown, and unknown or unsure."""
    fitted = ood.Detector(detector["score"], detector["threshold"])
    unknown = fitted.unknown(fitted.scores(test_logits, temperature))
    unsure = softmax(test_logits / temperature).max(1) < unsure_threshold
    return {"test_unknown_rate": float(unknown.mean()), "test_flagged_rate": float((unknown | unsure).mean())}


def fit_detector(classifier, val_logits, temperature, outliers_per_family=200):
    """The sidecar's ood section: the score (of ood.SCORES) that best tells validation images from held-out generated
    outliers (outliers.FIT_SEED, never trained on), and its threshold by the stated rule."""
    fit_logits = logits_in_batches(classifier, outliers.mixed(outliers_per_family * len(outliers.FAMILIES),
                                                              outliers.FIT_SEED), label="detector: generated outliers")
    measured = {name: ood.auroc(score(fit_logits, temperature), score(val_logits, temperature))
                for name, score in ood.SCORES.items()}
    best = max(measured, key=measured.get)
    threshold = ood.fit_threshold(ood.SCORES[best](val_logits, temperature))
    return {"score": best, "threshold": threshold,
            "rule": f"unknown when ood_score > the {ood.UNKNOWN_QUANTILE:.0%} quantile of the validation images' "
                    f"scores ({1 - ood.UNKNOWN_QUANTILE:.0%} of them are unknown)",
            "fitted_on": f"{len(val_logits)} validation images and {len(fit_logits)} held-out generated outliers "
                         f"(cifarlab.outliers, seed {outliers.FIT_SEED})",
            "fit_auroc": {name: round(value, 4) for name, value in measured.items()},
            "fit_outliers_unknown_rate": float((ood.SCORES[best](fit_logits, temperature) > threshold).mean())}


def model_card(meta, paths):
    """The Markdown model card."""
    ev, cal, hp = meta["evaluation"], meta["calibration"], meta["hyperparameters"]
    jpeg = "jpeg" in meta["data_source"].lower()
    rows = "\n".join(f"| {name} | {m['precision']:.3f} | {m['recall']:.3f} | {m['f1']:.3f} | {m['support']} |"
                     for name, m in ev["per_class"].items())
    name = lambda key: Path(paths[key]).name  # noqa: E731
    return f"""# Model card: {sidecar.display_name(meta)} (run {meta['name']})

A Keras CNN that classifies 32×32 RGB images into {len(meta['class_names'])} classes: {', '.join(meta['class_names'])}.
Input: raw RGB pixels 0..255, shape (N, 32, 32, 3) (rescaling{', test-time augmentation' if hp.get('tta_level') else ''} inside the model).
Output: softmax probabilities; the app divides their logarithms by the temperature {cal['temperature']:.3f} (see Calibration).

## Data
- Source: `{meta['data_source']}`{' — the CIFAR-10 images saved as JPEG at quality 75, so every accuracy here is on that JPEG copy of the CIFAR-10 test set' if jpeg else ''}.
- {meta['train_images']:,} training images, {meta['val_images']:,} held out for validation (temperature and the "unsure" threshold), {meta['test_images']:,} test images (touched only for this report).

## Training
- Command: `{meta['command']}`
- Recipe `{meta['arch']}`: {', '.join(f'{k}={v}' for k, v in hp.items())}
- Hardware: {meta['device']}; precision {meta['precision']}; Keras {meta['keras']} ({meta['backend']}).
- Time (wall clock, evaluation excluded): {sidecar.training_time(meta)}; {meta['parameters']:,} parameters.

## Test metrics ({ev['images']:,} images)
| metric | value |
|---|---:|
| accuracy | {ev['accuracy']:.2%} |
| top-2 accuracy | {ev['top2_accuracy']:.2%} |
| top-3 accuracy | {ev['top3_accuracy']:.2%} |
| macro precision / recall / F1 | {ev['macro_precision']:.3f} / {ev['macro_recall']:.3f} / {ev['macro_f1']:.3f} |
| NLL before → after temperature | {ev['nll_before']:.3f} → {ev['nll_after']:.3f} |
| ECE ({metrics.ECE_BINS} bins) before → after temperature | {ev['ece_before']:.4f} → {ev['ece_after']:.4f} |

| class | precision | recall | F1 | support |
|---|---:|---:|---:|---:|
{rows}

![confusion matrix]({name('confusion')})
![reliability diagram]({name('reliability')})
![training curves]({name('curves')})
![most confident mistakes]({name('mistakes')})

## Calibration
Temperature {cal['temperature']:.3f}, fitted by minimising the negative log-likelihood on {cal['fitted_on']}.
The app flags a prediction as unsure when the calibrated top probability is below {cal['unsure_threshold']:.2f}.

{feedback_section(meta)}{ood_section(meta)}{robustness_section(meta)}## Known limits
- Sees only 32×32 pixels: any upload is shrunk (and squashed to a square), so small objects and fine detail are lost.
- Knows only these {len(meta['class_names'])} classes. Anything else (a person, a cartoon, a blank image) gets
  probabilities over them all the same; the "unknown" verdict catches much of it, not all (see above).
- Trained on CIFAR-10 photos: other styles (drawings, screenshots, unusual viewpoints) are out of distribution.

Generated by `python train.py evaluate --model <this .h5> --data <dataset>` (also run at the end of training).
"""


def feedback_section(meta):
    """The model card's section on a fine-tune from users' feedback (empty for other runs)."""
    fb = meta.get("feedback")
    if not fb:
        return ""
    rows = [f"| {name} | {fb['accuracy'][name]:.2%} | {fb['init_accuracy'][name]:.2%} |" for name in fb["accuracy"]]
    verdict = ("Publishable: not worse than the model it started from on either set." if fb["publishable"] else
               f"**Not publishable**: worse than the model it started from on {' and '.join(fb['worse_on'])}; "
               "`train.py models publish` refuses it.")
    held = "" if "feedback" in fb["accuracy"] else " (too few corrections to hold any out: judged on the test split alone)"
    return "\n".join([
        "## Fine-tuned on users' feedback",
        f"From `{fb['init']}` on the dataset plus `{fb['export']}`: {fb['corrections']} corrections (each counted "
        f"{fb['weight']} times), {fb['outliers']} \"none of these\" images as outliers, {fb['held_out']} corrections held "
        f"out{held}.", "",
        "| set | this model | the model it started from |", "|---|---:|---:|", *rows, "", verdict]) + "\n\n"


def ood_section(meta):
    """The model card's out-of-distribution section (empty for a model without a fitted detector)."""
    fitted = meta.get("ood")
    if not fitted:
        return ""
    lines = ["## Out of distribution",
             f"Score `{fitted['score']}` (chosen by AUROC on {fitted['fitted_on']}: "
             + ", ".join(f"{k} {v:.3f}" for k, v in fitted["fit_auroc"].items()) + f"); threshold "
             f"{fitted['threshold']:.4f}: {fitted['rule']}. On the test split it marks "
             f"{fitted['test_unknown_rate']:.1%} of the images unknown and {fitted['test_flagged_rate']:.1%} unknown or "
             f"unsure; {fitted['fit_outliers_unknown_rate']:.1%} of the held-out generated outliers are unknown."]
    bench = meta.get("ood_benchmark")
    if bench:
        lines += ["", f"`{bench['command']}` ({bench['date']}):", "",
                  "| set | max-softmax AUROC | FPR95 | flagged | shipped AUROC | FPR95 | flagged |",
                  "|---|---:|---:|---:|---:|---:|---:|"]
        pct = lambda v: "–" if v is None else f"{v:.1%}"  # noqa: E731  (None: not measured for that set)
        lines += [f"| {r['set']} | {r['baseline_auroc']:.3f} | {r['baseline_fpr95']:.1%} | {pct(r['baseline_flagged'])} "
                  f"| {r['auroc']:.3f} | {r['fpr95']:.1%} | {pct(r['flagged'])} |" for r in bench["rows"]]
    if bench and bench.get("corruptions"):
        lines += ["", "Mild corruptions (CIFAR-10-C severity 1), where right answers should stay known:", "",
                  "| corruption | accuracy | unknown when right | flagged when right |", "|---|---:|---:|---:|"]
        lines += [f"| {m['corruption']} | {m['accuracy']:.1%} | {m['unknown_when_right']:.1%} | "
                  f"{m['flagged_when_right']:.1%} |" for m in bench["corruptions"]]
    return "\n".join(lines) + "\n\n"


def robustness_tables(bench):
    """Markdown lines of a bench_robustness result: the summary, then accuracy per corruption and severity."""
    s = bench["summary"]
    pct = lambda v: "–" if v is None else f"{v:.1%}"  # noqa: E731  (None: that kind of corruption was not run)
    lines = ["| | clean | corrupted (15 x 5) | held out (4 x 5) |", "|---|---:|---:|---:|",
             f"| accuracy | {pct(s['clean_accuracy'])} | {pct(s['mean_corrupted_accuracy'])} | {pct(s['held_out_accuracy'])} |",
             f"| ECE | {pct(s['clean_ece'])} | {pct(s['corrupted_ece'])} | |",
             f"| unsure | {pct(s['clean_unsure'])} | {pct(s['corrupted_unsure'])} | |",
             f"| unknown | {pct(s['clean_unknown'])} | {pct(s['corrupted_unknown'])} | |", "",
             "| corruption | s1 | s2 | s3 | s4 | s5 | mean |", "|---|---:|---:|---:|---:|---:|---:|"]
    for r in bench["rows"]:
        accuracies = [v["accuracy"] for v in r["severities"]]
        lines.append(f"| {r['corruption']}{' (held out)' if r['held_out'] else ''} | "
                     + " | ".join(map(pct, accuracies)) + f" | {pct(float(np.mean(accuracies)))} |")
    if s["worst"]:
        lines += ["", f"Worst: {s['worst']['corruption']} at severity {s['worst']['severity']}: "
                      f"{s['worst']['accuracy']:.1%}"]
    return lines


def robustness_section(meta):
    """The model card's corruption-robustness section (empty until benchmarks/bench_robustness.py --write ran)."""
    bench = meta.get("robustness")
    if not bench:
        return ""
    lines = ["## Robustness to corruptions",
             f"`{bench['command']}` ({bench['date']}): {bench['images']:,} test images drawn at random under CIFAR-10-C's "
             f"corruptions (its CIFAR parameters, severities 1-5; `cifarlab/corruptions.py` says where it differs).", "",
             *robustness_tables(bench)]
    return "\n".join(lines) + "\n\n"


def rewrite_card(model_path, meta):
    """Write the card beside an evaluated .h5 again from its sidecar (after a benchmark's --write added a table)."""
    if str(model_path).endswith(".h5") and meta.get("evaluation"):
        paths = modelfile.artefact_paths(model_path)
        text = model_card(meta, paths)
        atomic.replace_atomically(paths["card"], lambda tmp: Path(tmp).write_text(text))


def save_curves(model_path, meta):
    """The training curves beside a model, drawn from its sidecar's per-epoch history (none: nothing to draw)."""
    if meta.get("history"):
        plots.training_curves(meta["history"], modelfile.artefact_paths(model_path)["curves"],
                              f"{sidecar.display_name(meta)}: test accuracy {meta['test_accuracy']:.2%}\n"
                              f"{sidecar.training_time(meta)}")


def print_summary(meta):
    """Print the evaluation summary of a sidecar: headline metrics, calibration, per-class table."""
    ev, cal = meta["evaluation"], meta["calibration"]
    print(f"Evaluation on {ev['images']:,} test images of {ev['data_source']}:")
    print(f"  accuracy {ev['accuracy']:.4f}  top-2 {ev['top2_accuracy']:.4f}  top-3 {ev['top3_accuracy']:.4f}  "
          f"macro F1 {ev['macro_f1']:.4f}")
    print(f"  temperature {cal['temperature']:.3f} ({cal['fitted_on']}); ECE {ev['ece_before']:.4f} -> "
          f"{ev['ece_after']:.4f}; NLL {ev['nll_before']:.4f} -> {ev['nll_after']:.4f}; "
          f"unsure below {cal['unsure_threshold']:.2f}")
    print(f"  {'class':<12}{'precision':>10}{'recall':>10}{'f1':>10}{'support':>9}")
    for name, m in ev["per_class"].items():
        print(f"  {name:<12}{m['precision']:>10.4f}{m['recall']:>10.4f}{m['f1']:>10.4f}{m['support']:>9}")
