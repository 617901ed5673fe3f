"""zenodo-client (the `zenodo-client` package) for the deposition calls of `distillm publish`, over our HTTP layer.

zenodo-client 0.4.2 makes the calls: create a deposition (with its metadata), upload to its
bucket, make a new version, publish. What it lacks is added around it, not patched into it:

- any server: it knows only https://zenodo.org and the sandbox, so its instance is pointed at
  the base URL we were given (its `base`, `api_base`, `depositions_base` attributes): the sandbox
  by default, production with --production, a local server in the tests;
- its HTTP goes through `pipeline.dataset.zenodo.Zenodo.request`: it calls the module functions
  `requests.get/post/put`, which `deposition_api` hands our client for the time of a `with`
  block. There the token it would put in the URL (`?access_token=`) is sent in an
  `Authorization: Bearer` header instead (zenodo-client never sees the real token), 429 and 5xx
  answers are retried (Retry-After, exponential backoff; an upload is re-sent from its start), and
  any other error is a ZenodoError with the server's message and no token in it;
- the md5 of every upload against the server's answer, deleting the files a new version carries
  over, setting a draft's metadata and publishing only with --publish: `pipeline.dataset.zenodo.publish`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from zenodo_client import Zenodo as ZenodoClient


class HttpClient(Protocol):
    """Our HTTP layer (`pipeline.dataset.zenodo.Zenodo`): the server's base URL and one retried request."""

    base_url: str

    def request(self, method: str, url: str, **kwargs: Any) -> Any: ...


_TOKEN_PLACEHOLDER = "sent-as-a-header"  # what zenodo-client holds: the real token stays in our client
_MIN_TIMEOUT = 60.0  # zenodo-client waits 5-15 s for an answer; a busy Zenodo can take longer


class _RequestsFunctions:
    """The `requests.get/post/put` that zenodo-client calls, sent through our client."""

    def __init__(self, client: HttpClient):
        self.client = client

    def _send(self, method: str, url: str, **kwargs: Any):
        params = {k: v for k, v in (kwargs.pop("params", None) or {}).items() if k != "access_token"}
        timeout = max(float(kwargs.pop("timeout", None) or 0), _MIN_TIMEOUT)
        return self.client.request(method, url, params=params or None, timeout=timeout, **kwargs)

    def get(self, url: str, **kwargs: Any):
        return self._send("GET", url, **kwargs)

    def post(self, url: str, **kwargs: Any):
        return self._send("POST", url, **kwargs)

    def put(self, url: str, **kwargs: Any):
        return self._send("PUT", url, **kwargs)


@contextlib.contextmanager
def deposition_api(client: HttpClient) -> Iterator[ZenodoClient]:
    """zenodo-client's `Zenodo`, pointed at client.base_url, its requests sent through client."""
    import zenodo_client.api
    from zenodo_client import Zenodo as ZenodoClient

    api = ZenodoClient(access_token=_TOKEN_PLACEHOLDER, sandbox=True)
    api.base = client.base_url
    api.api_base = f"{client.base_url}/api"
    api.depositions_base = f"{api.api_base}/deposit/depositions"
    saved = zenodo_client.api.requests
    zenodo_client.api.requests = _RequestsFunctions(client)
    try:
        yield api
    finally:
        zenodo_client.api.requests = saved
