"""softprompt: soft prompts for frozen language models (Lester et al. 2021; Vu et al., SPoT).

Library API, mirroring the CLI:

    from softprompt import load_model, get_task, TrainConfig, train, evaluate, PromptedLM
    lm = load_model()                                   # embedded SmolLM2-135M
    result = train(lm, get_task("sst2"), TrainConfig(steps=100), "runs/sst2")
    ev = evaluate(PromptedLM(lm), result.best.weight, get_task("imdb"), get_task("imdb").load("dev")[:500])
    train(lm, get_task("sst2"), TrainConfig(method="lora", steps=100), "runs/sst2-lora")   # or "model", "zero-shot"
    run_study("scale", StudyConfig(models="smollm2-135m"), "runs/study", lambda name: load_model(name))
"""

from softprompt.prepend import prepend_prompt
from softprompt.errors import ConfigError, DataError, ModelError, SoftPromptError
from softprompt.evaluate import Evaluation, evaluate, predict
from softprompt.inspect import nearest_tokens
from softprompt.io import SavedPrompt, export_peft, import_peft, load_prompt, save_prompt
from softprompt.models import LoadedModel, ModelIdentity, load_model
from softprompt.prompt import make_prompt
from softprompt.scoring import PromptedLM
from softprompt.tasks import Example, Task, get_task, task_names, user_task
from softprompt.study import StudyConfig, run_study
from softprompt.train import TrainConfig, TrainResult, train

__all__ = [
    "ConfigError",
    "DataError",
    "Evaluation",
    "Example",
    "LoadedModel",
    "ModelError",
    "ModelIdentity",
    "PromptedLM",
    "SavedPrompt",
    "SoftPromptError",
    "StudyConfig",
    "Task",
    "TrainConfig",
    "TrainResult",
    "evaluate",
    "export_peft",
    "get_task",
    "import_peft",
    "load_model",
    "load_prompt",
    "make_prompt",
    "nearest_tokens",
    "predict",
    "prepend_prompt",
    "run_study",
    "save_prompt",
    "task_names",
    "train",
    "user_task",
]
