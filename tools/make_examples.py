"""Write static/examples/<class>.png: the first test image of each class, for one-click examples in the app.

    python tools/make_examples.py --data ../shared/data/cifar10-jpeg.tar.gz
"""
import argparse
import os
import sys


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", help="image-folder dataset (default: official CIFAR-10 download)")
    p.add_argument("--out", default="static/examples")
    args = p.parse_args(argv)
    import numpy as np
    from PIL import Image

    from cifarlab.ml.data import load_dataset

    data = load_dataset(args.data)
    os.makedirs(args.out, exist_ok=True)
    for index, name in enumerate(data.class_names):
        first = int(np.flatnonzero(data.y_test == index)[0])
        Image.fromarray(data.x_test[first]).save(os.path.join(args.out, f"{name}.png"))
        print(f"{name}: test image #{first}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
