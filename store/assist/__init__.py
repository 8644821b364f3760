"""Model-assisted scaffolding: `csext new NAME --hook H --lang L --describe "..."`.

An OpenAI-compatible chat-completions endpoint drafts the entry point, a README section and
test cases from the hook's contract, the scaffold and the operator's description; csext saves
the draft (disabled) only when it validates and passes its own tests, and sends the errors back
for a repair otherwise. Modules: config (where the model is), client (the HTTP protocol),
prompt (what is asked), answer (what is accepted), draft (the loop), record (CHANGELOG/README).
Guide: docs/assist.md.

For callers (CLI, web UI):

    config = load_llm_config(store.secrets_path)
    drafted = draft_extension(
        store,
        DraftRequest(name="gpu-last", hook=HookType.DEPLOYMENT_PLANNER, lang=Language.PYTHON,
                     description="...", rounds=3),
        chat=ChatClient(config),
        run_tests=runner,          # Path -> TestOutcome; csext.cli.assist.folder_runner(settings)
        on_round=print_round,      # RoundReport -> None, called after each round
    )
"""

from .client import Chat, ChatClient
from .config import LlmConfig, load_llm_config
from .draft import Drafted, DraftRequest, RoundReport, TestOutcome, TestRunner, draft_extension
from .errors import AssistError, EndpointError, NoPassingDraft, NotConfigured

__all__ = [
    "AssistError",
    "Chat",
    "ChatClient",
    "DraftRequest",
    "Drafted",
    "EndpointError",
    "LlmConfig",
    "NoPassingDraft",
    "NotConfigured",
    "RoundReport",
    "TestOutcome",
    "TestRunner",
    "draft_extension",
    "load_llm_config",
]
