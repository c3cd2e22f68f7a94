"""Train a soft prompt on a frozen model. The loop reads top to bottom in `train`.

Defaults are Lester et al. (2021): Adafactor, constant lr 0.3, weight decay 1e-5,
β2 decay 0.8, no parameter scaling; a 20-token prompt; periodic dev evaluation keeping
the best prompt. One modern addition, on by default (`ema`; 0 turns it off): what is
evaluated and kept is an exponential moving average of the prompt over steps. A constant
lr 0.3 moves each prompt number by about 0.3 a step, far more than the spread of this
kind of model's token embeddings (SmolLM2: std 0.14), so the raw prompt jitters and its dev
score swings by 10 points between evaluations; the average sits at the centre of the jitter.
With `reparam` residual the prompt is the output of a small MLP while training
(reparam.py); the folded (P, H) prompt is what is averaged, evaluated and saved.
`task` may also be a `Mixture` of tasks (SPoT): each example keeps its own task's template
and verbalizer, and the dev score is the mean of the tasks' primary metrics. The output folder holds:
  best/         the best prompt on dev (prompt.safetensors + prompt.json)
  embedding/    the prompt at step embed_step (default 10; 0: none): a task embedding (SPoT)
With `--method model` or `lora` the model's weights train instead (tuning.py: best/ then holds
an empty prompt and best/model/ or best/adapter/); `--method zero-shot` trains nothing and
evaluates the initial prompt once (step 0).
  checkpoint/   the latest state, for --resume
  log.jsonl     one JSON line per logged step / evaluation
  curve.png     training loss and dev metric over steps
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import random
import signal
import threading
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
from tqdm.auto import tqdm

from softprompt import distributed as dp
from softprompt import lock
from softprompt.batching import Encoder, loss_counts, mixture_batches
from softprompt.budget import PROBE_STEPS, TimeBudget
from softprompt.config import Method, TrainConfig, effective_lr, embed_step_for, lr_factor, parse_duration
from softprompt.errors import ConfigError, SoftPromptError
from softprompt.evaluate import evaluate
from softprompt.io import (
    Checkpoint,
    SavedPrompt,
    atomic_write_text,
    load_checkpoint,
    load_prompt,
    recover_dir,
    resolve_prompt_dir,
    save_checkpoint,
    save_prompt,
)
from softprompt.models import memory
from softprompt.models.loading import LoadedModel
from softprompt.plots import plot_curve, read_log
from softprompt.prompt import make_prompt
from softprompt.reparam import PromptParams, make_params
from softprompt.scoring import PromptedLM
from softprompt.tasks.mixture import Mixture, member_metric
from softprompt.tasks.base import Example, Task, dev_sample
from softprompt.tuning import activation_checkpointing, weight_tuning


@dataclass
class TrainResult:
    best: SavedPrompt
    best_step: int
    steps_done: int
    train_examples_per_s: float
    out_dir: Path
    examples_seen: int = 0  # training examples processed by this call (not counting resumed steps)
    budget_steps: int | None = None  # the step count --time-budget set (None: --steps)
    method: str = Method.PROMPT.value
    trainable_params: int = 0
    bytes_per_task: int = 0  # what the result costs to store: its trained tensors in fp32
    peak_memory: int = 0  # bytes: RSS high-water mark, or CUDA max allocated


class PromptAverage:
    """Exponential moving average of the prompt over optimizer steps. The decay ramps up
    as min(decay, (1 + t) / (10 + t)), so early steps are not dominated by the initialisation."""

    def __init__(self, prompt: torch.Tensor, decay: float) -> None:
        self.decay = decay
        self.value = prompt.detach().clone()

    def update(self, prompt: torch.Tensor, step: int) -> None:
        d = min(self.decay, (1 + step) / (10 + step))
        with torch.no_grad():
            self.value.mul_(d).add_(prompt.detach(), alpha=1 - d)


def make_optimizer(params, cfg: TrainConfig) -> torch.optim.Optimizer:
    lr = effective_lr(cfg)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=cfg.weight_decay)
    from transformers.optimization import Adafactor

    return Adafactor(
        params,
        lr=lr,
        weight_decay=cfg.weight_decay,
        decay_rate=-0.8,
        clip_threshold=1.0,
        scale_parameter=False,
        relative_step=False,
        warmup_init=False,
    )


def initial_prompt(lm: LoadedModel, task: Task | Mixture, cfg: TrainConfig) -> tuple[torch.Tensor, str]:
    init = cfg.init
    labelled = isinstance(task, Task) and task.is_classification  # a mixture has no one set of labels
    if init == "auto":
        init = "file" if cfg.init_from else ("text" if cfg.init_text else ("labels" if labelled else "vocab"))
    weight = None
    if init == "file":
        if not cfg.init_from:
            raise ConfigError("--init file needs --init-from PROMPT_DIR")
        source = load_prompt(resolve_prompt_dir(Path(cfg.init_from)))
        lm.identity.check_compatible(source.model, f"--init-from {cfg.init_from}")
        weight = source.weight
    emb = lm.model.get_input_embeddings()
    scale = float(getattr(emb, "embed_scale", 1.0))  # Gemma scales embeddings by sqrt(H)
    weight = make_prompt(
        cfg.prompt_length,
        init,
        emb.weight.detach().float() * scale,
        lm.tokenizer,
        seed=cfg.seed,
        labels=list(task.verbalizer.values()) if labelled else (),
        text=cfg.init_text,
        weight=weight,
    )
    return weight, init


def prompt_digest(weight: torch.Tensor) -> str:
    """A digest of a prompt's numbers. Resume compares the initial prompt's digest for an
    --init-from run, not the folder's path: a `builtin:NAME` entry resolves to wherever the
    package is installed."""
    return hashlib.sha256(weight.detach().float().cpu().contiguous().numpy().tobytes()).hexdigest()[:16]


def check_trainable(lm: LoadedModel, prompt: torch.nn.Parameter) -> None:
    """The model is frozen: exactly P×H numbers train."""
    frozen = sum(p.numel() for p in lm.model.parameters() if p.requires_grad)
    if frozen or prompt.numel() != prompt.shape[0] * lm.hidden_size:
        raise RuntimeError(
            f"expected only the {prompt.shape[0]}x{lm.hidden_size} prompt to train; {frozen} model weights would train"
        )


def train(
    lm: LoadedModel,
    task: Task | Mixture,
    cfg: TrainConfig,
    out_dir: Path,
    *,
    train_examples: list[Example] | None = None,
    dev_examples: list[Example] | None = None,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    context: dp.Context | None = None,
    in_place: bool = False,
) -> TrainResult:
    """Train a prompt for `task` (or a mixture of tasks) on the frozen `lm` and keep the best on dev.

    Under torchrun (a process group initialised, see `distributed.init_from_env`) the workers
    train one prompt data-parallel: each takes its rows of every global batch of
    `cfg.batch_size`, the prompt gradient is summed, dev evaluation is split and gathered,
    and rank 0 alone writes the output folder. The result equals one process's with the
    same settings (up to float rounding), whatever the number of workers; a checkpoint
    written by N workers resumes with any other number. `context` overrides the job
    (`distributed.SINGLE`: train alone even in a process group). `in_place`: with --method model
    or lora, train `lm.model` itself rather than a copy (the caller gives `lm` up; see tuning.py).
    While it runs, `out_dir/.lock` names the process writing the folder: a second train() on
    the same folder is refused (softprompt/lock.py).
    """
    ctx = dp.context() if context is None else context
    out_dir = Path(out_dir)
    if lock.contents(out_dir) and not (resume or overwrite):
        raise ConfigError(f"{out_dir}: output folder is not empty (use --resume to continue or --overwrite to replace)")
    # Rank 0 writes the folder: it alone holds the lock (a second job on the same --out is refused).
    with lock.hold(out_dir) if ctx.main else contextlib.nullcontext():
        return _train(lm, task, cfg, out_dir, train_examples, dev_examples, resume, progress, ctx, in_place)


def _train(
    lm: LoadedModel,
    task: Task | Mixture,
    cfg: TrainConfig,
    out_dir: Path,
    train_examples: list[Example] | None,
    dev_examples: list[Example] | None,
    resume: bool,
    progress: bool,
    ctx: dp.Context,
    in_place: bool,
) -> TrainResult:
    """train()'s body, run while the output folder is locked."""
    budget = TimeBudget(parse_duration(cfg.time_budget), cfg.eval_every, _clock) if cfg.time_budget else None
    if resume:  # a kill inside a folder swap left the last complete version aside: put it back
        if ctx.main:
            for name in ("checkpoint", "best", "embedding"):
                recover_dir(out_dir / name)
        dp.barrier(ctx, "start-up")  # restored before any worker looks for the checkpoint
    if resume and not (out_dir / "checkpoint").is_dir():
        raise ConfigError(f"{out_dir}: no checkpoint/ to resume from")
    dp.barrier(ctx, "start-up")  # every worker has checked the folder before rank 0 writes to it
    torch.manual_seed(cfg.seed)
    parts = _task_data(task, cfg, train_examples, dev_examples)  # [(task, train, dev)], one per member task
    n_train, n_dev = sum(len(p[1]) for p in parts), sum(len(p[2]) for p in parts)

    enc = Encoder(lm.tokenizer, lm.is_encoder_decoder, cfg.max_input_tokens, cfg.truncation)
    per_task = [[enc.encode(t, e) for e in train_set] for t, train_set, _ in parts]  # validates labels up front
    encoded = [e for rows in per_task for e in rows]
    sharded = ctx.active and dp.is_sharded(lm.model)  # FSDP2 (`distributed.shard_model`): every worker runs every row
    split = ctx.active and not sharded  # data parallel: each worker takes its rows of every batch
    tuning = weight_tuning(lm, cfg, in_place)  # model / LoRA: the weights that train (a copy unless in_place)
    if tuning is not None and ctx.active:
        raise ConfigError(f"--method {cfg.method}: trains in one process (not under torchrun or --nproc)")
    lm = tuning.lm if tuning is not None else lm
    # Activation checkpointing drops transformers' key/value caches in training: the plain path needs none.
    plm = PromptedLM(lm, fast=cfg.fast and not sharded and not cfg.activation_checkpointing)
    zero_shot = cfg.method == Method.ZERO_SHOT.value  # nothing trains: evaluated at step 0 only
    if tuning is None:
        weight, init = initial_prompt(lm, task, cfg)
        digest = prompt_digest(weight) if init == "file" else None  # the start, already loaded above
        params = make_params(weight.to(lm.device), cfg.reparam, cfg.reparam_bottleneck, cfg.seed)  # the trained numbers
        check_trainable(lm, params.base)
        trained = list(params.parameters())
        n_trainable = 0 if zero_shot else sum(p.numel() for p in trained)
        stored = 4 * params.base.numel()  # the fp32 (folded) prompt
    else:  # the weights train; inputs are scored without a prompt: an empty (0, H) one
        init, digest = "none", None
        params = make_params(torch.zeros(0, lm.hidden_size, device=lm.device), "none", cfg.reparam_bottleneck)
        params.requires_grad_(False)
        trained, n_trainable, stored = tuning.parameters(), tuning.trainable_params, tuning.bytes_per_task
    optimizer = make_optimizer(trained, cfg)
    # `cfg` read when called: a time budget fixes cfg.steps after the first steps.
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, cfg.warmup_steps, cfg.steps, cfg.decay)
    )
    # The average is of the folded (P, H) prompt, the one evaluated: a plain prompt whatever --reparam.
    average = PromptAverage(params.fold(), cfg.ema) if cfg.ema and tuning is None else None
    start, best_score, best_step, evals_since_best = 0, -math.inf, 0, 0
    if resume:
        run = {**asdict(cfg), "task": task.name, "train_examples": n_train, "init_from_digest": digest}
        start, best_score, best_step, evals_since_best = _restore(
            out_dir / "checkpoint", params, optimizer, schedule, average, run, tuning
        )
    if ctx.active:  # every worker starts from rank 0's prompt (and average), bit for bit
        with torch.no_grad():
            for p in params.parameters():
                dp.broadcast_(p.data, ctx)
            if average is not None:
                dp.broadcast_(average.value, ctx)
        dp.barrier(ctx, "start-up")  # every worker has read the checkpoint before rank 0 writes
    if ctx.main:
        out_dir.mkdir(parents=True, exist_ok=True)
    log = _Log(out_dir / "log.jsonl", keep_until=start if resume else -1) if ctx.main else _NoLog()

    def kept() -> torch.Tensor:  # the prompt that is evaluated and saved
        return average.value if average is not None else params.fold()

    def snapshot(metrics: dict, weight: torch.Tensor) -> SavedPrompt:
        return SavedPrompt(
            weight=weight.cpu().clone(),
            model=lm.identity if tuning is None else tuning.identity(),
            task=task.meta(),
            init=init,
            training={
                **asdict(cfg),
                "init": init,
                "requested_init": cfg.init,
                "init_from_digest": digest,
                "effective_lr": effective_lr(cfg),
                "train_examples": n_train,
                "dev_examples": n_dev,
                "trainable_params": n_trainable,
                "bytes_per_task": stored,
            },
            metrics=metrics,
            extra={} if cfg.method == Method.PROMPT.value else {"method": cfg.method},
        )

    write_weights = tuning.write if tuning is not None else None

    rng = random.Random(cfg.seed)
    lengths = [[len(e.input_ids) + len(e.target_ids) for e in rows] for rows in per_task]
    cap = task.cap if isinstance(task, Mixture) else None
    stream = mixture_batches(lengths, cap, cfg.batch_size, rng)  # one task: plain bucketed batches
    for _ in range(start * cfg.grad_accum):  # replay the data order up to the checkpoint
        next(stream)
    if budget is not None and not zero_shot:  # steps are set after PROBE_STEPS timed ones (`plan` below)
        cfg = replace(cfg, steps=start + PROBE_STEPS)
    n_eval = sum(len(dev) for _, _, dev in parts)
    # 0: no task embedding
    embed_at = embed_step_for(cfg.steps if budget is None else 10**9, cfg.embed_step, cfg.warmup_steps, cfg.decay)
    if tuning is not None:
        embed_at = 0  # weights have no task embedding
    bar = tqdm(
        total=0 if zero_shot else cfg.steps, initial=start, desc=f"train {task.name}", unit="step", disable=not (progress and ctx.main)
    )
    seen, train_time, step = 0, 0.0, start  # examples/s counts training steps only, not dev evaluation
    planned: int | None = None

    def plan(evaluated: bool) -> None:  # --time-budget: fix the step count from the measured speed
        nonlocal cfg, planned
        planned = budget.plan(step, n_eval, cfg.batch_size, evaluated)
        planned = dp.broadcast_object(planned, ctx)  # every worker stops at rank 0's step
        cfg = replace(cfg, steps=planned)
        bar.total = planned
        note = {"time_budget": cfg.time_budget, "s_per_step": budget.step_s, "s_per_eval": budget.eval_s}
        log.write({"step": step, "planned_steps": planned, **note})

    stop = _StopRequest()  # Ctrl-C / SIGTERM in one process: finish the step, checkpoint, stop
    with (
        dp.stop_on_sigterm(ctx),
        stop.catch() if not ctx.active else contextlib.nullcontext(),
        activation_checkpointing(lm.model, cfg.activation_checkpointing),
    ):
        while not zero_shot and step < cfg.steps:
            step += 1
            started = _clock()
            optimizer.zero_grad(set_to_none=True)
            loss_sum = 0.0
            for _ in range(cfg.grad_accum):
                rows = next(stream)
                # Data-parallel: this worker's rows, their loss weighted as a share of the global batch's.
                mine, whole = (dp.shard(rows, ctx), loss_counts([encoded[i] for i in rows])) if split else (rows, None)
                if mine:
                    batch = enc.collate([encoded[i] for i in mine]).to(lm.device)
                    loss = plm.loss(params(), batch, cfg.loss, cfg.length_normalize, whole) / cfg.grad_accum
                else:  # fewer rows than workers: a zero share that still gives the prompt a gradient
                    loss = params().sum() * 0.0
                loss.backward()
                loss_sum += loss.item()
                seen += len(rows)
            if split:
                # The global batch's gradient and loss.
                loss_sum = dp.all_reduce_grad(list(params.parameters()), loss_sum, ctx)
            optimizer.step()
            schedule.step()
            prompt = params.fold()  # (P, H), this step's prompt
            if average is not None:
                average.update(prompt, step)
            train_time += _clock() - started
            rate = seen / train_time
            bar.set_postfix(loss=f"{loss_sum:.3f}", ex_s=f"{rate:.1f}")
            bar.update(1)
            log.write({"step": step, "loss": loss_sum, "lr": schedule.get_last_lr()[0], "examples_per_s": rate})
            if budget is not None:
                budget.record_step(_clock() - started)
                if planned is None and step == start + PROBE_STEPS:
                    plan(evaluated=False)
                    embed_at = embed_step_for(cfg.steps, cfg.embed_step, cfg.warmup_steps, cfg.decay)
                    if ctx.main:
                        bar.write(f"--time-budget {cfg.time_budget}: {budget.step_s:.2f} s/step, {cfg.steps} steps")
            if step == embed_at and ctx.main:  # an early prompt stands for the task (SPoT task embedding)
                save_prompt(out_dir / "embedding", snapshot({"step": step}, prompt))  # the raw prompt
            metrics = None
            if (step % cfg.eval_every == 0 or step == cfg.steps) and not stop.signal:
                eval_started = _clock()
                metrics, evaluated = _evaluate(plm, kept(), parts, cfg, ctx if split else dp.SINGLE)
                if budget is not None:
                    budget.record_eval(_clock() - eval_started)
                    plan(evaluated=True)
                score = metrics[task.metrics[0]]
                log.write({"step": step, "eval": metrics, "dev_examples": evaluated})
                if ctx.main:
                    bar.write(f"step {step}: dev " + ", ".join(f"{k} {100 * v:.2f}" for k, v in metrics.items()))
                if score > best_score:
                    best_score, best_step, evals_since_best = score, step, 0
                    if ctx.main:
                        best_meta = {**metrics, "step": step, "dev_examples": evaluated}
                        save_prompt(out_dir / "best", snapshot(best_meta, kept()), also=write_weights)
                else:
                    evals_since_best += 1
            if ctx.main and (metrics is not None or step % cfg.checkpoint_every == 0 or stop.signal):
                counters = {
                    "step": step,
                    "best_score": best_score,
                    "best_step": best_step,
                    "evals_since_best": evals_since_best,
                }
                save_checkpoint(
                    out_dir / "checkpoint",
                    Checkpoint(
                        snapshot(metrics or {}, prompt),
                        optimizer.state_dict(),
                        schedule.state_dict(),
                        counters,
                        average.value if average is not None else None,
                        _reparam_state(params),
                        tuning.state() if tuning is not None else None,
                    ),
                )
            if stop.signal:
                bar.close()
                raise Interrupted(
                    f"stopped by {stop.signal} after step {step}; {out_dir}/checkpoint holds it "
                    "(continue with --resume)"
                )
            if metrics is not None and cfg.patience and evals_since_best >= cfg.patience:
                if ctx.main:
                    bar.write(f"early stop: no dev improvement in {cfg.patience} evaluations")
                break
    bar.close()
    if zero_shot:  # zero-shot: the initial prompt, evaluated once
        metrics, evaluated = _evaluate(plm, kept(), parts, cfg, ctx if split else dp.SINGLE)
        log.write({"step": 0, "eval": metrics, "dev_examples": evaluated})
        if ctx.main:
            save_prompt(out_dir / "best", snapshot({**metrics, "step": 0, "dev_examples": evaluated}, kept()))
    if ctx.main:
        plot_curve(out_dir / "log.jsonl", out_dir / "curve.png", task.metrics[0])
    dp.barrier(ctx, "the end of training")  # best/ is written before any worker reads it
    return TrainResult(
        load_prompt(out_dir / "best", weights_ok=True),
        best_step,
        step,
        seen / max(train_time, 1e-9),
        out_dir,
        seen,
        planned,
        cfg.method,
        n_trainable,
        stored,
        memory.peak(lm.device),
    )


def _task_data(
    task: Task | Mixture, cfg: TrainConfig, train_examples: list[Example] | None, dev_examples: list[Example] | None
) -> list[tuple[Task, list[Example], list[Example]]]:
    """(task, train, dev) per member task, each capped by --max-train / --max-eval (seeded samples)."""
    tasks = task.tasks if isinstance(task, Mixture) else (task,)
    if isinstance(task, Mixture) and (train_examples is not None or dev_examples is not None):
        raise ConfigError(f"task {task.name}: a mixture loads each task's own examples")
    parts = []
    for t in tasks:
        train_set = train_examples if train_examples is not None else t.load("train")
        dev_set = dev_examples if dev_examples is not None else t.load("dev")
        if cfg.min_train_words:
            train_set = _long_enough(t, train_set, cfg.min_train_words)
        if cfg.max_train:
            train_set = random.Random(cfg.seed).sample(train_set, min(cfg.max_train, len(train_set)))
        dev_set = dev_sample(dev_set, cfg.max_eval)
        parts.append((t, train_set, dev_set))
    return parts


def _long_enough(task: Task, examples: list[Example], min_words: int) -> list[Example]:
    """The examples whose input fields hold at least `min_words` words together (--min-train-words)."""
    kept = [e for e in examples if sum(len(e.fields[f].split()) for f in task.template_fields) >= min_words]
    if not kept:
        raise ConfigError(f"task {task.name}: no training example has {min_words} words or more (--min-train-words)")
    return kept


def _evaluate(
    plm: PromptedLM, prompt: torch.Tensor, parts, cfg: TrainConfig, ctx: dp.Context = dp.SINGLE
) -> tuple[dict[str, float], int]:
    """Dev metrics and the number of examples scored. A mixture reports each task's metrics
    as "task/metric" and, as "mean", the mean of the tasks' primary metrics."""
    cut = {"max_input_tokens": cfg.max_input_tokens, "truncation": cfg.truncation}
    results = [
        evaluate(plm, prompt, t, dev, cfg.eval_batch_size, cfg.length_normalize, ctx=ctx, **cut) for t, _, dev in parts
    ]
    if len(results) == 1:
        return results[0].metrics, results[0].examples
    primary = [r.metrics[t.metrics[0]] for r, (t, _, _) in zip(results, parts)]
    metrics = {"mean": sum(primary) / len(primary)}
    metrics.update({member_metric(r.task, k): v for r in results for k, v in r.metrics.items()})
    return metrics, sum(r.examples for r in results)


_clock = time.perf_counter  # the clock of --time-budget (tests stub it)


class Interrupted(SoftPromptError):
    """Training was stopped by Ctrl-C or SIGTERM after writing a checkpoint (one line; exit 2)."""


class _StopRequest:
    """Turns Ctrl-C (SIGINT) and SIGTERM into a request the loop honours after the current
    step: checkpoint, then stop. A second signal while stopping ends the process at once."""

    def __init__(self) -> None:
        self.signal: str | None = None

    @contextlib.contextmanager
    def catch(self):
        if threading.current_thread() is not threading.main_thread():
            yield  # signal handlers can only be set from the main thread
            return

        def handler(signum, frame):
            if self.signal:  # asked twice: stop now
                raise KeyboardInterrupt
            self.signal = signal.Signals(signum).name

        previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for s, h in previous.items():
                signal.signal(s, h)


class _NoLog:
    """The log of a worker other than rank 0: writes nothing."""

    def write(self, record: dict) -> None:
        pass


class _Log:
    """Append-only JSONL log; on resume, lines after the checkpoint's step are dropped."""

    def __init__(self, path: Path, keep_until: int) -> None:
        self.path = path
        if keep_until >= 0 and path.exists():
            kept = [r for r in read_log(path) if r["step"] <= keep_until]  # a torn last line is dropped
            atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in kept))
        elif keep_until < 0:
            path.write_text("")

    def write(self, record: dict) -> None:
        with open(self.path, "a") as handle:
            handle.write(json.dumps(record) + "\n")


# Settings that shape the training trajectory: a resumed run must use the interrupted run's.
# (--steps may grow; evaluation settings may change.)
RESUME_MUST_MATCH = (
    "task",
    "method",
    "lora_rank",
    "lora_alpha",
    "lora_targets",
    "seed",
    "batch_size",
    "grad_accum",
    "loss",
    "optimizer",
    "lr",
    "weight_decay",
    "warmup_steps",
    "decay",
    "reparam",
    "reparam_bottleneck",
    "max_train",
    "min_train_words",
    "max_input_tokens",
    "truncation",
    "length_normalize",
    "init",
    "init_text",
    "init_from",
    "train_examples",
    "init_from_digest",  # the --init-from prompt's numbers: the same folder may hold a rebuilt prompt
)


def _reparam_state(params: PromptParams) -> dict[str, torch.Tensor] | None:
    """What a checkpoint keeps beyond the (folded) prompt: None when the prompt is the only parameter."""
    named = dict(params.named_parameters())
    return None if list(named) == ["base"] else {k: v.detach() for k, v in named.items()}


def _restore(
    path: Path, params: PromptParams, optimizer, schedule, average: PromptAverage | None, run: dict, tuning=None
) -> tuple[int, float, int, int]:
    """Load the checkpoint at `path` into the prompt, optimizer, schedule and average of this run,
    after checking that `run` (this run's settings) matches the interrupted run's."""
    checkpoint = load_checkpoint(path)
    saved_run = {**checkpoint.prompt.training, "task": (checkpoint.prompt.task or {}).get("name")}
    if "requested_init" in saved_run:  # "init" itself is the resolved one (auto -> labels)
        saved_run["init"] = saved_run["requested_init"]
    else:
        saved_run.pop("init", None)
    if saved_run.get("init_from_digest") and saved_run["init_from_digest"] == run.get("init_from_digest"):
        saved_run.pop("init_from", None)  # the same init prompt, perhaps at another path (builtin:NAME)
    for key in RESUME_MUST_MATCH:
        if key in saved_run and saved_run[key] != run.get(key):
            flags = {"task": "--task", "train_examples": "training data", "init_from_digest": "an --init-from prompt of digest"}
            flag = flags.get(key, "--" + key.replace("_", "-"))
            raise ConfigError(
                f"{path}: the interrupted run used {flag} {saved_run[key]!r}, this one {run.get(key)!r} "
                f"(resume with the same setting, or start a new --out)"
            )
    saved, prompt = checkpoint.prompt.weight, params.base
    if saved.shape != prompt.shape:
        raise ConfigError(
            f"{path}: checkpoint prompt is {saved.shape[0]}x{saved.shape[1]}, this run's is "
            f"{prompt.shape[0]}x{prompt.shape[1]} (resume with the same --prompt-length and model)"
        )
    if (average is not None) != (checkpoint.average is not None):
        raise ConfigError(
            f"{path}: checkpoint was {'not ' if average is not None else ''}made with a prompt average "
            "(resume with the --ema of the interrupted run)"
        )
    if (checkpoint.reparam is None) != (_reparam_state(params) is None):
        raise ConfigError(f"{path}: checkpoint was made with another --reparam (resume with the interrupted run's)")
    if tuning is not None:
        tuning.load_state(checkpoint.weights or {}, str(path))
    with torch.no_grad():
        if checkpoint.reparam is None:
            prompt.copy_(saved.to(prompt.device))
        else:
            params.load_state_dict(checkpoint.reparam)
        if average is not None:
            average.value.copy_(checkpoint.average.to(prompt.device))
    optimizer.load_state_dict(checkpoint.optimizer)
    schedule.load_state_dict(checkpoint.schedule)
    c = checkpoint.counters
    return c["step"], c["best_score"], c["best_step"], c["evals_since_best"]
