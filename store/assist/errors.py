"""Why a drafting attempt stopped; every message is safe to print (no API key in it).

    CsextError
    └── AssistError              drafting stopped; nothing was saved
        ├── NotConfigured        no endpoint or model, or csext[ai] is not installed
        ├── EndpointError        the endpoint is down, slow, refused the call or answered garbage
        └── NoPassingDraft       every round's draft was refused or failed its tests

`DraftProblem` is not an error of csext: it is why one draft was refused (not a single file of
the language, too big, test cases that do not parse); the loop sends it back to the model.
"""

from __future__ import annotations

from csext.schemas.errors import CsextError


class AssistError(CsextError):
    """Drafting stopped; the message says why and nothing was saved."""


class NotConfigured(AssistError):
    pass


class EndpointError(AssistError):
    pass


class NoPassingDraft(AssistError):
    pass


class DraftProblem(Exception):
    """One draft refused: the reasons go back to the model for a repair."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("; ".join(problems))
