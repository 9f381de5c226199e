import json

import pytest

from benchmarks import bench_frontier


def write_sidecar(directory, name, minutes, accuracy, seed=0, epochs=10, lr=1.5, data="d.tar.gz",
                  device="CPU: AMD EPYC, 2 logical cores", **later_hyperparameters):
    """A minimal train.py sidecar."""
    path = directory / f"{name}.json"
    path.write_text(json.dumps({
        "name": name, "arch": "fast", "command": f"python train.py --seed {seed} --out runs/{name}", "seed": seed,
        "class_names": ["cat", "dog"], "input_size": 32,
        "hyperparameters": {"epochs": epochs, "lr": lr, **later_hyperparameters}, "precision": "mixed_bfloat16", "data_source": f"../{data}",
        "device": device,
        "train_images": 48000, "train_seconds": minutes * 60, "test_accuracy": accuracy,
        "history": [{"epoch": epochs, "val_accuracy": accuracy - 0.01}],
    }))
    return path


@pytest.fixture
def sidecars(tmp_path):
    return [write_sidecar(tmp_path, "short", 9.5, 0.88, epochs=5),
            write_sidecar(tmp_path, "mid", 19, 0.90),
            write_sidecar(tmp_path, "mid_seed1", 21, 0.91, seed=1),
            write_sidecar(tmp_path, "other_lr", 19.5, 0.895, lr=1.0),
            write_sidecar(tmp_path, "long", 44, 0.92, epochs=23)]


def test_best_within_takes_the_most_accurate_run_inside_each_budget(sidecars):
    runs = [bench_frontier.load_run(p) for p in sidecars]
    assert bench_frontier.best_within(runs, 5) is None
    assert bench_frontier.best_within(runs, 10)["name"] == "short"
    assert bench_frontier.best_within(runs, 20)["name"] == "mid"  # mid_seed1 is better but took 21 min
    assert bench_frontier.best_within(runs, 30)["name"] == "mid_seed1"
    assert bench_frontier.best_within(runs, 45)["name"] == "long"


def test_seed_groups_join_only_runs_that_differ_by_seed(sidecars):
    groups = bench_frontier.seed_groups([bench_frontier.load_run(p) for p in sidecars])
    assert [sorted(r["name"] for r in g) for g in groups] == [["mid", "mid_seed1"]]


def test_a_sidecar_older_than_a_hyperparameter_groups_with_runs_at_its_old_value(tmp_path):
    paths = [write_sidecar(tmp_path, "old", 19, 0.90), write_sidecar(tmp_path, "new_seed1", 19, 0.91, seed=1,
                                                                       cutout=0, depth=2),
             write_sidecar(tmp_path, "cutout_seed2", 19, 0.92, seed=2, cutout=8, depth=2)]
    groups = bench_frontier.seed_groups([bench_frontier.load_run(p) for p in paths])
    assert [sorted(r["name"] for r in g) for g in groups] == [["new_seed1", "old"]]


def test_main_prints_frontier_and_seed_tables(sidecars, capsys):
    assert bench_frontier.main([str(p) for p in sidecars]) == 0
    out = capsys.readouterr().out
    assert "| 10 min | 88.00% | short | 5 | 9.5 min |" in out
    assert "| mid, mid_seed1 | 0, 1 | 10 | 90.50% | 90.00% .. 91.00% | 19.0 .. 21.0 min |" in out
    assert "| short | d.tar.gz | CPU | 0 | 5 | 9.5 min | 114 | 87.00% | 88.00% |" in out
    assert out.index("| short |") < out.index("| mid |") < out.index("| long |")  # runs listed by time


def test_data_option_ranks_only_runs_on_that_dataset(sidecars, tmp_path, capsys):
    other = write_sidecar(tmp_path, "other_data", 8, 0.99, epochs=5, data="q50.tar.gz")
    assert bench_frontier.main(["--data", "d.tar.gz", *map(str, sidecars), str(other)]) == 0
    out = capsys.readouterr().out
    assert "| other_data | q50.tar.gz |" in out  # listed with its dataset
    assert "| 10 min | 88.00% | short |" in out  # but not ranked against the others


def test_data_option_without_matching_runs_is_an_error(sidecars, capsys):
    with pytest.raises(SystemExit) as exc:
        bench_frontier.main(["--data", "missing.tar.gz", *map(str, sidecars)])
    assert exc.value.code == 2
    assert "no sidecar was trained on 'missing.tar.gz' on a CPU" in capsys.readouterr().err


def test_device_option_ranks_only_runs_on_that_kind_of_device(sidecars, tmp_path, capsys):
    gpu = write_sidecar(tmp_path, "on_gpu", 3, 0.93, epochs=40, device="GPU: NVIDIA H100 80GB HBM3")
    assert bench_frontier.main([*map(str, sidecars), str(gpu)]) == 0
    out = capsys.readouterr().out
    assert "| on_gpu | d.tar.gz | GPU |" in out  # listed
    assert "| 10 min | 88.00% | short |" in out  # a GPU's minutes are not this CPU's
    assert bench_frontier.main(["--device", "GPU", *map(str, sidecars), str(gpu)]) == 0
    out = capsys.readouterr().out
    assert "| 10 min | 93.00% | on_gpu | 40 | 3.0 min |" in out and "| 45 min | 93.00% | on_gpu |" in out
