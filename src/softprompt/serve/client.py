"""A small client for a running `softprompt serve`.

from softprompt.serve.client import Client
c = Client("http://127.0.0.1:8000")
c.classify("sst2", ["a gorgeous, witty film", "fairly tedious"])   # [{"label": ..., "scores": ...}, ...]
c.generate("squad", "question: ... context: ...", max_tokens=16)    # ["..."]
c.predict("sst2", texts)                                          # labels or texts, by the task's kind
"""

from __future__ import annotations

from collections.abc import Sequence

import httpx

from softprompt.errors import SoftPromptError
from softprompt.serve import API_KEY_HEADER


class ServerError(SoftPromptError):
    """The server refused a request (its status and message) or could not be reached."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class Client:
    """Synchronous client. Args: url of the server, api_key (header X-API-Key), timeout in seconds."""

    def __init__(self, url: str, api_key: str | None = None, timeout: float = 120.0) -> None:
        self.url = url.rstrip("/")
        headers = {API_KEY_HEADER: api_key} if api_key else {}
        self._http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _call(self, method: str, path: str, body: dict | None = None) -> dict:
        try:
            response = self._http.request(method, path, json=body)
        except httpx.HTTPError as err:
            raise ServerError(f"{self.url}{path}: cannot reach the server ({err})") from None
        if response.status_code >= 400:
            try:
                detail = response.json().get("detail", response.text)
            except ValueError:
                detail = response.text
            if isinstance(detail, list):  # validation errors
                detail = "; ".join(str(d.get("msg", d)) for d in detail)
            raise ServerError(f"{self.url}{path}: {response.status_code} {detail}", response.status_code)
        return response.json() if "json" in response.headers.get("content-type", "") else {"text": response.text}

    def classify(
        self,
        task: str,
        inputs: str | dict | Sequence[str | dict],
        prompts: Sequence[str] | None = None,
        combine: str | None = None,
        length_normalize: bool = False,
    ) -> list[dict]:
        """Label and per-label scores for each input (a single input gives a one-item list)."""
        body = {"task": task, **_inputs(inputs), "length_normalize": length_normalize}
        if prompts:
            body["prompts"] = list(prompts)
        if combine:
            body["combine"] = combine
        return self._call("POST", "/classify", body)["results"]

    def generate(
        self, task: str, inputs: str | dict | Sequence[str | dict], max_tokens: int | None = None
    ) -> list[str]:
        body = {"task": task, **_inputs(inputs)}
        if max_tokens:
            body["max_tokens"] = max_tokens
        return [r["text"] for r in self._call("POST", "/generate", body)["results"]]

    def predict(self, task: str, inputs: Sequence[str | dict], chunk: int = 32) -> list[str]:
        """Labels (classification) or texts (generation), whichever `task` serves."""
        names = self.prompts()["names"]
        if task not in names:
            raise ServerError(
                f"{self.url}: the server does not serve {task!r} (serves: {', '.join(sorted(names)) or 'nothing'})", 404
            )
        inputs = list(inputs)
        out: list[str] = []
        for start in range(0, len(inputs), chunk):  # the server caps inputs per request
            part = inputs[start : start + chunk]
            if names[task]["kind"] == "classify":
                out += [r["label"] for r in self.classify(task, part)]
            else:
                out += self.generate(task, part)
        return out

    def prompts(self) -> dict:
        return self._call("GET", "/prompts")

    def health(self) -> dict:
        return self._call("GET", "/health")

    def metrics(self) -> str:
        return self._call("GET", "/metrics")["text"]


def _inputs(inputs) -> dict:
    return {"input": inputs} if isinstance(inputs, (str, dict)) else {"inputs": list(inputs)}
