"""A minimal client of the OpenAI-compatible chat-completions protocol (`POST /chat/completions`).

Ollama, vLLM, llama.cpp's server, LM Studio and the hosted APIs all speak it, so one small
client covers them. It uses httpx from the optional `csext[ai]` group, imported on first use:
the core install never imports it. Every error names the endpoint without credentials and is
passed through `LlmConfig.mask`, so the API key never reaches a terminal or a log.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Protocol

import orjson

from .config import LlmConfig, shown_url
from .errors import EndpointError, NotConfigured

MAX_ANSWER_BYTES = 1024 * 1024
"""An HTTP answer larger than this is refused (a draft is capped far below it anyway)."""

Message = dict[str, str]


class Chat(Protocol):
    """What the drafting loop needs from a model: one answer to a conversation."""

    @property
    def model(self) -> str:
        """The model's name, for the commit message."""
        ...

    @property
    def describe(self) -> str:
        """`model at url`, for the round report and the CHANGELOG (no credentials)."""
        ...

    def complete(self, messages: list[Message]) -> str: ...


@dataclass(frozen=True, slots=True)
class ChatClient:
    config: LlmConfig

    @property
    def endpoint(self) -> str:
        url, _ = self.config.require()
        url = url.rstrip("/")
        return url if url.endswith("/chat/completions") else f"{url}/chat/completions"

    @property
    def model(self) -> str:
        return self.config.require()[1]

    @property
    def describe(self) -> str:
        return f"{self.model} at {shown_url(self.config.url or '')}"

    def complete(self, messages: list[Message]) -> str:
        httpx = import_httpx()
        _, model = self.config.require()
        body = {
            "model": model,
            "messages": messages,
            "temperature": self.config.temperature,
            "stream": False,
        }
        headers = {"Content-Type": "application/json"}
        if self.config.key:
            headers["Authorization"] = f"Bearer {self.config.key}"
        try:
            status, data = self._post(httpx, orjson.dumps(body), headers)
        except httpx.TimeoutException:
            raise self._error(
                f"did not answer within {self.config.timeout:g} s",
                "a slow local model: raise CSEXT_LLM_TIMEOUT (seconds)",
            ) from None
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            raise self._error(
                f"cannot be reached: {exc}", "start the server, or check CSEXT_LLM_URL"
            ) from None
        if status >= 400:
            raise self._error(f"answered HTTP {status}: {_excerpt(data)}", _hint(status))
        return self._content(data)

    def _post(self, httpx: Any, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
        """Status and body, read up to MAX_ANSWER_BYTES and within the timeout overall."""
        deadline = time.monotonic() + self.config.timeout
        timeout = httpx.Timeout(self.config.timeout, connect=min(self.config.timeout, 10.0))
        with (
            httpx.Client(timeout=timeout, follow_redirects=False, trust_env=False) as client,
            client.stream("POST", self.endpoint, content=body, headers=headers) as response,
        ):
            chunks: list[bytes] = []
            size = 0
            for chunk in response.iter_bytes():
                size += len(chunk)
                if size > MAX_ANSWER_BYTES:
                    raise self._error(f"sent more than {MAX_ANSWER_BYTES} bytes; refused")
                if time.monotonic() > deadline:
                    raise httpx.ReadTimeout("overall deadline")
                chunks.append(chunk)
            return response.status_code, b"".join(chunks)

    def _content(self, data: bytes) -> str:
        try:
            answer = orjson.loads(data)
            choice = answer["choices"][0]
            content = choice["message"]["content"]
        except (orjson.JSONDecodeError, KeyError, IndexError, TypeError):
            raise self._error(
                f"did not answer with a chat completion (choices[0].message.content): "
                f"{_excerpt(data)}"
            ) from None
        if not isinstance(content, str) or not content.strip():
            reason = choice.get("finish_reason") if isinstance(choice, dict) else None
            raise self._error(f"answered with an empty message (finish_reason: {reason})")
        return content

    def _error(self, what: str, fix: str | None = None) -> EndpointError:
        message = self.config.mask(f"the model endpoint {self.describe} {what}")
        return EndpointError(message, fix=fix)


def _excerpt(data: bytes) -> str:
    text = data.decode("utf-8", "replace").strip()
    return (text[:300] + "...") if len(text) > 300 else text or "(empty)"


def _hint(status: int) -> str | None:
    if status in (401, 403):
        return "check CSEXT_LLM_API_KEY"
    if status == 404:
        return "check CSEXT_LLM_URL (usually ending in /v1) and CSEXT_LLM_MODEL"
    return None


def import_httpx() -> Any:
    """httpx, or NotConfigured saying how to install it."""
    try:
        import httpx
    except ImportError:
        raise NotConfigured(
            "model-assisted drafting needs the optional client library (httpx)",
            fix="pip install 'csext[ai]'",
        ) from None
    return httpx
