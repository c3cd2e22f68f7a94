"""Model loading and identity."""

from softprompt.models.identity import ModelIdentity
from softprompt.models.loading import DEFAULT_MODEL, SHORT_NAMES, LoadedModel, load_model

__all__ = ["DEFAULT_MODEL", "SHORT_NAMES", "LoadedModel", "ModelIdentity", "load_model"]
