"""What every HTTP test checks of an error: status, stable code, a message, the request id."""

from __future__ import annotations

from typing import Any

import httpx


def assert_error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    error = body.get("error", body)  # the OpenAI-compatible routes answer in OpenAI's shape
    assert error["code"] == code, body
    assert error["message"]
    if "error" not in body:
        assert body["request_id"] == response.headers["x-request-id"]
    return body
