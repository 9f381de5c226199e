"""Out-of-distribution benchmark: the max-softmax baseline against the served detector, side by side.

    .venv/bin/python benchmarks/bench_ood.py --model model/cifar10_cnn_int8.tflite \
        --data ../shared/data/cifar10-jpeg.tar.gz [--open-set] [--posthoc model/cifar10_cnn.h5] [--write]

Sets, each against the CIFAR-10 test split as the in-distribution side:
  far-OOD families: cifarlab.outliers at BENCH_SEED (never used in training or fitting), each family and all;
  open set (--open-set): a small fast net trained on 6 classes, the other 4 unknown, for several class splits, then
    fine-tuned plainly (max softmax) and as the served model is (outlier exposure, AugMix; energy);
  mild corruptions: CIFAR-10-C's severity 1 (cifarlab.corruptions); flagged should stay low where the model is right;
  post-hoc scores (--posthoc MODEL.h5): max softmax, max logit, energy, KNN, Mahalanobis and ViM on that model's
    penultimate features, on the far-OOD families: how the served detector was chosen.
Baseline: score 1 - top calibrated probability, flagged = the "unsure" rule. Shipped: the sidecar's detector, flagged =
unknown or unsure. --write stores the table in the model's sidecar (the card and /model show it).
"""
import argparse
import datetime
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

from cifarlab import atomic, corruptions, modelfile, ood, outliers  # noqa: E402
from cifarlab.inference import Classifier  # noqa: E402
from cifarlab.report import card  # noqa: E402

CORRUPTED = 1000  # test images per corruption, drawn at random (Dataset.test_sample)
OPEN_SET_SPLITS = ((0, 1, 2, 3, 4, 5), (4, 5, 6, 7, 8, 9), (0, 2, 4, 6, 8, 9))  # known classes of each split


class Verdicts:
    """Baseline and shipped scores and flags of the served predictions (Classifier.predict) of a set of images."""

    def __init__(self, predictions):
        self.predictions = predictions
        self.predicted = np.array([p.index for p in predictions])
        self.unsure = np.array([p.unsure for p in predictions])
        self.baseline = np.array([1.0 - p.confidence for p in predictions])  # max softmax (ood.msp_score)
        self.score = np.array([p.ood_score for p in predictions])
        self.unknown = np.array([p.unknown for p in predictions])

    @classmethod
    def of(cls, classifier, x, batch=500):
        return cls([p for i in range(0, len(x), batch) for p in classifier.predict(x[i:i + batch])])

    def __add__(self, other):
        return Verdicts(self.predictions + other.predictions)


def row(name, outlier, inlier):
    return {"set": name, "images": len(outlier.score),
            "baseline_auroc": ood.auroc(outlier.baseline, inlier.baseline),
            "baseline_fpr95": ood.fpr_at_95_tpr(outlier.baseline, inlier.baseline),
            "baseline_flagged": float(outlier.unsure.mean()),
            "auroc": ood.auroc(outlier.score, inlier.score), "fpr95": ood.fpr_at_95_tpr(outlier.score, inlier.score),
            "flagged": float((outlier.unknown | outlier.unsure).mean()), "unknown": float(outlier.unknown.mean())}


def open_set_net(hp, x, onehot, seed, weights=None):
    """A small fast net trained by recipe hp on (x, onehot), from weights when given (a fine-tune); its logits' net."""
    from cifarlab.ml import architectures, training
    import keras

    keras.utils.set_random_seed(seed)
    net, _ = architectures.of_recipe(hp).build(hp, onehot.shape[1], x)
    if weights is not None:
        net.set_weights(weights)
    bank = training.outlier_bank(x, hp.outlier_bank, seed, hp.outlier_families()) if hp.outlier_fraction else None
    batches = training.Batches(x, onehot, hp.batch_size, seed, augment=hp.augment, translate=hp.translate,
                               outliers=bank, outlier_fraction=hp.outlier_fraction, outlier_weight=hp.outlier_weight,
                               augmix=hp.augmix, augmix_severity=hp.augmix_severity)
    net.compile(optimizer=training.make_optimizer(hp, hp.epochs * len(batches)),
                loss=keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=hp.label_smoothing))
    net.fit(batches, epochs=hp.epochs, callbacks=[training.EpochData(batches)], verbose=0, shuffle=False)
    return net


def open_set_rows(data, epochs, fine_tune_epochs, seeds=(0,)):
    """Per split, the served pipeline in small: a fast net trained on 6 classes, then fine-tuned for the same epochs
    twice from its weights, plainly (max softmax: the baseline) and as the served model is (outlier exposure without
    the noise family, AugMix; its energy score); each split once per seed, then the mean of all."""
    from cifarlab.ml.presets import PRESETS

    widths = (32, 64, 64)  # a small net: minutes per split on a CPU
    plain = PRESETS["fast"].replace(epochs=epochs, widths=widths)
    fine_tune = PRESETS["fast_oe"].replace(epochs=fine_tune_epochs, widths=widths, outlier_fraction=0.0,
                                           outlier_bank=10000)
    served = fine_tune.replace(outlier_fraction=PRESETS["fast_oe"].outlier_fraction, outlier_exclude="noise",
                               augmix=0.5)
    rows = []
    for seed, known in ((seed, known) for seed in seeds for known in OPEN_SET_SPLITS):
        mask_train, mask_test = np.isin(data.y_train, known), np.isin(data.y_test, known)
        relabel = np.full(10, -1)
        relabel[list(known)] = np.arange(len(known))
        x = data.x_train[mask_train]
        onehot = np.eye(len(known), dtype=np.float32)[relabel[data.y_train[mask_train]]]
        weights = open_set_net(plain, x, onehot, seed).get_weights()
        scores = {}
        for side, hp, score in (("baseline", fine_tune, ood.msp_score), ("served", served, ood.energy_score)):
            net = open_set_net(hp, x, onehot, seed, weights)
            logits = np.concatenate([np.asarray(net(data.x_test[i:i + 500].astype(np.float32), training=False))
                                     for i in range(0, len(data.x_test), 500)])
            test_scores = score(logits)
            scores[side] = test_scores[~mask_test], test_scores[mask_test]
        (base_out, base_in), (oe_out, oe_in) = scores["baseline"], scores["served"]
        name = f"open set: known {''.join(map(str, known))}" + (f", seed {seed}" if len(seeds) > 1 else "")
        rows.append({"set": name, "images": int((~mask_test).sum()),
                     "baseline_auroc": ood.auroc(base_out, base_in), "baseline_fpr95": ood.fpr_at_95_tpr(base_out, base_in),
                     "baseline_flagged": None, "auroc": ood.auroc(oe_out, oe_in),
                     "fpr95": ood.fpr_at_95_tpr(oe_out, oe_in), "flagged": None, "unknown": None})
        print(f"  {rows[-1]['set']}: max softmax {rows[-1]['baseline_auroc']:.3f}, "
              f"outlier exposure + AugMix + energy {rows[-1]['auroc']:.3f}", flush=True)
    mean = {key: float(np.mean([r[key] for r in rows]))
            for key in ("baseline_auroc", "baseline_fpr95", "auroc", "fpr95")}
    return rows + [{**rows[0], **mean, "set": f"open set: mean of {len(rows)}",
                    "images": sum(r["images"] for r in rows)}]


def features_and_logits(model_path):
    """A function of uint8 images -> (penultimate features, logits) of a Keras model file, on one view (the backbone
    of a model with test-time views; a softmax-ending model's logits are its log-probabilities)."""
    import keras

    from cifarlab import modelfile

    model, _ = modelfile.load(model_path)
    network = modelfile.backbone(model)
    head = [layer for layer in network.layers if isinstance(layer, keras.layers.Dense)][-1]
    probe = keras.Model(network.inputs, [head.input, network.outputs[0]])
    softmax_out = not modelfile.views(model)

    def run(x, batch=500):
        feats, logits = zip(*(map(np.asarray, probe.predict_on_batch(x[i:i + batch].astype(np.float32)))
                              for i in range(0, len(x), batch)))
        logits = np.concatenate(logits).astype(np.float64)
        return np.concatenate(feats).astype(np.float64), np.log(np.maximum(logits, 1e-12)) if softmax_out else logits
    return run, head


def posthoc_scores(train_feats, train_logits, train_labels, head, k=50):
    """{name: score(features, logits)} of the post-hoc detectors compared, fitted on training features."""
    normed = train_feats / np.linalg.norm(train_feats, axis=1, keepdims=True)
    means = np.stack([train_feats[train_labels == c].mean(axis=0) for c in np.unique(train_labels)])
    centred = train_feats - means[train_labels]
    precision = np.linalg.pinv(centred.T @ centred / len(centred))
    weights, *bias = (np.asarray(w, np.float64) for w in head.get_weights())
    bias = bias[0] if bias else np.zeros(weights.shape[1])
    origin = -np.linalg.pinv(weights.T) @ bias  # ViM: the feature whose logits are all 0
    _, _, vt = np.linalg.svd(train_feats - origin, full_matrices=False)
    null_space = vt[train_feats.shape[1] // 2:].T  # ViM's residual: the directions past the top half of the spectrum

    def knn(feats, logits):  # Sun et al. 2022: distance to the k-th nearest normalised training feature
        f = feats / np.linalg.norm(feats, axis=1, keepdims=True)
        return np.concatenate([np.sort(2 - 2 * f[i:i + 500] @ normed.T, axis=1)[:, k - 1]
                               for i in range(0, len(f), 500)])

    def mahalanobis(feats, logits):  # Lee et al. 2018: to the nearest class mean, shared covariance
        return np.min([np.einsum("ij,jk,ik->i", feats - m, precision, feats - m) for m in means], axis=0)

    residual = lambda feats: np.linalg.norm((feats - origin) @ null_space, axis=1)  # noqa: E731
    alpha = train_logits.max(axis=1).mean() / residual(train_feats).mean()

    def vim(feats, logits):  # Wang et al. 2022: scaled residual against the logits' energy
        return alpha * residual(feats) + ood.energy_score(logits)
    return {"max softmax": lambda f, z: ood.msp_score(z), "max logit": lambda f, z: -z.max(axis=1),
            "energy": lambda f, z: ood.energy_score(z), "KNN (k=50)": knn, "Mahalanobis": mahalanobis, "ViM": vim}


def posthoc_rows(model_path, data, per_family, fit_images=10000):
    """AUROC and FPR95 of each post-hoc score on a Keras model file: the far-OOD families against the test split."""
    run, head = features_and_logits(model_path)
    pick = np.random.default_rng(0).permutation(len(data.x_train))[:fit_images]
    train_feats, train_logits = run(data.x_train[pick])
    scores = posthoc_scores(train_feats, train_logits, data.y_train[pick], head)
    inlier = run(data.x_test)
    families = {name: run(outliers.generate(name, per_family, outliers.BENCH_SEED)) for name in outliers.FAMILIES}
    everything = tuple(np.concatenate(parts) for parts in zip(*families.values()))
    rows = []
    for name, score in scores.items():
        s_in = score(*inlier)
        per = {family: ood.auroc(score(*out), s_in) for family, out in families.items()}
        s_out = score(*everything)
        rows.append({"score": name, "auroc": ood.auroc(s_out, s_in), "fpr95": ood.fpr_at_95_tpr(s_out, s_in),
                     "per_family": per})
    return rows


def print_posthoc(rows, model_path):
    families = list(rows[0]["per_family"])
    print(f"\nPost-hoc scores of {model_path} (one view; fitted on 10,000 training images), far-OOD families vs the test "
          "split:\n| score | AUROC | FPR95 | " + " | ".join(families) + " |\n|---|---:|---:|" + "---:|" * len(families))
    for r in rows:
        print(f"| {r['score']} | {r['auroc']:.3f} | {r['fpr95']:.1%} | "
              + " | ".join(f"{r['per_family'][f]:.3f}" for f in families) + " |")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="model/cifar10_cnn_int8.tflite", help="any model file the app serves")
    p.add_argument("--data", default="../shared/data/cifar10-jpeg.tar.gz", help="dataset with the test split")
    p.add_argument("--per-family", type=int, default=300, help="generated outliers per family")
    p.add_argument("--open-set", action="store_true", help="also train the open-set nets (minutes)")
    p.add_argument("--open-set-epochs", type=int, default=4, help="epochs of each open-set net before its fine-tunes")
    p.add_argument("--open-set-fine-tune", type=int, default=2, help="epochs of each open-set fine-tune")
    p.add_argument("--open-set-seeds", type=int, default=1, help="runs of each open-set split, seeds 0, 1, ...")
    p.add_argument("--posthoc", metavar="MODEL.h5",
                   help="also compare post-hoc scores (max softmax, max logit, energy, KNN, Mahalanobis, ViM) on the "
                        "penultimate features of this Keras model file")
    p.add_argument("--write", action="store_true", help="store the table in the model's sidecar")
    args = p.parse_args(argv)
    from cifarlab.ml.data import load_dataset

    started = time.perf_counter()
    classifier = Classifier.from_path(args.model, chunk_images=100)  # bulk: 100 images per TFLite invoke
    data = load_dataset(args.data)
    print(f"{args.model}: score {classifier.detector.score}, threshold {classifier.detector.threshold}", flush=True)
    inlier = Verdicts.of(classifier, data.x_test)
    per_family = {name: Verdicts.of(classifier, outliers.generate(name, args.per_family, outliers.BENCH_SEED))
                  for name in outliers.FAMILIES}
    rows = [row(f"far OOD: {name}", verdicts, inlier) for name, verdicts in per_family.items()]
    rows.append(row("far OOD: all families", sum(per_family.values(), Verdicts([])), inlier))
    print(f"  far OOD done ({time.perf_counter() - started:.0f} s)", flush=True)
    mild, (x_mild, y_mild) = [], data.test_sample(CORRUPTED)
    for name in corruptions.MILD:
        corrupted = Verdicts.of(classifier, corruptions.corrupt(name, x_mild))
        right = corrupted.predicted == y_mild
        mild.append({"corruption": name, "accuracy": float(right.mean()),
                     "unknown_when_right": float(corrupted.unknown[right].mean()),
                     "flagged_when_right": float((corrupted.unknown | corrupted.unsure)[right].mean())})
    print(f"  corruptions done ({time.perf_counter() - started:.0f} s)", flush=True)
    if args.open_set:
        rows += open_set_rows(data, args.open_set_epochs, args.open_set_fine_tune, range(args.open_set_seeds))
    test = {"unknown": float(inlier.unknown.mean()), "flagged": float((inlier.unknown | inlier.unsure).mean()),
            "baseline_flagged": float(inlier.unsure.mean())}
    print_tables(rows, mild, test)
    posthoc = None
    if args.posthoc:
        posthoc = posthoc_rows(args.posthoc, data, args.per_family)
        print_posthoc(posthoc, args.posthoc)
    if args.write:
        meta = modelfile.read_meta(args.model)
        command = "python benchmarks/bench_ood.py " + " ".join(argv if argv is not None else sys.argv[1:])
        meta["ood_benchmark"] = {"command": command, "date": datetime.date.today().isoformat(), "rows": rows,
                                 "corruptions": mild, "test": test, "posthoc": posthoc}
        atomic.write_json(modelfile.sidecar_path(args.model), meta)
        card.rewrite_card(args.model, meta)
        print(f"written to {modelfile.sidecar_path(args.model)} (and the model card beside an .h5)")
    return 0


def print_tables(rows, mild, test):
    pct = lambda v: "   -  " if v is None else f"{v:6.1%}"  # noqa: E731  (None: not measured for that set)
    print(f"\nCIFAR-10 test images: unknown {test['unknown']:.1%}, flagged (unknown or unsure) {test['flagged']:.1%} "
          f"(baseline flagged: {test['baseline_flagged']:.1%})\n")
    print(f"| {'set':<30} | {'images':>6} | MSP AUROC | MSP FPR95 | MSP flagged | AUROC | FPR95 | flagged | unknown |")
    print(f"|{'-' * 32}|{'-' * 8}:|{'-' * 10}:|{'-' * 10}:|{'-' * 12}:|{'-' * 6}:|{'-' * 6}:|{'-' * 8}:|{'-' * 8}:|")
    for r in rows:
        print(f"| {r['set']:<30} | {r['images']:>6} | {r['baseline_auroc']:9.3f} | {pct(r['baseline_fpr95']):>9} | "
              f"{pct(r['baseline_flagged']):>11} | {r['auroc']:5.3f} | {pct(r['fpr95'])} | {pct(r['flagged']):>7} | "
              f"{pct(r['unknown']):>7} |")
    print("\n| mild corruption (CIFAR-10-C severity 1) | accuracy | unknown when right | flagged when right |")
    print("|---|---:|---:|---:|")
    for m in mild:
        print(f"| {m['corruption']} | {m['accuracy']:.1%} | {m['unknown_when_right']:.1%} | {m['flagged_when_right']:.1%} |")


if __name__ == "__main__":
    sys.exit(main())
