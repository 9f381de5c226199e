"""Interrupted runs: an atomic per-epoch checkpoint of everything training needs to continue bit for bit."""
import datetime
import json
import zipfile
from pathlib import Path

import keras
import numpy as np

from ..atomic import replace_atomically
from ..errors import CifarlabError

FORMAT = 2  # bump when the checkpoint's contents change


class ResumeError(CifarlabError, ValueError):
    """A run that cannot be resumed; the message says why."""


def checkpoint_path(out):
    """Where the run writing `out`.h5 keeps its resume checkpoint."""
    return Path(f"{out}_checkpoint.npz")


def find_checkpoint(run):
    """The checkpoint of a run given by its --out path (or the checkpoint file itself)."""
    path = Path(run) if str(run).endswith(".npz") else checkpoint_path(run)
    if not path.is_file():
        raise ResumeError(f"no checkpoint at {path}: a run leaves one after each finished epoch and removes it when "
                          f"it completes (give --resume the run's --out path).")
    return path


def values(variables):
    """Numpy copies of Keras variables."""
    return [np.array(keras.ops.convert_to_numpy(v)) for v in variables]


def assign(variables, arrays, what):
    """Give each variable its saved value; ResumeError when the saved run had other variables."""
    if len(variables) != len(arrays) or any(tuple(v.shape) != a.shape for v, a in zip(variables, arrays)):
        raise ResumeError(f"the checkpoint's {what} do not fit this model (was the recipe or code changed?).")
    for variable, array in zip(variables, arrays):
        variable.assign(array)


class RunState:
    """A checkpoint read back: `config` (JSON) and named lists of arrays."""

    def __init__(self, config, arrays):
        self.config, self.arrays = config, arrays

    @classmethod
    def read(cls, run):
        """Read the checkpoint of a run; ResumeError if it is missing, damaged or from another format."""
        path = find_checkpoint(run)
        try:
            with np.load(path, allow_pickle=False) as z:
                config = json.loads(str(z["config"]))
                arrays = {}
                for key in z.files:
                    group, _, index = key.rpartition("_")
                    if group:
                        arrays.setdefault(group, {})[int(index)] = z[key]
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
            raise ResumeError(f"{path} cannot be read ({type(exc).__name__}: {exc}).") from None
        if config.get("format") != FORMAT:
            raise ResumeError(f"{path} was written by another version of train.py (format {config.get('format')}).")
        return cls(config, {group: [items[i] for i in sorted(items)] for group, items in arrays.items()})

    def group(self, name):
        """The saved arrays of one group (model, optimizer, lookahead, best), empty when absent."""
        return self.arrays.get(name, [])


class EarlyStopping(keras.callbacks.EarlyStopping):
    """Keras's early stopping on validation loss, whose progress survives an interruption."""

    def __init__(self, patience):
        super().__init__(monitor="val_loss", patience=patience, restore_best_weights=True, verbose=1)
        self.resumed = None

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        if self.resumed is not None:
            state, best_weights = self.resumed
            self.wait, self.best, self.best_epoch = state["wait"], state["best"], state["best_epoch"]
            self.best_weights = best_weights or None
            self.resumed = None

    def state(self):
        """JSON-able progress (the best weights travel as arrays)."""
        best = None if self.best is None else float(self.best)
        return {"wait": int(self.wait), "best": best, "best_epoch": int(self.best_epoch)}


class RunCheckpoint(keras.callbacks.Callback):
    """After every epoch, write weights, optimizer, lookahead, early stopping and history to one file, atomically
    (temp file + rename), so an interrupted run continues exactly (train.py --resume); batches depend on the epoch."""

    def __init__(self, path, config, log, phase, lookahead=None, early_stop=None):
        super().__init__()
        self.path, self.config, self.log = Path(path), config, log
        self.phase, self.lookahead, self.early_stop = phase, lookahead, early_stop

    def on_epoch_end(self, epoch, logs=None):
        arrays = {"model": values(self.model.variables), "optimizer": values(self.model.optimizer.variables)}
        state = {**self.config, "format": FORMAT, "epochs_done": epoch + 1, "phase": self.phase,
                 "history": self.log.history, "train_seconds": self.log.train_seconds,
                 "saved_at": datetime.datetime.now().astimezone().isoformat(timespec="seconds")}
        if self.lookahead is not None:
            state["lookahead_step"] = self.lookahead.step
            arrays["lookahead"] = self.lookahead.average
        if self.early_stop is not None:
            state["early_stop"] = self.early_stop.state()
            arrays["best"] = list(self.early_stop.best_weights or [])
        flat = {f"{group}_{i}": a for group, items in arrays.items() for i, a in enumerate(items)}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        replace_atomically(self.path, lambda tmp: np.savez(tmp, config=np.array(json.dumps(state)), **flat))


def restore(state, model, lookahead=None, early_stop=None, phase=0):
    """Put a compiled model and its training helpers back where the checkpoint left them."""
    assign(model.variables, state.group("model"), "weights")
    if state.config["phase"] == phase:  # the optimizer of a finished phase is not the next phase's optimizer
        model.optimizer.build(model.trainable_variables)
        assign(model.optimizer.variables, state.group("optimizer"), "optimizer variables")
    if lookahead is not None:
        lookahead.resumed = (state.config["lookahead_step"], state.group("lookahead"))
    if early_stop is not None and "early_stop" in state.config:
        early_stop.resumed = (state.config["early_stop"], state.group("best"))
