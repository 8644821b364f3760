"""The coprocess author helper, importable where csext is installed.

The one copy of the code is `csext.store.coprocess_sdk` (standard library only): `csext new
--runtime coprocess` writes that file next to new Python entry points as `csext_coprocess.py`,
so an extension needs no csext installed where it runs. See docs/coprocess.md.
"""

from csext.store.coprocess_sdk import Fail, Handler, request, serve, time_left

__all__ = ["Fail", "Handler", "request", "serve", "time_left"]
