"""Model identity: which frozen model a prompt belongs to.

A soft prompt only means something on the embedding space it was trained in, so each
saved prompt records the model's name and a fingerprint of its input embedding matrix.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass

import torch

from softprompt.errors import ModelError


@dataclass(frozen=True)
class ModelIdentity:
    name: str
    fingerprint: str
    hidden_size: int
    architecture: str

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "ModelIdentity":
        return cls(**{k: data[k] for k in ("name", "fingerprint", "hidden_size", "architecture")})

    def check_compatible(self, saved: "ModelIdentity", what: str) -> None:
        """Refuse a prompt saved for another model, with a one-line reason."""
        if saved.hidden_size != self.hidden_size:
            raise ModelError(
                f"{what} was trained on {saved.name} (hidden size {saved.hidden_size}); "
                f"the loaded model {self.name} has hidden size {self.hidden_size}"
            )
        if saved.fingerprint != self.fingerprint:
            raise ModelError(
                f"{what} was trained on {saved.name} (embeddings {saved.fingerprint}); "
                f"the loaded model {self.name} has different embeddings ({self.fingerprint})"
            )


def fingerprint_embeddings(weight: torch.Tensor) -> str:
    """sha256 (16 hex digits) of the embedding matrix rounded to bf16, shape included."""
    data = weight.detach().to("cpu", torch.bfloat16).contiguous().view(torch.int16).numpy()
    digest = hashlib.sha256(str(tuple(weight.shape)).encode())
    digest.update(data.tobytes())
    return digest.hexdigest()[:16]
