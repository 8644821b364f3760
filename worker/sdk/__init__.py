"""Helpers for extension authors: stdlib-only single files, meant to be imported or copied."""
