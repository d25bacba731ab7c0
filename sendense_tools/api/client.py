"""A small JSON client for the hub and node APIs."""

from __future__ import annotations

from typing import Any

import aiohttp

from sendense_tools.errors import SendenseError


class ApiCallError(SendenseError):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{message} (HTTP {status} {code})")
        self.status = status
        self.code = code
        self.message = message


class ApiClient:
    def __init__(self, base_url: str, token: str, timeout: float | None = 30.0) -> None:
        self.base_url = base_url.rstrip("/")
        self._headers = {"Authorization": f"Bearer {token}"}
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> ApiClient:
        self._session = aiohttp.ClientSession(headers=self._headers, timeout=self._timeout)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._session is not None:
            await self._session.close()

    async def request(self, method: str, path: str, body: Any = None) -> Any:
        assert self._session is not None, "use ApiClient as an async context manager"
        url = f"{self.base_url}{path}"
        try:
            async with self._session.request(method, url, json=body) as resp:
                try:
                    data = await resp.json(content_type=None)
                except ValueError:
                    data = None
                if resp.status >= 400:
                    if isinstance(data, dict):
                        code = str(data.get("error", "error"))
                        message = str(data.get("message", resp.reason))
                    else:
                        code, message = "error", str(resp.reason)
                    raise ApiCallError(resp.status, code, message)
                return data
        except aiohttp.ClientConnectionError as exc:
            raise SendenseError(f"cannot reach {self.base_url}: {exc}") from None
        except TimeoutError:
            raise SendenseError(f"{method} {url} timed out") from None

    async def get(self, path: str) -> Any:
        return await self.request("GET", path)

    async def post(self, path: str, body: Any = None) -> Any:
        return await self.request("POST", path, body if body is not None else {})

    async def put(self, path: str, body: Any) -> Any:
        return await self.request("PUT", path, body)
