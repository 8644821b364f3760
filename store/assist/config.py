"""Where the model is: `CSEXT_LLM_URL`, `CSEXT_LLM_MODEL`, `CSEXT_LLM_API_KEY`, `CSEXT_LLM_TIMEOUT`.

Each comes from the environment, else from the `_csext` section of the secrets file (the file
`csext secret` uses: mode 0600, outside the registry), so an API key need not sit in a shell
profile:

    _csext:
      CSEXT_LLM_API_KEY: sk-...

(`_csext` cannot be an extension's name, so it never collides with one.) Built once by the
caller (CLI, web) like Settings; the key is a SecretStr, and `mask` scrubs it from any text
csext prints.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from csext.store.secrets import load_secrets

from .errors import NotConfigured

SECRETS_SECTION = "_csext"
"""The secrets file's section for csext's own values (not a valid extension name)."""

HOW_TO_CONFIGURE = (
    "set CSEXT_LLM_URL to an OpenAI-compatible chat-completions endpoint and CSEXT_LLM_MODEL "
    "to a model it serves, e.g. Ollama: CSEXT_LLM_URL=http://127.0.0.1:11434/v1 "
    "CSEXT_LLM_MODEL=qwen2.5-coder:7b; llama.cpp server: http://127.0.0.1:8080/v1; "
    "vLLM: http://127.0.0.1:8000/v1; a hosted API: its /v1 URL with CSEXT_LLM_API_KEY "
    f"(in the environment or the {SECRETS_SECTION} section of the secrets file); "
    "see docs/assist.md"
)


class LlmConfig(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CSEXT_LLM_", extra="ignore", frozen=True)

    url: str | None = None
    """Base URL (`.../v1`) or the full `.../chat/completions` URL."""
    model: str | None = None
    api_key: SecretStr | None = None
    timeout: float = Field(default=300.0, gt=0, le=3600)
    """Seconds one answer may take (local models on a CPU are slow)."""
    temperature: float = Field(default=0.2, ge=0, le=2)

    def require(self) -> tuple[str, str]:
        """(url, model), or NotConfigured saying how to configure them."""
        if not self.url:
            raise NotConfigured("no model endpoint configured for --describe", fix=HOW_TO_CONFIGURE)
        if urlsplit(self.url).scheme not in ("http", "https"):
            raise NotConfigured(
                f"CSEXT_LLM_URL must be an http:// or https:// URL, got {shown_url(self.url)!r}",
                fix="e.g. CSEXT_LLM_URL=http://127.0.0.1:11434/v1",
            )
        if not self.model:
            raise NotConfigured(
                "no model named for --describe",
                fix="set CSEXT_LLM_MODEL to a model the endpoint serves (e.g. qwen2.5-coder:7b "
                "for Ollama; llama.cpp server takes any name)",
            )
        return self.url, self.model

    @property
    def key(self) -> str:
        return self.api_key.get_secret_value() if self.api_key else ""

    def mask(self, text: str) -> str:
        """`text` with the API key (and any password in the URL) replaced by ***."""
        for secret in (self.key, urlsplit(self.url or "").password or ""):
            if len(secret) >= 4:
                text = text.replace(secret, "***")
        return text


def shown_url(url: str) -> str:
    """The URL without user:password@ (safe to print)."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit(parts._replace(netloc=netloc))


def load_llm_config(secrets_file: Path | None = None) -> LlmConfig:
    """The environment first, then the `_csext` section of the secrets file."""
    from_env = LlmConfig()
    section = load_secrets(secrets_file).get(SECRETS_SECTION, {}) if secrets_file else {}
    prefix = "CSEXT_LLM_"
    fallback = {
        key.removeprefix(prefix).lower(): value
        for key, value in section.items()
        if key.startswith(prefix)
        and key.removeprefix(prefix).lower() not in from_env.model_fields_set
    }
    return (
        LlmConfig(**{**fallback, **from_env.model_dump(exclude_unset=True)})
        if fallback
        else from_env
    )
