"""Model loading, identity and precision choice."""

from softprompt.models.identity import ModelIdentity
from softprompt.models.loading import DEFAULT_MODEL, SHORT_NAMES, LoadedModel, load_model
from softprompt.models.precision import PrecisionChoice

__all__ = ["DEFAULT_MODEL", "SHORT_NAMES", "LoadedModel", "ModelIdentity", "PrecisionChoice", "load_model"]
