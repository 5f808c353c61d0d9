"""wage_train.checkpoints on Orbax's CheckpointManager, in process: what Orbax checks and what the manifest adds,
the earlier layout refused in one line, and Orbax's log records of a save (held, passed on unless it fails)."""

from __future__ import annotations

import logging

import numpy as np
import orbax.checkpoint as ocp
import pytest

from wage_data import DataError
from wage_train.checkpoints import CheckpointWriteError, restore_checkpoint, save_checkpoint
from wage_train.safe_io import write_manifest

ROW = {"epoch": 1, "framework": "jax", "loss": 0.25, "train_acc": 0.5, "test_acc": 0.5, "lr": 8.0, "time_s": 1.0,
       "images_per_s": 256.0, "train_time_s": 0.5, "eval_time_s": 0.5}
STATE = {"epoch": 1, "data_rng": {}, "history": [ROW], "compare": []}


class Runner:
    """The part of a runner the checkpoints use, holding one array."""

    framework = "jax"

    def __init__(self, w: np.ndarray) -> None:
        self.w = w

    def raw_weights(self) -> dict[str, np.ndarray]:
        return {"w": self.w}

    def checkpoint_state(self) -> dict[str, np.ndarray]:
        return {"w": self.w}

    def load_checkpoint_state(self, tree: dict[str, np.ndarray]) -> None:
        self.w = np.asarray(tree["w"])


def test_save_then_restore_gives_the_same_bits_and_state(tmp_path):
    w = np.random.default_rng(0).standard_normal(100).astype(np.float32)
    root = tmp_path / "checkpoints"
    for epoch in (1, 2, 3):
        save_checkpoint(root, epoch, [Runner(w * epoch)], {**STATE, "epoch": epoch})
    assert sorted(p.name for p in root.iterdir()) == ["epoch_0002", "epoch_0003"]  # Orbax keeps two
    runner = Runner(np.zeros(100, np.float32))
    path, state = restore_checkpoint(root, [runner])
    assert path.name == "epoch_0003" and state == {**STATE, "epoch": 3}
    assert runner.w.tobytes() == (w * 3).tobytes()


def test_orbax_restores_a_changed_json_state_the_manifest_refuses_it(tmp_path):
    """The claim behind the manifest: a digit changed in the JSON item goes through Orbax unnoticed."""
    root = tmp_path / "checkpoints"
    save_checkpoint(root, 1, [Runner(np.ones(3, np.float32))], STATE)
    state_file = root / "epoch_0001" / "state" / "metadata"
    state_file.write_text(state_file.read_text().replace('"epoch": 1', '"epoch": 7'))
    options = ocp.CheckpointManagerOptions(
        step_name_format=ocp.step.standard_name_format(step_prefix="epoch", step_format_fixed_length=4))
    with ocp.CheckpointManager(root.resolve(), options=options) as manager:
        restored = manager.restore(1, args=ocp.args.Composite(state=ocp.args.JsonRestore()))
    assert restored["state"]["epoch"] == 7
    with pytest.raises(DataError, match="sha256 differs"):
        restore_checkpoint(root, [Runner(np.zeros(3, np.float32))])


def test_a_checkpoint_of_the_earlier_layout_is_refused_in_one_line(tmp_path):
    old = tmp_path / "checkpoints" / "epoch_0002"
    (old / "jax").mkdir(parents=True)
    (old / "state.json").write_text('{"epoch": 2}')
    (old / "MANIFEST.sha256").write_text("")
    with pytest.raises(DataError) as e:
        restore_checkpoint(tmp_path / "checkpoints", [Runner(np.zeros(3, np.float32))], warn=pytest.fail)
    assert "\n" not in str(e.value) and "earlier wage-train layout" in str(e.value) and "--overwrite" in str(e.value)


def _collect(monkeypatch, fail: bool) -> tuple[list[str], logging.Handler]:
    """Records reaching a handler on absl's logger when Orbax's save logs an error and then fails (or not)."""
    seen: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record.getMessage())

    real_save = ocp.CheckpointManager.save

    def save(manager, *args, **kwargs):
        logging.getLogger("absl").error("Error writing")  # as Orbax's writer thread reports a failed write
        if fail:
            raise OSError(28, "No space left on device")
        return real_save(manager, *args, **kwargs)

    monkeypatch.setattr(ocp.CheckpointManager, "save", save)
    handler = Collect()
    logging.getLogger("absl").addHandler(handler)
    return seen, handler


@pytest.mark.parametrize("fail", [False, True])
def test_orbax_records_of_a_save_are_passed_on_unless_it_fails(tmp_path, monkeypatch, fail):
    seen, handler = _collect(monkeypatch, fail)
    try:
        if fail:
            with pytest.raises(CheckpointWriteError, match="ENOSPC"):
                save_checkpoint(tmp_path / "checkpoints", 1, [Runner(np.ones(3, np.float32))], STATE)
        else:
            save_checkpoint(tmp_path / "checkpoints", 1, [Runner(np.ones(3, np.float32))], STATE)
        logging.getLogger("absl").error("after")  # the logger is as it was
    finally:
        logging.getLogger("absl").removeHandler(handler)
    assert seen == (["after"] if fail else ["Error writing", "after"])


def test_a_checkpoint_that_cannot_fit_is_refused_before_orbax_writes(tmp_path, monkeypatch):
    """On a full disk TensorStore reports its failed writes on stderr: the free space is checked first."""
    import shutil
    from collections import namedtuple

    from wage_train import checkpoints

    root = tmp_path / "checkpoints"
    save_checkpoint(root, 1, [Runner(np.ones(3, np.float32))], STATE)
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(1 << 30, 1 << 30, checkpoints.HEADROOM))
    with pytest.raises(CheckpointWriteError, match="ENOSPC: No space left on device.*epoch_0001 is kept"):
        save_checkpoint(root, 2, [Runner(np.ones(3, np.float32))], {**STATE, "epoch": 2})
    assert sorted(p.name for p in root.iterdir()) == ["epoch_0001"]


def test_float_torch_resume_restores_the_momentum_buffers_bit_for_bit(tmp_path):
    """The float baseline's torch optimizer state (SGD momentum buffers) goes through the NumPy tree too."""
    from wage_train.cli import run

    args = ["--float", "--framework", "torch", "--hidden", "16", "--epochs", "3", "--limit-batches", "3",
            "--no-progress"]
    run([*args, "--out-dir", str(tmp_path / "full")])
    run([*args, "--stop-after", "1", "--out-dir", str(tmp_path / "part")])
    run([*args, "--resume", "--out-dir", str(tmp_path / "part")])
    with ocp.StandardCheckpointer() as c:
        saved = c.restore((tmp_path / "part" / "checkpoints" / "epoch_0003" / "torch").resolve())
    assert any(k.endswith("momentum_buffer") for k in saved)
    a, b = np.load(tmp_path / "full" / "weights.npz"), np.load(tmp_path / "part" / "weights.npz")
    assert sorted(a) == sorted(b) and all(a[k].tobytes() == b[k].tobytes() for k in a)


def test_a_step_without_its_manifest_is_refused_then_replaced(tmp_path):
    """Interrupted between Orbax's finalisation and the manifest: refused on resume, rewritten by the next save."""
    root = tmp_path / "checkpoints"
    for epoch in (1, 2):
        save_checkpoint(root, epoch, [Runner(np.full(3, epoch, np.float32))], {**STATE, "epoch": epoch})
    (root / "epoch_0002" / "MANIFEST.sha256").unlink()
    warnings: list[str] = []
    runner = Runner(np.zeros(3, np.float32))
    path, state = restore_checkpoint(root, [runner], warn=warnings.append)
    assert path.name == "epoch_0001" and state["epoch"] == 1 and runner.w.tolist() == [1, 1, 1]
    assert len(warnings) == 1 and "manifest missing" in warnings[0]
    save_checkpoint(root, 2, [Runner(np.full(3, 5, np.float32))], {**STATE, "epoch": 2})
    path, state = restore_checkpoint(root, [runner], warn=pytest.fail)
    assert path.name == "epoch_0002" and state["epoch"] == 2 and runner.w.tolist() == [5, 5, 5]


@pytest.mark.parametrize("key,value,expected", [
    ("epoch", -1, "epoch -1 is not this step's 1"), ("epoch", 10**30, "is not this step's 1"),
    ("epoch", "1", "epoch '1' is not this step's 1"), ("history", [1, 2], "history must be a list"),
    ("history", [{}], "history must be a list"), ("history", [{"epoch": 1}], "history must be a list"),
    ("history", [{**ROW, "epoch": 2}], "history must be a list"), ("history", "x", "history must be a list"),
    ("compare", "x", "compare must be a list"), ("data_rng", [1], "data_rng must be an object"),
])
def test_a_hand_edited_state_with_a_matching_manifest_is_refused_in_one_line(tmp_path, key, value, expected):
    """The manifest proves the files are the ones written, not that a person did not write them: the restored
    state is checked like command-line input."""
    import json

    root = tmp_path / "checkpoints"
    save_checkpoint(root, 1, [Runner(np.ones(3, np.float32))], STATE)
    state_file = root / "epoch_0001" / "state" / "metadata"
    state_file.write_text(json.dumps({**json.loads(state_file.read_text()), key: value}))
    write_manifest(root / "epoch_0001")
    with pytest.raises(DataError) as e:
        restore_checkpoint(root, [Runner(np.zeros(3, np.float32))])
    assert expected in str(e.value) and "\n" not in str(e.value)
