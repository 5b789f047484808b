"""Faults and bad input against train.py and sample.py (issue #15): nothing lost, nothing silent.

One test (or one parametrised row) per case: the lock on an out_dir, Ctrl-C and SIGTERM, kill -9 while saving,
orphaned temporaries, torn logs, a full disk, zero counts, missing devices, files that are not checkpoints,
short context clips, NaN weights, untrained guidance branches, NaN frame intervals, --overwrite, and the
"error: <message>" / exit status 2 of the scripts. Smoke-sized; the data files have tests/test_faults_data.py.
"""
import argparse
import errno
import json
import os
import pickle
import re
import resource
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import sample as sample_script
import train
from nano_videodiff.errors import UserError
from nano_videodiff.training.checkpoint import load_checkpoint, save_checkpoint
from nano_videodiff.training.config import Config

ROOT = Path(__file__).resolve().parents[1]
posix_only = pytest.mark.skipif(os.name != "posix", reason="needs POSIX signals")


def smoke_args(out_dir, *extra):
    return ["--config=smoke", f"--out_dir={out_dir}", "--preview_every=0", *extra]


def sample_args(ckpt, out_dir, *extra):
    return [f"--ckpt={ckpt}", f"--out_dir={out_dir}", "--num_videos=1", "--steps=1", *extra]


def same(a, b, where="") -> None:
    """Bit-exact equality of nested dicts/lists of tensors and plain values."""
    if torch.is_tensor(a):
        assert torch.equal(a, b), where
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for key in a:
            same(a[key], b[key], f"{where}/{key}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            same(x, y, f"{where}/{i}")
    else:
        assert a == b, where


def same_training_state(path_a, path_b) -> None:
    a, b = load_checkpoint(path_a), load_checkpoint(path_b)
    for key in ("step", "model", "ema", "optimizer", "rng"):
        same(a[key], b[key], key)


class Train:
    """``python train.py ARGS`` as a user runs it, in its own process (so that it can be signalled or killed);
    its output goes to files (a full pipe would stall it). Always killed at the end of the ``with``."""

    def __init__(self, tmp_path, *args):
        self.out, self.err = tmp_path / "train.out", tmp_path / "train.err"
        with open(self.out, "w") as out, open(self.err, "w") as err:
            self.proc = subprocess.Popen([sys.executable, str(ROOT / "train.py"), *args], cwd=ROOT, stdout=out,
                                         stderr=err, env=dict(os.environ, PYTHONPATH=str(ROOT)))
        self.pid = self.proc.pid

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self.proc.poll() is None:  # a failed test must not leave a run behind
            self.proc.kill()
            self.proc.wait()

    def wait_for_log(self, run: Path, lines: int, timeout: float = 120) -> None:
        """Until the run has logged ``lines`` steps: it is training, past start-up."""
        log, t0 = run / "log.jsonl", time.time()
        while not (log.exists() and len(log.read_text().splitlines()) >= lines):
            assert self.proc.poll() is None, self.err.read_text()[-2000:]
            assert time.time() - t0 < timeout, "the run did not start training"
            time.sleep(0.05)

    def finish(self, timeout: float = 120):
        """(exit status, stdout, stderr) once it has ended."""
        status = self.proc.wait(timeout)
        return status, self.out.read_text(), self.err.read_text()


def logged_steps(run: Path) -> list:
    return [json.loads(line)["step"] for line in (run / "log.jsonl").read_text().splitlines()]


def gone_pid() -> int:
    """The pid of a process that has ended."""
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


LONG_RUN = ("--max_steps=100000", "--log_every=1", "--ckpt_every=100000")  # runs until it is stopped


# ------------------------------------------------------------------------------ BAD 1: one run per out_dir

@posix_only
def test_a_second_run_into_the_same_out_dir_is_refused_and_sigterm_saves_the_first(tmp_path):
    run = tmp_path / "run"
    with Train(tmp_path, *smoke_args(run, *LONG_RUN)) as first:
        first.wait_for_log(run, 1)
        # a user starting the same command again: refused at once, in one line, with the first run's pid
        second = subprocess.run([sys.executable, str(ROOT / "train.py"), *smoke_args(run, "--max_steps=40",
                                                                                     "--seed=2")],
                                cwd=ROOT, capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=str(ROOT)))
        assert second.returncode == 2, second.stderr[-2000:]
        assert "Traceback" not in second.stderr
        assert re.search(rf"^error: {re.escape(str(run))} is in use by another run \(pid {first.pid} ", second.stderr,
                         re.M)
        for extra in ("--resume", "--overwrite"):  # neither may take over a folder in use
            with pytest.raises(UserError, match=f"in use by another run \\(pid {first.pid} "):
                train.main(smoke_args(run, "--max_steps=40", extra))
        first.proc.send_signal(signal.SIGTERM)  # what a scheduler or `kill` sends
        status, out, err = first.finish()
    assert status == 128 + signal.SIGTERM, err[-2000:]
    stopped = int(re.search(r"interrupted at step (\d+); --resume continues", out).group(1))
    assert load_checkpoint(run / "ckpt.pt")["step"] == stopped
    assert logged_steps(run) == list(range(1, stopped + 1))  # one run's log, not two interleaved
    assert (run / ".lock").read_text() == ""  # released


def test_a_lock_left_by_a_killed_run_is_taken_over(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / ".lock").write_text(f"pid {gone_pid()} on {socket.gethostname()}, since yesterday\n")  # nobody holds it
    train.main(smoke_args(run, "--max_steps=2"))
    assert re.search(r"\.lock was left by a run that is gone \(pid \d+ ", capsys.readouterr().out)
    assert load_checkpoint(run / "ckpt.pt")["step"] == 2


# ------------------------------------------------------------------------------ Ctrl-C, kill -9

@posix_only
def test_ctrl_c_saves_the_current_step_and_resume_is_bit_exact(tmp_path):
    split, full = tmp_path / "split", tmp_path / "full"
    with Train(tmp_path, *smoke_args(split, *LONG_RUN)) as proc:
        proc.wait_for_log(split, 3)
        proc.proc.send_signal(signal.SIGINT)  # Ctrl-C
        status, out, err = proc.finish()
    assert status == 130, err[-2000:]
    assert "Traceback" not in err
    stopped = int(re.search(r"interrupted at step (\d+); --resume continues", out).group(1))
    assert load_checkpoint(split / "ckpt.pt")["step"] == stopped  # saved where it stopped, not at ckpt_every
    end = stopped + 3
    train.main(smoke_args(split, *LONG_RUN, "--resume", f"--stop_at_step={end}"))
    train.main(smoke_args(full, *LONG_RUN, f"--stop_at_step={end}"))
    same_training_state(split / "ckpt.pt", full / "ckpt.pt")
    losses = [[json.loads(line)["loss"] for line in (run / "log.jsonl").read_text().splitlines()]
              for run in (split, full)]
    assert losses[0] == losses[1] and len(losses[0]) == end


KILLED_WHILE_SAVING = """
import os, signal, sys
import torch
import train
real_save, calls = torch.save, []
def dying(obj, f, *args, **kwargs):
    calls.append(1)
    if len(calls) == 2:  # the second checkpoint: half of it, then kill -9 (no except, no finally runs)
        (f if hasattr(f, "write") else open(f, "wb")).write(b"PK\\x03\\x04 half a checkpoint")
        os.kill(os.getpid(), signal.SIGKILL)
    return real_save(obj, f, *args, **kwargs)
torch.save = dying
train.main(sys.argv[1:])
"""


@posix_only
def test_kill_9_while_saving_keeps_the_last_checkpoint_and_resume_cleans_up(tmp_path, capsys):
    run, full = tmp_path / "run", tmp_path / "full"
    args = smoke_args(run, "--max_steps=6", "--ckpt_every=2")
    killed = subprocess.run([sys.executable, "-c", KILLED_WHILE_SAVING, *args], cwd=ROOT, capture_output=True,
                            env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert killed.returncode == -signal.SIGKILL, killed.stderr.decode()[-2000:]
    assert load_checkpoint(run / "ckpt.pt")["step"] == 2  # the previous checkpoint, whole
    assert len([p for p in run.iterdir() if "tmp" in p.name]) == 1  # and the killed write's orphan
    train.main(smoke_args(run, "--max_steps=6", "--ckpt_every=2", "--resume"))
    out = capsys.readouterr().out
    assert "removed 1 unfinished checkpoint file(s) of killed runs" in out
    assert ".lock was left by a run that is gone" in out
    assert not [p for p in run.iterdir() if "tmp" in p.name]
    train.main(smoke_args(full, "--max_steps=6", "--ckpt_every=2"))
    same_training_state(run / "ckpt.pt", full / "ckpt.pt")


@posix_only
def test_orphaned_temporaries_of_dead_writers_are_removed_at_start(tmp_path):
    run = tmp_path / "run"
    train.main(smoke_args(run, "--max_steps=2", "--stop_at_step=1"))
    host, dead = socket.gethostname(), gone_pid()
    orphans = [run / f".ckpt.pt.tmp-{dead}", run / f"ckpt.pt.{host}.{dead}.1a2b3c4d.tmp"]  # old and new names
    alive = [run / f"ckpt.pt.{host}.{os.getpid()}.5e6f7a8b.tmp",  # a writer that is still running
             run / f"ckpt.pt.otherhost.{dead}.00000000.tmp"]      # another machine's: cannot be probed
    for path in orphans + alive:
        path.write_bytes(b"half a checkpoint")
    train.main(smoke_args(run, "--max_steps=2", "--resume"))
    assert [p.exists() for p in orphans + alive] == [False, False, True, True]


# ------------------------------------------------------------------------------ logs, disk, out_dir contents

def test_a_torn_last_log_line_is_skipped_with_a_warning(tmp_path):
    run = tmp_path / "run"
    train.main(smoke_args(run, "--max_steps=4", "--log_every=1", "--stop_at_step=2"))
    with open(run / "log.jsonl", "a") as f:
        f.write('{"step": 3, "loss": 0.4')  # a kill in the middle of a write
    with pytest.warns(UserWarning, match=re.escape(str(run / "log.jsonl")) + ".*torn last line"):
        train.main(smoke_args(run, "--max_steps=4", "--log_every=1", "--resume"))
    assert logged_steps(run) == [1, 2, 3, 4]


def _limit_file_size(nbytes):
    """Writes past ``nbytes`` fail with EFBIG, as on a full disk (SIGXFSZ ignored: an error, not a signal)."""
    old_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    old_limit = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (nbytes, old_limit[1]))
    return lambda: (resource.setrlimit(resource.RLIMIT_FSIZE, old_limit), signal.signal(signal.SIGXFSZ, old_handler))


def _no_space(obj, f, *args, **kwargs):
    f.write(b"PK\x03\x04")
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


@posix_only
@pytest.mark.parametrize("fault", ["file size limit", "ENOSPC"])
@pytest.mark.parametrize("before", [True, False])
def test_a_full_disk_while_saving_names_the_file_and_keeps_the_old_checkpoint(tmp_path, monkeypatch, fault, before):
    path = tmp_path / "run" / "ckpt.pt"
    if before:
        save_checkpoint(path, {"step": 1})
    payload = {"step": 2, "weights": torch.randn(100_000)}  # 400 kB
    if fault == "ENOSPC":
        monkeypatch.setattr(torch, "save", _no_space)
        restore = lambda: None  # noqa: E731
    else:
        restore = _limit_file_size(50_000)
    try:
        with pytest.raises(UserError) as info:
            save_checkpoint(path, payload)
    finally:
        restore()
    message = str(info.value)
    intact = "the previous checkpoint is intact" if before else "no checkpoint was written"
    assert message.startswith(f"could not write {path} (") and message.endswith(intact)
    if fault == "ENOSPC":
        assert "No space left on device" in message
    assert isinstance(info.value, OSError)  # still an OSError for callers that catch one
    assert [p.name for p in path.parent.iterdir()] == (["ckpt.pt"] if before else [])
    if before:
        assert load_checkpoint(path)["step"] == 1


LEFTOVERS = {  # what a run killed before its first checkpoint leaves
    "log": ["log.jsonl"],
    "log and loss plot": ["log.jsonl", "loss.png"],
    "previews only": ["previews/step_000005.gif", "previews/step_000005.png"],
    "TensorBoard events only": ["tensorboard/events.out.tfevents.1700000000.host.1.0"],
}


@pytest.mark.parametrize("name", LEFTOVERS)
def test_a_folder_with_a_log_or_previews_but_no_checkpoint_is_a_run(tmp_path, name):
    run = tmp_path / "run"
    for relative in LEFTOVERS[name]:
        (run / relative).parent.mkdir(parents=True, exist_ok=True)
        (run / relative).write_text('{"step": 5, "loss": 1.0}\n')
    with pytest.raises(FileExistsError, match="--resume.*--overwrite"):
        train.main(smoke_args(run, "--max_steps=2"))
    with pytest.raises(UserError, match="no ckpt.pt.*nothing to resume.*--overwrite"):
        train.main(smoke_args(run, "--max_steps=2", "--resume"))
    assert all((run / relative).exists() for relative in LEFTOVERS[name])  # nothing replaced by the refusals
    train.main(smoke_args(run, "--max_steps=2", "--log_every=1", "--overwrite"))
    assert logged_steps(run) == [1, 2]
    assert not (run / "previews").exists() and not (run / "tensorboard").exists()  # the old ones are gone


def test_overwrite_clears_what_it_replaces(tmp_path):
    run, samples = tmp_path / "run", tmp_path / "samples"
    train.main(["--config=smoke", f"--out_dir={run}", "--max_steps=2", "--preview_every=1", "--log_every=1"])
    (run / "previews" / "notes.txt").write_text("mine")  # not ours: stays
    train.main(smoke_args(run, "--max_steps=1", "--log_every=1", "--overwrite"))
    assert sorted(p.name for p in (run / "previews").iterdir()) == ["notes.txt"]
    assert logged_steps(run) == [1]
    ckpt = run / "ckpt.pt"
    sample_script.main(sample_args(ckpt, samples, "--num_videos=3", "--task=predict"))
    assert (samples / "metrics.json").exists()
    sample_script.main(sample_args(ckpt, samples, "--overwrite"))  # one video, no task: no metrics
    assert sorted(p.name for p in samples.iterdir()) == ["grid.gif", "grid.png", "video_000.gif"]


# ------------------------------------------------------------------------------ validate(): zero and negative

TRAIN_FLAGS = ["--ckpt_every=0", "--log_every=0", "--patch_size=0", "--heads=0", "--ckpt_every=-5", "--dim=0",
               "--depth=0", "--num_preview=0", "--preview_steps=0", "--sample_steps=0", "--fps=0",
               "--ema_halflife=0", "--lr=nan", "--fps=inf", "--heads=3", "--stop_at_step=-1"]


@pytest.mark.parametrize("flag", TRAIN_FLAGS)
def test_train_rejects_zero_and_negative_counts(tmp_path, monkeypatch, flag):
    import toy_data
    monkeypatch.setattr(toy_data, "build_dataset", lambda *a, **k: pytest.fail("built data before the check"))
    key = flag[2:].split("=")[0]
    with pytest.raises(UserError, match=f"--{key}"):
        train.main(smoke_args(tmp_path / "run", "--max_steps=2", flag))


SAMPLE_FLAGS = ["--num_videos=0", "--batch_size=0", "--num_videos=-1", "--batch_size=-2", "--steps=-1",
                "--every=0", "--eval_clips=0", "--num_context=-1", "--S_churn=-1", "--frame_interval=-0.5",
                "--cfg_scale=nan", "--solver=rk4", "--guidance=text", "--label=-2"]


@pytest.mark.parametrize("flag", SAMPLE_FLAGS)
def test_sample_rejects_bad_options_before_reading_the_checkpoint(tmp_path, flag):
    key = flag[2:].split("=")[0]
    with pytest.raises(UserError, match=f"--{key}"):
        sample_script.main(sample_args(tmp_path / "not_read.pt", tmp_path / "s", flag))


# ------------------------------------------------------------------------------ devices

@pytest.mark.parametrize("device", ["cuda", "cuda:3", "mps", "gpu"])
def test_a_device_that_is_not_there_is_named_before_any_work(tmp_path, monkeypatch, device):
    import toy_data
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    monkeypatch.setattr(toy_data, "build_dataset", lambda *a, **k: pytest.fail("built data before the check"))
    with pytest.raises(UserError, match=rf"--device={device}.*devices here: cpu\b"):
        train.main(smoke_args(tmp_path / "run", "--max_steps=1", f"--device={device}"))
    with pytest.raises(UserError, match=rf"--device={device}.*devices here: cpu\b"):
        sample_script.main(sample_args(tmp_path / "x.pt", tmp_path / "s", f"--device={device}"))


# ------------------------------------------------------------------------------ files that are not checkpoints

@pytest.fixture(scope="module")
def predict_ckpt(tmp_path_factory):
    """A smoke model trained for prediction (--masking=predict) with --context_dropout=0."""
    run = tmp_path_factory.mktemp("predict")
    train.main(smoke_args(run, "--masking=predict", "--max_steps=2"))
    return run / "ckpt.pt"


def _flip_in_the_weights(path, good):
    data = bytearray(good.read_bytes())
    data[len(data) // 2] ^= 0x04  # the middle of the file is tensor data
    path.write_bytes(bytes(data))


def _with_config(path, good, **changes):
    ckpt = torch.load(good, weights_only=True)
    for key, value in changes.items():
        section, name = key.split("__")
        ckpt["config"][section][name] = value
    torch.save(ckpt, path)


NOT_CHECKPOINTS = {  # name -> (make the file from a good checkpoint, what the message says)
    "random bytes": (lambda p, g: p.write_bytes(np.random.default_rng(0).bytes(4000)), "does not begin like"),
    "empty": (lambda p, g: p.write_bytes(b""), "empty"),
    "text": (lambda p, g: p.write_text("a checkpoint, honest\n"), "does not begin like"),
    "truncated": (lambda p, g: p.write_bytes(g.read_bytes()[: len(g.read_bytes()) // 2]), "cut short"),
    "bit flip": (_flip_in_the_weights, "does not match its checksum"),
    "plain pickle": (lambda p, g: p.write_bytes(pickle.dumps({"step": 1}, protocol=2)),
                     r"not a readable checkpoint \(Invalid magic number"),
    "plain pickle of an object": (lambda p, g: p.write_bytes(pickle.dumps(argparse.Namespace(a=1), protocol=2)),
                                  r"Python objects \(argparse.Namespace\)"),
    "pickled object": (lambda p, g: torch.save({"args": argparse.Namespace(a=1)}, p),
                       r"Python objects \(argparse.Namespace\)"),
    "a tensor": (lambda p, g: torch.save(torch.ones(3), p), "holds a Tensor, not a checkpoint"),
    "a list": (lambda p, g: torch.save([torch.ones(3)], p), "holds a list, not a checkpoint"),
    "weights are not tensors": (lambda p, g: torch.save({**torch.load(g, weights_only=True), "ema": {"w": 1},
                                                         "model": {"w": 1}}, p),
                                "not a dict of tensors|belong to a different architecture"),
    "depth='2' in the config": (lambda p, g: _with_config(p, g, model__depth="2"),
                                r"model.depth='2' has type str, expected int"),
    "qk_norm=1 in the config": (lambda p, g: _with_config(p, g, model__qk_norm=1),
                                r"model.qk_norm=1 has type int, expected bool"),
}
ENTRY_POINTS = ["sample.py", "train.py --resume", "train.py --init_from"]
LOADS = [(name, entry) for name in NOT_CHECKPOINTS for entry in ENTRY_POINTS
         if not ("config" in name and entry == "train.py --init_from")]  # --init_from takes only the weights


@pytest.mark.parametrize("name,entry", LOADS)
def test_a_file_that_is_not_a_checkpoint_gets_our_own_message(tmp_path, predict_ckpt, name, entry):
    make, says = NOT_CHECKPOINTS[name]
    run = tmp_path / "run"
    run.mkdir()
    path = run / "ckpt.pt"
    make(path, predict_ckpt)
    with pytest.raises(UserError) as info:
        if entry == "sample.py":
            sample_script.main(sample_args(path, tmp_path / "s"))
        elif entry == "train.py --resume":
            train.main(smoke_args(run, "--max_steps=4", "--resume"))
        else:
            train.main(smoke_args(tmp_path / "new", "--max_steps=1", "--masking=predict", f"--init_from={path}"))
    message = str(info.value)
    assert re.search(says, message), message
    assert "\n" not in message and "weights_only=False" not in message  # never that advice
    if "config" not in name:
        assert str(path) in message


def test_an_exported_checkpoint_cannot_be_resumed_but_can_start_a_run(tmp_path, predict_ckpt):
    from nano_videodiff.training.checkpoint import export_weights
    run = tmp_path / "run"
    export_weights(predict_ckpt, run / "ckpt.pt")
    with pytest.raises(UserError, match="cannot be resumed: it holds no model, optimizer, rng.*--init_from"):
        train.main(smoke_args(run, "--max_steps=4", "--resume"))


# ------------------------------------------------------------------------------ BAD 5: NaN weights

@pytest.mark.parametrize("which", ["ema", "model"])
def test_nan_weights_are_refused_at_load(tmp_path, predict_ckpt, which):
    ckpt = torch.load(predict_ckpt, weights_only=True)
    name = next(k for k, v in ckpt[which].items() if v.is_floating_point())
    ckpt[which][name] = torch.full_like(ckpt[which][name], float("nan"))
    run = tmp_path / "run"
    run.mkdir()
    torch.save(ckpt, run / "ckpt.pt")
    flag = "--use_ema=true" if which == "ema" else "--use_ema=false"
    with pytest.raises(UserError, match=rf"weights in {re.escape(str(run / 'ckpt.pt'))} hold NaN or infinite"):
        sample_script.main(sample_args(run / "ckpt.pt", tmp_path / "s", flag))
    assert not (tmp_path / "s").exists()  # no black GIFs
    with pytest.raises(UserError, match="NaN or infinite.*diverged"):
        train.main(smoke_args(run, "--max_steps=4", "--masking=predict", "--resume"))


# ------------------------------------------------------------------------------ BAD 2: short context clips

def _clip(path, frames, size=16, channels=3):
    rng = np.random.default_rng(frames)
    np.save(path, rng.integers(0, 256, (frames, size, size, channels), dtype=np.uint8))
    return path


SHORT_CONTEXT = {  # smoke: T = 4, predict gives frames 0, 1 by default -> (task flags, frames, refused?)
    "predict, 1 frame": (["--task=predict"], 1, "gives frame\\(s\\) 1 .*at least 2 frames"),
    "predict, 3 of 4 given, 2 frames": (["--task=predict", "--num_context=3"], 2, "gives frame\\(s\\) 2 "),
    "interpolate, 2 frames": (["--task=interpolate", "--every=2"], 2, "gives frame\\(s\\) 2, 3 "),
    "backward, 3 frames": (["--task=backward"], 3, "gives frame\\(s\\) 3 "),
    "complete, 3 frames": (["--task=complete"], 3, "gives frame\\(s\\) 3 "),
    "animate frame 2, 2 frames": (["--task=animate", "--frame_index=2"], 2, "gives frame\\(s\\) 2 "),
    "predict, 2 frames": (["--task=predict"], 2, None),        # exactly the given frames: runs, no metrics
    "animate, 1 frame": (["--task=animate"], 1, None),
    "predict, 3 frames": (["--task=predict"], 3, None),        # partial truth is no truth
}


@pytest.mark.parametrize("name", SHORT_CONTEXT)
def test_a_short_context_clip_is_checked_before_padding_and_never_scored(tmp_path, predict_ckpt, name, capsys):
    flags, frames, refused = SHORT_CONTEXT[name]
    clip, out = _clip(tmp_path / "clip.npy", frames), tmp_path / "s"
    args = sample_args(predict_ckpt, out, f"--context={clip}", *flags)
    if refused:
        with pytest.raises(UserError, match=rf"^{re.escape(str(clip))} has {frames} frame\(s\), but .*{refused}"):
            sample_script.main(args)
        return
    sample_script.main(args)
    assert not (out / "metrics.json").exists()
    assert f"no PSNR/SSIM: {clip} has {frames} of the model's 4 frames" in capsys.readouterr().out


def test_a_full_context_clip_is_scored(tmp_path, predict_ckpt):
    out = tmp_path / "s"
    sample_script.main(sample_args(predict_ckpt, out, f"--context={_clip(tmp_path / 'clip.npy', 6)}",
                                   "--task=predict"))
    assert json.loads((out / "metrics.json").read_text())["task"] == "predict"


CONTEXT_FILES = {
    "missing": (lambda p: None, FileNotFoundError, "does not exist"),
    "wrong size": (lambda p: _clip(p, 4, size=12), UserError, "12x12, but the model works on 3 x 16x16"),
    "not a video": (lambda p: p.write_text("frames"), UserError, "could not read"),
}


@pytest.mark.parametrize("name", CONTEXT_FILES)
def test_context_file_problems_are_user_errors(tmp_path, predict_ckpt, name):
    make, kind, says = CONTEXT_FILES[name]
    clip = tmp_path / "clip.npy"
    make(clip)
    with pytest.raises(kind, match=says) as info:
        sample_script.main(sample_args(predict_ckpt, tmp_path / "s", f"--context={clip}", "--task=predict"))
    assert isinstance(info.value, UserError)


# ------------------------------------------------------------------------------ guidance, NaN frame rate

def test_context_guidance_on_a_model_never_trained_without_context_is_refused(tmp_path, predict_ckpt):
    with pytest.raises(UserError, match="--guidance=context with --cfg_scale=2.0.*--context_dropout=0.*untrained"):
        sample_script.main(sample_args(predict_ckpt, tmp_path / "s", "--task=predict", "--cfg_scale=2",
                                       "--guidance=context"))
    sample_script.main(sample_args(predict_ckpt, tmp_path / "s", "--task=predict", "--cfg_scale=1",
                                   "--guidance=context"))  # no guidance: fine


@pytest.mark.parametrize("masking,context_dropout,label_dropout,guidance,refused", [
    ("predict", 0.0, 0.1, "context", True),
    ("predict", 0.1, 0.1, "context", False),
    ("vdt", 0.0, 0.1, "context", False),      # VDT's mixture includes unconditional generation
    ("predict", 0.1, 0.0, "label", True),
    ("predict", 0.0, 0.1, "label", False),
])
def test_guidance_needs_its_branch_trained(masking, context_dropout, label_dropout, guidance, refused):
    from nano_videodiff.generation import check_guidance_branch_trained
    cfg = Config()
    cfg.task.masking, cfg.task.context_dropout, cfg.diffusion.label_dropout = masking, context_dropout, label_dropout
    if refused:
        with pytest.raises(UserError, match="untrained"):
            check_guidance_branch_trained(cfg, 2.0, guidance)
    else:
        check_guidance_branch_trained(cfg, 2.0, guidance)
    check_guidance_branch_trained(cfg, 1.0, guidance)  # cfg_scale 1: no guidance, nothing to check


def test_nan_frame_interval_points_at_the_data(tmp_path, monkeypatch):
    import toy_data
    from nano_videodiff.training import batches
    real = toy_data.get_batch

    def nan_intervals(*args, **kwargs):
        batch = real(*args, **kwargs)
        return {**batch, "frame_interval": torch.full_like(batch["frame_interval"], float("nan"))}
    monkeypatch.setattr(batches.toy_data, "get_batch", nan_intervals)
    with pytest.raises(UserError, match="frame_interval.*data") as info:
        train.main(smoke_args(tmp_path / "run", "--max_steps=2"))
    assert "--lr" not in str(info.value)


# ------------------------------------------------------------------------------ error: <message>, exit 2

def _run_script(module, argv, capsys):
    from nano_videodiff.errors import run_script
    status = run_script(module.main, argv)
    return status, capsys.readouterr().err


USER_ERRORS = {
    "unknown flag": (train, ["--config=smoke", "--not_a_key=1"], "unknown config key --not_a_key"),
    "bad type": (train, ["--config=smoke", "--depth=deep"], "--depth expects int"),
    "zero count": (train, ["--config=smoke", "--ckpt_every=0"], "--ckpt_every must be >= 1"),
    "missing checkpoint": (sample_script, ["--ckpt=/no/such/ckpt.pt"], "no checkpoint at /no/such/ckpt.pt"),
    "missing --ckpt": (sample_script, [], "pass --ckpt=PATH"),
}


@pytest.mark.parametrize("name", USER_ERRORS)
def test_user_errors_print_one_line_and_exit_2(name, capsys, monkeypatch, tmp_path):
    module, argv, says = USER_ERRORS[name]
    monkeypatch.chdir(tmp_path)  # default output folders (out/...) must not depend on what the repository holds
    monkeypatch.delenv("NANO_VIDEODIFF_DEBUG", raising=False)
    status, err = _run_script(module, argv, capsys)
    assert status == 2 and err.startswith("error: ") and says in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    status, err = _run_script(module, [*argv, "--debug"], capsys)  # --debug: the traceback too
    assert status == 2 and "Traceback" in err and "error: " in err
    monkeypatch.setenv("NANO_VIDEODIFF_DEBUG", "1")
    status, err = _run_script(module, argv, capsys)
    assert status == 2 and "Traceback" in err


def test_bugs_still_raise():
    from nano_videodiff.errors import run_script

    def buggy(argv):
        raise RuntimeError("a bug")
    with pytest.raises(RuntimeError, match="a bug"):
        run_script(buggy, [])


def test_sample_script_exits_2_with_one_line(tmp_path):
    """The real command line: ``python sample.py`` on a missing checkpoint."""
    proc = subprocess.run([sys.executable, str(ROOT / "sample.py"), f"--ckpt={tmp_path / 'none.pt'}",
                           f"--out_dir={tmp_path / 'samples'}"], cwd=tmp_path,
                          capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert proc.returncode == 2
    assert proc.stderr == f"error: no checkpoint at {tmp_path / 'none.pt'}. Train one with `python train.py " \
                          "--out_dir=DIR` (it writes DIR/ckpt.pt), or pass the right path.\n"
