"""Record in older sidecars which model a fine-tune started from (train.py writes this 'init' field itself now).

    python tools/record_init.py model/cifar10_cnn.json results/fast_oe.json results/fast6.json

Each sidecar named was fine-tuned (--init) from the model of the next one; the last is a run from scratch. Each file
but the last gets an 'init' field with the next one's run name, epochs and all of its training time.
"""
import argparse
import json
import sys
from pathlib import Path


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("sidecars", nargs="+", type=Path, help="the fine-tuned model's sidecar, then its start's, and so on")
    args = p.parse_args(argv)
    from cifarlab import atomic, sidecar

    chain = [json.loads(path.read_text()) for path in args.sidecars]
    for meta in chain[:-1]:
        if not sidecar.has_init_option(meta):
            print(f"error: {meta.get('name')} was not fine-tuned (its command has no --init)", file=sys.stderr)
            return 2
    for index in range(len(chain) - 2, -1, -1):  # the start of the chain first: each lineage counts the one before
        meta, start = chain[index], chain[index + 1]
        init_path = meta["command"].split(" --init ", 1)[1].split()[0]
        meta["init"] = sidecar.lineage(init_path, start)
        atomic.write_json(args.sidecars[index], meta)
        print(f"{args.sidecars[index]}: {sidecar.training_time(meta)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
