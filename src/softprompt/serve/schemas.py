"""The request and response bodies of the HTTP API, with the ceilings every list and string has
(422 beyond them): a request's size is bounded before any work is done."""

from __future__ import annotations

from typing import Annotated, Literal, Union

from pydantic import BaseModel, Field, StringConstraints, field_validator, model_validator

# Ceilings of the request schema (422 beyond); the server's own, usually smaller, limits
# (max_inputs, max_input_chars: 413) are checked after parsing.
MAX_NAME = 256  # characters of a task, prompt or field name
MAX_TEXT = 100_000  # characters of one input text
MAX_LIST = 1024  # items of `inputs`
MAX_FIELDS = 32  # fields of one input object
MAX_PROMPTS = 64  # members of an ad-hoc ensemble
MAX_LABELS = 64  # per-request label words
MAX_LABEL = 100  # characters of one label word
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")

Name = Annotated[str, StringConstraints(max_length=MAX_NAME)]
Text = Annotated[str, StringConstraints(max_length=MAX_TEXT)]
Input = Union[Text, Annotated[dict[Name, Text], Field(max_length=MAX_FIELDS)]]


class Request_(BaseModel):
    task: Name | None = Field(None, description="A task, prompt (library folder) or ensemble name.", examples=["sst2"])
    prompts: list[Name] | None = Field(
        None, max_length=MAX_PROMPTS, description="An ad-hoc ensemble: prompt names whose answers are combined."
    )
    combine: Literal["mean", "vote"] | None = Field(
        None, description="Ensemble combination (default: the ensemble's, else mean)."
    )
    input: Input | None = Field(None, description="One input: text for the task's first field, or an object of fields.")
    inputs: list[Input] | None = Field(None, max_length=MAX_LIST, description="Several inputs (answered in order).")

    @model_validator(mode="after")
    def _one_target_and_input(self):
        if not self.task and not self.prompts:
            raise ValueError("name a 'task' (task, prompt or ensemble) or give 'prompts'")
        if (self.input is None) == (self.inputs is None):
            raise ValueError("give exactly one of 'input' or 'inputs'")
        if self.inputs is not None and not self.inputs:
            raise ValueError("'inputs' is empty")
        return self

    def items(self) -> list[Input]:
        return [self.input] if self.inputs is None else self.inputs


class ClassifyRequest(Request_):
    length_normalize: bool = Field(False, description="Rank labels by mean rather than total token log-likelihood.")
    labels: list[Annotated[str, StringConstraints(max_length=MAX_LABEL)]] | None = Field(
        None,
        min_length=2,
        max_length=MAX_LABELS,
        description="Rank these words instead of the task's label words (2 to 64 distinct, non-empty); "
        "the answer is one of them.",
        examples=[["good", "bad"]],
    )

    @field_validator("labels")
    @classmethod
    def _distinct_words(cls, words: list[str] | None) -> list[str] | None:
        if words is None:
            return None
        words = [w.strip() for w in words]
        if not all(words):
            raise ValueError("'labels' holds an empty word")
        if len(set(words)) != len(words):
            raise ValueError(f"'labels' repeats a word ({', '.join(sorted({w for w in words if words.count(w) > 1}))})")
        return words


class GenerateRequest(Request_):
    max_tokens: int | None = Field(None, ge=1, description="Most new tokens (default: the task's).")


class MemberLabel(BaseModel):
    prompt: str
    label: str
    scores: dict[str, float]


class Classification(BaseModel):
    label: str
    scores: dict[str, float] = Field(
        description="Per label: log-likelihood (one prompt) or mean probability (ensemble)."
    )
    probabilities: dict[str, float]
    votes: dict[str, int] | None = None
    members: list[MemberLabel] | None = None


class ClassifyResponse(BaseModel):
    task: str
    prompts: list[str]
    combine: str | None
    results: list[Classification]


class Generation(BaseModel):
    text: str
    members: list[dict[str, str]] | None = None


class GenerateResponse(BaseModel):
    task: str
    prompts: list[str]
    results: list[Generation]
