"""The reliability and security fault suite (issue 7); see docs/reliability.md."""
