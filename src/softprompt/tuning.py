"""Model tuning and LoRA: the baselines that train the model's own weights, by the same loop.

`train()` trains a prompt by default; with `--method model` or `--method lora` it asks
`weight_tuning(lm, cfg)` for a `WeightTuning`: a copy of the model whose weights train (the
loaded model stays frozen and untouched, so one load serves a study's cells), the parameters
to optimise, their state for checkpoints, and how the result is written into the best/ folder.
With `in_place=True` the caller gives the loaded model up and its own weights train, without
the copy: what lets `train --method model` hold a 1.5B model in fp32 on a 24 GiB machine.
Everything else (tasks, templates, batching, rank-classification loss, evaluation, seeds,
data order, eval mode: no dropout) is the prompt method's: such a run scores with an empty
(0, H) prompt.

  model: every weight trains, in fp32 master weights whatever --precision the frozen model
         has (bf16 weights would lose small updates); best/model/ is a Hugging Face model
         folder (safetensors, config, tokenizer) that `--model` and `eval` load.
  lora:  PEFT `LoraConfig` adapters (rank 8 on every linear projection by default, fp32)
         over the frozen weights in their precision; best/adapter/ is a PEFT adapter folder
         (adapter_model.safetensors + adapter_config.json).

`attach(lm, folder)` gives `eval`/`predict` the model a best/ folder was evaluated with.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
from pathlib import Path

import torch
from torch import nn

from softprompt.config import Method, TrainConfig
from softprompt.errors import ConfigError
from softprompt.io import read_json
from softprompt.models.identity import ModelIdentity, fingerprint_embeddings
from softprompt.models.loading import LoadedModel

MODEL_DIR = "model"  # inside best/: the tuned model (--method model)
ADAPTER_DIR = "adapter"  # inside best/: the LoRA adapter (--method lora)


def unique_parameters(module: nn.Module, trainable_only: bool = False) -> list[nn.Parameter]:
    """Parameters of `module`, tied ones once."""
    return [p for p in module.parameters() if p.requires_grad or not trainable_only]


class WeightTuning:
    """Weights of a copy of the model that train (see the module docstring).

    Attributes:
        lm: The model that trains and is evaluated (a copy; `lm.model` is left as it was).
        method: "model" or "lora".
    """

    method: str

    def __init__(self, lm: LoadedModel) -> None:
        self.lm = lm

    def parameters(self) -> list[nn.Parameter]:
        return unique_parameters(self.lm.model, trainable_only=True)

    @property
    def trainable_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    @property
    def bytes_per_task(self) -> int:
        """What one task's result costs to store: its trained tensors, saved in fp32."""
        return 4 * self.trainable_params

    def state(self) -> dict[str, torch.Tensor]:
        """The trained weights by name (for checkpoints)."""
        return {n: p.detach() for n, p in self.lm.model.named_parameters() if p.requires_grad}

    def load_state(self, tensors: dict[str, torch.Tensor], where: str) -> None:
        params = dict(self.lm.model.named_parameters())
        names = {n for n, p in params.items() if p.requires_grad}
        if set(tensors) != names:
            raise ConfigError(f"{where}: the checkpoint's weights are not this run's (resume with the same --method)")
        with torch.no_grad():
            for name, value in tensors.items():
                params[name].copy_(value.to(params[name].device, params[name].dtype))

    def identity(self) -> ModelIdentity:
        """The identity recorded with the result: the model it is evaluated on."""
        return self.lm.identity

    def write(self, folder: Path) -> None:
        """Write the trained weights into the best/ (or checkpoint prompt) folder `folder`."""
        raise NotImplementedError


class ModelTuning(WeightTuning):
    method = Method.MODEL.value

    def __init__(self, lm: LoadedModel, in_place: bool = False) -> None:
        model = (lm.model if in_place else copy.deepcopy(lm.model)).float()  # fp32 master weights
        model.requires_grad_(True)
        super().__init__(dataclasses.replace(lm, model=model, dtype=torch.float32))

    def identity(self) -> ModelIdentity:
        # The embeddings train too: the result is used with the model it holds, fingerprinted as such.
        weight = self.lm.model.get_input_embeddings().weight
        base = self.lm.identity
        return ModelIdentity(base.name, fingerprint_embeddings(weight), base.hidden_size, base.architecture)

    def write(self, folder: Path) -> None:
        self.lm.model.save_pretrained(folder / MODEL_DIR, safe_serialization=True)
        self.lm.tokenizer.save_pretrained(folder / MODEL_DIR)


class LoraTuning(WeightTuning):
    method = Method.LORA.value

    def __init__(self, lm: LoadedModel, cfg: TrainConfig, in_place: bool = False) -> None:
        LoraConfig, get_peft_model = _peft("LoraConfig", "get_peft_model")

        targets = cfg.lora_targets
        if targets != "all-linear":
            targets = [t.strip() for t in targets.split(",") if t.strip()]
        config = LoraConfig(r=cfg.lora_rank, lora_alpha=cfg.lora_alpha, lora_dropout=0.0, target_modules=targets)
        model = lm.model if in_place else copy.deepcopy(lm.model)
        try:  # adapters are injected into `model` in place; they are created in fp32 over bf16 weights
            self.peft = get_peft_model(model, config)
        except ValueError as err:
            raise ConfigError(f"--lora-targets {cfg.lora_targets!r}: {str(err).splitlines()[0]}") from None
        super().__init__(dataclasses.replace(lm, model=model))

    @property
    def bytes_per_task(self) -> int:
        return sum(4 * p.numel() for p in self.parameters())

    def write(self, folder: Path) -> None:
        self.peft.save_pretrained(folder / ADAPTER_DIR, safe_serialization=True)


def _peft(*names: str) -> tuple:
    try:
        import peft
    except ImportError:
        raise ConfigError("--method lora needs PEFT: pip install 'softprompt[bench]' (or pip install peft)") from None
    return tuple(getattr(peft, n) for n in names)


def weight_tuning(lm: LoadedModel, cfg: TrainConfig, in_place: bool = False) -> WeightTuning | None:
    """The weights `cfg.method` trains, or None when it trains a prompt (or nothing). `in_place`:
    train `lm.model` itself instead of a copy (the caller will not use `lm` again)."""
    if cfg.method == Method.MODEL.value:
        return ModelTuning(lm, in_place)
    if cfg.method == Method.LORA.value:
        return LoraTuning(lm, cfg, in_place)
    return None


def attach(lm: LoadedModel, folder: Path) -> LoadedModel:
    """`lm` with the LoRA adapter of the best/ folder `folder` injected (in place, frozen), as
    training evaluated it. Model tuning needs nothing here: its folder's model/ is loaded as the model."""
    (PeftModel,) = _peft("PeftModel")
    adapter = Path(folder) / ADAPTER_DIR
    read_json(adapter / "adapter_config.json")  # a missing or broken adapter is one line, not a traceback
    PeftModel.from_pretrained(lm.model, adapter, is_trainable=False)
    lm.model.requires_grad_(False)
    return lm


@contextlib.contextmanager
def activation_checkpointing(model: nn.Module, enabled: bool = True):
    """Within the block, the layers of `model` recompute their activations in the backward pass
    (transformers' gradient checkpointing, non-reentrant, so a frozen model still passes gradients
    to a prompt). Transformers checkpoints a layer only in training mode, so the layers alone are
    flagged as training: their dropout modules stay in eval mode. Restored on exit."""
    from transformers.modeling_layers import GradientCheckpointingLayer

    if not enabled:
        yield
        return
    layers = [m for m in model.modules() if isinstance(m, GradientCheckpointingLayer)]
    if not layers or not getattr(model, "supports_gradient_checkpointing", False):
        raise ConfigError(f"--activation-checkpointing: {type(model).__name__} does not support it")
    # transformers >= 5.24 renamed gradient_checkpointing_* to activation_checkpointing_* (the old names warn).
    if hasattr(model, "activation_checkpointing_enable"):
        enable, disable = model.activation_checkpointing_enable, model.activation_checkpointing_disable
        enable(activation_checkpointing_kwargs={"use_reentrant": False})
    else:
        disable = model.gradient_checkpointing_disable
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    flags = [layer.training for layer in layers]
    for layer in layers:
        layer.training = True  # the flag only, not .train(): submodules (dropout) keep eval mode
    try:
        yield
    finally:
        for layer, flag in zip(layers, flags):
            layer.training = flag
        disable()


def model_folder(folder: Path) -> Path:
    """The tuned model folder inside a model-tuning best/ folder."""
    return Path(folder) / MODEL_DIR
