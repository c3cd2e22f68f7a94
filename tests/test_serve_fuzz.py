"""Fuzz the HTTP API: requests generated from its OpenAPI schema (Schemathesis) and from
Hypothesis strategies over the request models with names the library serves (so they reach
the model) never get a 500. Bounded: a fixed number of examples, no shrinking database."""

from __future__ import annotations

import collections
import json

import httpx
import pytest
from helpers import ECHO, TOY, YN, learnable_llama, save_library_prompt
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from softprompt.serve.app import BackgroundServer, create_app

schemathesis = pytest.importorskip("schemathesis")  # the `test` extra installs it

SCHEMA_EXAMPLES = 200
MODEL_EXAMPLES = 120


def fuzz(examples: int) -> settings:
    return settings(
        max_examples=examples, deadline=None, database=None, derandomize=True, suppress_health_check=list(HealthCheck)
    )


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    lm = learnable_llama()
    lib = tmp_path_factory.mktemp("library")
    save_library_prompt(lib, "toy-a", lm, TOY, 4, 1, accuracy=0.5)
    save_library_prompt(lib, "toy-b", lm, TOY, 3, 2, accuracy=0.6)
    save_library_prompt(lib, "yn", lm, YN, 5, 4)
    save_library_prompt(lib, "echo", lm, ECHO, 3, 5)
    (lib / "ensembles.json").write_text(json.dumps({"toy-vote": {"prompts": ["toy-a", "toy-b"], "combine": "vote"}}))
    app = create_app(lm, lib, max_batch=16, max_wait_ms=2, max_inputs=8, max_input_chars=300, max_tokens=20)
    with BackgroundServer(app) as url:
        yield app, url


def _report(capsys, what: str, codes: collections.Counter) -> None:
    with capsys.disabled():
        print(
            f"\nfuzz {what}: {sum(codes.values())} requests generated, {codes[500]} answered 500; statuses {dict(sorted(codes.items()))}"
        )


def test_requests_generated_from_the_openapi_schema_never_get_a_500(served, capsys):
    app, url = served
    schema = schemathesis.openapi.from_dict(app.openapi())
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {(op.method.upper(), op.path) for op in operations} >= {("POST", "/classify"), ("POST", "/generate")}
    codes, failures = collections.Counter(), []

    @fuzz(SCHEMA_EXAMPLES)
    @given(st.one_of(*[op.as_strategy() for op in operations]))
    def send(case):
        response = case.call(base_url=url, timeout=60)
        codes[response.status_code] += 1
        if response.status_code >= 500:
            failures.append((case.method, case.path, case.body, response.text[:300]))

    send()
    _report(capsys, "from the OpenAPI schema", codes)
    assert failures == []
    assert sum(codes.values()) >= SCHEMA_EXAMPLES // 2 and codes[200] > 0  # some reached the model


NAMES = ["toy-a", "toy-b", "yn", "echo", "toy", "toy-vote", "nope", ""]
TEXT = st.text(st.characters(exclude_categories=("Cs",)), max_size=40)  # lone surrogates are not JSON
WORDS = st.lists(
    st.sampled_from(["great", "awful", "movie", "a", "yes", "no", "?", "{x}", "\x00", "é"]), min_size=1, max_size=6
)
PHRASE = st.one_of(WORDS.map(" ".join), TEXT)  # mostly text the tiny tokenizer knows, some arbitrary
INPUT = st.one_of(
    PHRASE, PHRASE, PHRASE, st.dictionaries(st.sampled_from(["sentence", "q", "text", "x"]), PHRASE, max_size=3)
)


@st.composite
def bodies(draw):
    """A /classify or /generate body: mostly well-formed with served names (so it reaches the
    model), with every field now and then missing, malformed or out of range."""
    body = {}

    def rare(k: int) -> bool:  # True about once in k+1 (Hypothesis leans to the first choice)
        return draw(st.sampled_from([False] * k + [True]))

    if not rare(9):
        body["task"] = draw(st.sampled_from(NAMES))
    if rare(7):
        body["prompts"] = draw(st.lists(st.sampled_from(NAMES), max_size=3))
    if draw(st.booleans()):
        body["input"] = draw(INPUT)
    else:
        body["inputs"] = draw(st.lists(INPUT, min_size=draw(st.sampled_from([0, 1, 1, 1])), max_size=10))
    if rare(5):
        body["labels"] = draw(
            st.lists(st.one_of(st.sampled_from(["great", "awful", "yes", "no maybe"]), TEXT), max_size=5)
        )
    if rare(5):
        body["combine"] = draw(st.sampled_from(["mean", "vote", "median"]))
    if draw(st.booleans()):
        body["length_normalize"] = draw(st.booleans())
    if rare(3):
        body["max_tokens"] = draw(st.integers(-2, 12))
    return draw(st.sampled_from(["/classify", "/generate"])), body


def test_requests_over_the_request_models_with_served_names_never_get_a_500(served, capsys):
    app, url = served
    codes, failures = collections.Counter(), []
    with httpx.Client(base_url=url, timeout=60) as http:

        @fuzz(MODEL_EXAMPLES)
        @given(bodies())
        def send(request):
            path, body = request
            response = http.post(path, json=body)
            codes[response.status_code] += 1
            if response.status_code >= 500:
                failures.append((path, body, response.text[:300]))

        send()
    _report(capsys, "over the request models", codes)
    assert failures == []
    assert codes[200] >= MODEL_EXAMPLES // 10 and sum(codes.values()) == MODEL_EXAMPLES
