"""Train a video diffusion model. One readable file, top to bottom (nanoGPT is the model):

    config -> data -> model -> optimizer -> training loop -> checkpoints, logs and preview GIFs

Run it:
    python train.py                                   # the default main job (a few minutes on a laptop CPU)
    python train.py --config=smoke                    # seconds: a tiny model, for tests
    python train.py --config=NAME --depth=6 --lr=5e-4 # any field can be overridden: python train.py --help
    python train.py --out_dir=out/run1 --resume       # continue exactly where a run stopped (or was Ctrl-C'd)
    torchrun --standalone --nproc_per_node=2 train.py # DDP: gloo on CPU, nccl on CUDA

Everything random in a step (which clips, the noise levels, the noise, label dropout) is drawn from a
generator seeded by (seed, step), and the global batch is split across ranks. So a resumed run continues
bit-exactly, and a DDP run sees the same global batch as a single process.

Nothing is lost: checkpoints are written atomically (a kill leaves the previous one), Ctrl-C or SIGTERM saves
at the current step, one run at a time may use an out_dir (a lock), and a folder holding a run is only
replaced with --overwrite. Mistakes in flags or files end with "error: <message>" and exit status 2
(--debug shows the traceback).
"""
from __future__ import annotations

import contextlib
import copy
import os
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn
from tqdm.auto import tqdm

from nano_videodiff.training import planner, presets
from nano_videodiff.training.paper_configs import check_stage_one
from nano_videodiff.training.batches import TrainingData, make_batch  # what one training step sees
from nano_videodiff.errors import ExistingOutput, Interrupted, UserError, run_script
from nano_videodiff.files import FolderLock, remove_orphans
from nano_videodiff.training.checkpoint import (load_checkpoint, load_model_state, remove_stale_temporaries,
                                                save_checkpoint)
from nano_videodiff.training.config import Config
from nano_videodiff.training.distributed import (apply_activation_checkpointing, autocast_context,
                                                 full_optimizer_state_dict, full_state_dict, gathered_parameters,
                                                 grad_scaler, load_full_optimizer_state_dict, micro_batches,
                                                 no_sync_if, wrap_for_training)
from nano_videodiff.hardware import pick_device, resolve_dtype
from nano_videodiff.latent import VAE_FIELDS, autoencoder_is_trained, load_autoencoder_weights, uses_latents
from nano_videodiff.models import count_parameters
from nano_videodiff.training.objectives import build_objective
from nano_videodiff.training.optim import build_optimizer, ema_update, lr_at
from nano_videodiff.training.previews import plot_losses
from nano_videodiff.training.run_log import open_run_log
from nano_videodiff.training.runs import Interrupts, clear_outputs, existing_outputs

# Fields that may change when resuming (they do not change what is computed).
RESUMABLE_CHANGES = {"run.out_dir", "run.device", "run.compile", "run.log_every", "run.ckpt_every",
                     "run.preview_every", "run.num_preview", "run.log", "run.preview_steps", "run.resume",
                     "run.max_minutes", "run.overwrite", "run.stop_at_step", "run.init_from",
                     "run.parallel", "run.activation_checkpointing", "optim.grad_accum_steps",
                     "optim.max_steps",  # a new max_steps stretches the cosine schedule from here on
                     # Where the same data lives now (a moved folder, a cache on another disk) and how many
                     # processes read it: the (seed, step) batch does not depend on either. Latent shards are
                     # checked against the autoencoder's weights and the clip shape when they are opened.
                     "data.data_root", "data.test_data_root", "data.cache_dir", "data.latent_shards",
                     "data.num_workers"}


def rng_state() -> dict:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def init_weights(objective, path) -> None:
    """``--init_from``: load another run's (EMA) weights before training starts.

    A denoiser takes the other run's backbone weights (``Backbone.load_pretrained``: the same architecture
    for fine-tuning; Video LDM takes an image U-Net into its spatial layers); the autoencoder the whole model.
    """
    source = load_checkpoint(path)
    state = source.get("ema", source.get("model"))
    if state is None:
        raise UserError(f"{path} holds no model weights; --init_from needs a checkpoint written by train.py")
    objective.load_pretrained(state, f"--init_from={path}")
    print(f"initialised from {path} (step {source.get('step', '?')})")


def resume_config(cfg, changed, ckpt):
    """The saved config wins; overrides of fields that would change the computation are refused."""
    saved = Config.from_dict(ckpt["config"])
    for key in changed:
        section, name = key.split(".")
        new, old = getattr(getattr(cfg, section), name), getattr(getattr(saved, section), name)
        if new != old and key not in RESUMABLE_CHANGES:
            raise UserError(f"--{name}={new} differs from the checkpoint's {old!r}; a resumed run keeps its "
                            f"config (changeable: {', '.join(sorted(RESUMABLE_CHANGES))}). "
                            "Start a new run with another --out_dir instead.")
        setattr(getattr(saved, section), name, new)
    return saved


# What stage 1 (the autoencoder) takes over from the command line of a two-stage job.
STAGE_ONE_FIELDS = ("data.data_seed", "data.cache_dir", "data.num_train_clips", "data.num_test_clips", "data.scenario",
                    "data.num_frames", "data.height", "data.width", "data.channels", "data.fps", "run.device", "run.dtype",
                    "run.seed", "run.compile", *(f"model.{name}" for name in VAE_FIELDS))


def train_autoencoder_first(cfg, changed) -> None:
    """W.A.L.T's stage 1, run by the same command as stage 2: train the autoencoder if it is not there yet.

    A latent-diffusion preset that names ``autoencoder_preset`` gets its autoencoder trained (or an unfinished
    one resumed) with that preset and the command-line settings both stages share (``STAGE_ONE_FIELDS``):
    into ``--autoencoder``'s folder if it names a ``ckpt.pt``, else (e.g. a missing shipped checkpoint) into
    ``OUT_DIR/autoencoder/``, and ``cfg.data.autoencoder`` then points there. A finished one is used as it is.
    """
    path = Path(cfg.data.autoencoder)
    if not cfg.data.autoencoder_preset or autoencoder_is_trained(path):
        return
    if path.name != "ckpt.pt":  # train.py writes OUT_DIR/ckpt.pt
        path = Path(cfg.run.out_dir) / "autoencoder" / "ckpt.pt"
        print(f"{cfg.data.autoencoder} not found: training the autoencoder into {path.parent} first")
        cfg.data.autoencoder = str(path)
        if autoencoder_is_trained(path):
            return
    shared = [key for key in STAGE_ONE_FIELDS if key in changed]
    args = [f"--config={cfg.data.autoencoder_preset}", f"--out_dir={path.parent}"]
    args += [f"--{key}={getattr(getattr(cfg, key.split('.')[0]), key.split('.')[1])}" for key in shared]
    args += ["--resume"] if path.exists() else []
    print(f"stage 1 of 2: the autoencoder ({cfg.data.autoencoder_preset}) into {path.parent}")
    try:
        main(args)
    except Interrupted:  # saved; this function resumes an unfinished stage 1 by itself
        print("stage 1 interrupted: the same command (without --resume) continues it, then runs stage 2")
        raise
    print(f"stage 2 of 2: diffusion on its latents into {cfg.run.out_dir}")


def main(argv=None) -> dict:
    # ---- config --------------------------------------------------------------------------------------
    argv, plan = planner.plan_request(sys.argv[1:] if argv is None else argv)  # --plan [--world_size=W]
    cfg, changed, wants_help = presets.resolve(argv)
    if wants_help:
        print(presets.help_text(cfg, "train.py") + "\n" + planner.HELP)
        return {}
    cfg.data.autoencoder = cfg.data.autoencoder.format(out_dir=cfg.run.out_dir)  # e.g. "{out_dir}/autoencoder/..."
    cfg.validate()
    if plan is not None:  # memory and compute per device, without training (training/planner.py)
        print(planner.report(cfg, plan))
        return {}
    device = pick_device(cfg.run.device)  # a missing GPU is named now, not after data and model are built

    # ---- one run at a time per out_dir: rank 0 holds its lock until the run ends (files.py) -------------
    master = int(os.environ.get("RANK", 0)) == 0  # torchrun sets RANK
    with FolderLock(cfg.run.out_dir) if master else contextlib.nullcontext():
        if not cfg.run.resume:
            check_stage_one(cfg)  # stage 2 without stage 1: name the command that trains it
        if uses_latents(cfg) and not cfg.run.resume:
            train_autoencoder_first(cfg, changed)  # two-stage jobs: stage 1 first, in its own run (and folder)
        return train(cfg, changed, device)


def resumable_checkpoint(out_dir: Path) -> dict:
    """``--resume``: the folder's checkpoint, with everything a resume needs, or a message that says why not."""
    ckpt_path = out_dir / "ckpt.pt"
    found = existing_outputs(out_dir)
    if not ckpt_path.exists() and found:
        raise UserError(f"{out_dir} holds {', '.join(found)} but no ckpt.pt: that run stopped before its first "
                        "checkpoint, so there is nothing to resume; pass --overwrite instead to start it again")
    ckpt = load_checkpoint(ckpt_path)
    missing = [key for key in ("model", "ema", "optimizer", "step", "config", "rng") if key not in ckpt]
    if missing:
        raise UserError(f"{ckpt_path} cannot be resumed: it holds no {', '.join(missing)} (an exported or shipped "
                        f"checkpoint has only weights); start a new run from it with --init_from={ckpt_path}")
    return ckpt


def new_run_folder(out_dir: Path, overwrite: bool, master: bool) -> None:
    """A new run: refuse a folder that holds a run (a checkpoint, or only its log and previews), unless
    ``--overwrite``, which removes all of it first so that nothing old is left next to the new outputs."""
    found = existing_outputs(out_dir)
    if found and not overwrite:
        raise ExistingOutput(f"{out_dir} holds a run ({', '.join(found)}). Pass --resume to continue it, choose "
                             "another --out_dir, or pass --overwrite to replace it.")
    if found and master:
        clear_outputs(out_dir)
        print(f"--overwrite: removed {', '.join(found)} from {out_dir}")


def train(cfg, changed, device) -> dict:
    # ---- distributed set-up: torchrun sets RANK / WORLD_SIZE / LOCAL_RANK -----------------------------
    distributed = "RANK" in os.environ and "WORLD_SIZE" in os.environ
    rank, world = (int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])) if distributed else (0, 1)
    if distributed:
        if device.type == "cuda":
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    if cfg.optim.batch_size % (world * cfg.optim.grad_accum_steps):
        raise UserError(f"--batch_size={cfg.optim.batch_size} must be divisible by the world size {world} "
                        f"times --grad_accum_steps={cfg.optim.grad_accum_steps}")
    master = rank == 0
    precision = resolve_dtype(cfg.run.dtype, device)  # auto: bf16 only where bf16 matmuls are fast (hardware.py)

    # ---- output folder and resume (runs.py: what a run folder holds) -----------------------------------
    out_dir = Path(cfg.run.out_dir)
    ckpt_path = out_dir / "ckpt.pt"
    ckpt = None
    if master:  # the temporaries of runs killed while writing (files.py)
        remove_stale_temporaries(ckpt_path)
        remove_orphans(out_dir / "log.jsonl")  # trim_log writes it atomically too
    if cfg.run.resume:
        ckpt = resumable_checkpoint(out_dir)
        cfg = resume_config(cfg, changed, ckpt)
    else:
        new_run_folder(out_dir, cfg.run.overwrite, master)
    if master:
        out_dir.mkdir(parents=True, exist_ok=True)
        print(cfg.describe())

    # ---- model, then data (latent diffusion: the frozen autoencoder encodes the training clips once) --------
    torch.manual_seed(cfg.run.seed)
    objective = build_objective(cfg)  # a denoiser of any backbone, or W.A.L.T's stage-1 autoencoder
    model = objective.model           # what the EMA copies and the checkpoint holds
    if uses_latents(cfg) and ckpt is None:  # stage 2: the frozen stage-1 autoencoder (resume: in ckpt)
        load_autoencoder_weights(objective.autoencoder, cfg.data.autoencoder, cfg)
    if cfg.run.init_from and ckpt is None:  # start from another run's weights (not a resume)
        init_weights(objective, cfg.run.init_from)
    objective.to(device)
    start_step = 0
    if ckpt is not None:  # resume: the weights go in before any wrapping (every rank reads the file)
        load_model_state(model, ckpt["model"], source=str(ckpt_path))
        start_step = int(ckpt["step"])
    data = TrainingData(cfg, objective.autoencoder, device)
    ema = copy.deepcopy(model).requires_grad_(False)  # a plain, full copy on every rank
    if ckpt is not None:
        load_model_state(ema, ckpt["ema"], "EMA", str(ckpt_path))
    if master:
        network = objective.network  # what learns
        frozen = count_parameters(network) - count_parameters(network, trainable_only=True)
        print(f"{cfg.model.backbone}: {count_parameters(network) / 1e6:.2f}M parameters"
              + (f" ({frozen / 1e6:.2f}M frozen)" if frozen else "") + "; "
              f"device {device}, dtype {precision}, world size {world}, {objective.describe()}"
              + (" (auto: s*sqrt(T), Snap Video Sec. 3.2)" if cfg.diffusion.sigma_in == 0 else "")
              + (f"; diffusion on latents of {cfg.data.autoencoder}" if uses_latents(cfg) else ""))

    # ---- how a step runs: activation checkpointing, compile, DDP or FSDP, precision (distributed.py) -------
    if cfg.run.activation_checkpointing:  # recompute each block in backward: memory for compute
        apply_activation_checkpointing(objective.network)
    step_module = objective  # the loss is its forward, so DDP (which hooks forward) wraps the whole step
    strategy = cfg.run.parallel if distributed else "none"
    if strategy == "fsdp":  # shard the parameters in place, then compile the sharded module
        step_module = wrap_for_training(step_module, "fsdp", device)
        if cfg.run.compile:
            step_module.compile()
    else:
        if cfg.run.compile:
            step_module = torch.compile(step_module)
        # DDP (or the module itself); it searches for parameters without a gradient only where the backbone
        # declares some (an extra autograd traversal per step otherwise, and a warning on every run)
        step_module = wrap_for_training(step_module, strategy, device, objective.has_unused_parameters)
    # The optimizer comes after the wrapping: FSDP replaces each parameter by this rank's shard.
    o = cfg.optim
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = build_optimizer(trainable, o)
    if ckpt is not None:
        load_full_optimizer_state_dict(model, optimizer, ckpt["optimizer"])
        set_rng_state(ckpt["rng"])
    autocast, scaler = autocast_context(device, precision.name), grad_scaler(device, precision.name)

    # ---- training loop -------------------------------------------------------------------------------
    log_path = out_dir / "log.jsonl"  # run_log.py: log.jsonl (+ TensorBoard with --log=tensorboard), rank 0 only
    run_log = open_run_log(out_dir, cfg.run.log, rank, start_step if ckpt is not None else None)

    def checkpoint(step, extra=None):
        """Every rank takes part (FSDP gathers the shards); rank 0 writes full tensors with plain names."""
        model_state, optimizer_state = full_state_dict(model), full_optimizer_state_dict(model, optimizer)
        if not master:
            return
        save_checkpoint(ckpt_path, {"model": model_state, "ema": ema.state_dict(), "optimizer": optimizer_state,
                                    "step": step, "config": cfg.to_dict(), "rng": rng_state(),
                                    "scheduler": {"name": "warmup_cosine", "lr": lr_at(max(step - 1, 0), o)},
                                    **(extra or {})})
        plot_losses(log_path, out_dir / "loss.png")

    t_start = time.time()
    window_loss, window_videos, window_t0 = 0.0, 0, time.time()
    last_loss = float("nan")
    bar = tqdm(range(start_step, o.max_steps), initial=start_step, total=o.max_steps, disable=not master,
               desc="training", dynamic_ncols=True)
    step, interrupted = start_step, 0
    # Interrupts: Ctrl-C / SIGTERM finish the step, save it there and stop (runs.py). prefetching: with
    # --num_workers, processes decode the clips of the coming steps (the same batches), stopped on leaving.
    with Interrupts() as interrupts, data.prefetching(cfg, start_step, rank, world, device):
        for step in bar:
            lr = lr_at(step, o)
            for group in optimizer.param_groups:
                group["lr"] = lr
            optimizer.zero_grad(set_to_none=True)
            # Gradient accumulation: micro-batch m of this rank is "virtual rank" r * A + m of the global batch
            # (the same samples as without accumulation). Each loss is a mean over its micro-batch, so dividing
            # by A makes the summed gradient that of the whole batch; gradients are averaged across ranks once,
            # after the last micro-batch.
            loss = torch.zeros((), device=device)
            for micro, micro_rank, micro_world in micro_batches(rank, world, o.grad_accum_steps):
                batch = make_batch(cfg, data, step, micro_rank, micro_world, device)
                with no_sync_if(step_module, micro < o.grad_accum_steps - 1):
                    with autocast:
                        micro_loss = step_module(batch) / o.grad_accum_steps
                    if not torch.isfinite(micro_loss):
                        raise UserError(f"loss is {micro_loss.item()} at step {step}: training diverged; lower "
                                        "--lr or try --dtype=fp32 (the last checkpoint is as it was)")
                    scaler.scale(micro_loss).backward()  # fp16 on CUDA scales the loss; otherwise as is
                loss += micro_loss.detach()
            scaler.unscale_(optimizer)
            if o.grad_clip > 0:
                nn.utils.clip_grad_norm_(trainable, o.grad_clip)  # the global norm, also over FSDP shards
            scaler.step(optimizer)
            scaler.update()
            ema_update(ema, gathered_parameters(model), model.buffers(), step, o.ema_halflife)

            reported = loss.detach()
            if distributed:  # log the global-batch loss, not this rank's half
                dist.all_reduce(reported)
                reported /= world
            last_loss = reported.item()
            window_loss += last_loss
            window_videos += o.batch_size
            done = step + 1
            if done % cfg.run.log_every == 0 or done == o.max_steps:
                elapsed = time.time() - window_t0
                n_steps = window_videos // o.batch_size
                row = {"step": done, "loss": window_loss / n_steps, "lr": lr,
                       "videos_per_s": window_videos / max(elapsed, 1e-9), "elapsed_s": time.time() - t_start}
                run_log.scalars(row)
                if master:
                    bar.set_postfix(loss=f"{row['loss']:.4f}", vid_s=f"{row['videos_per_s']:.1f}")
                window_loss, window_videos, window_t0 = 0.0, 0, time.time()
            t_aside = time.time()  # previews and checkpoints do not count towards videos/s
            if master and cfg.run.preview_every > 0 and (done % cfg.run.preview_every == 0 or done == o.max_steps):
                objective.preview(cfg, ema, device, precision.name, out_dir / "previews" / f"step_{done:06d}")
                run_log.preview(done, out_dir / "previews" / f"step_{done:06d}", fps=cfg.data.fps)
            out_of_time = cfg.run.max_minutes > 0 and time.time() - t_start > 60 * cfg.run.max_minutes
            interrupted = interrupts.signal  # Ctrl-C or SIGTERM since the last step (runs.Interrupts)
            if distributed:  # every rank must stop at the same step (a signal may reach only some of them)
                flags = torch.tensor([float(out_of_time), float(interrupted)], device=device)
                dist.all_reduce(flags, op=dist.ReduceOp.MAX)
                out_of_time, interrupted = bool(flags[0].item()), int(flags[1].item())
            stop_here = out_of_time or interrupted or done == cfg.run.stop_at_step
            if (done % cfg.run.ckpt_every == 0 or stop_here) and done < o.max_steps:
                checkpoint(done)
            window_t0 += time.time() - t_aside
            if stop_here:
                if master:
                    print(f"interrupted at step {done}; --resume continues" if interrupted else
                          f"stopping at step {done} (of {o.max_steps}); --resume continues")
                break
        bar.close()
        run_log.close()
        if start_step < o.max_steps and step + 1 == o.max_steps:  # the last step: finish, the final checkpoint
            checkpoint(o.max_steps, objective.finish(cfg, ema, device))  # W.A.L.T stage 1: latent statistics
    if distributed:
        dist.destroy_process_group()
    if interrupted and step + 1 < o.max_steps:  # saved above; the script exits with 128 + the signal number
        raise Interrupted(f"interrupted at step {step + 1}", interrupted)
    if master:
        print(f"done: step {step + 1 if o.max_steps > start_step else start_step}, last loss {last_loss:.4f}, "
              f"{(time.time() - t_start) / 60:.1f} min; outputs in {out_dir}")
    return {"model": model, "ema": ema, "config": cfg, "last_loss": last_loss}


if __name__ == "__main__":
    sys.exit(run_script(main))
