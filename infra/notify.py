"""Where budget alerts go: webhooks (signed) and email (SMTP); invitations by e-mail.

A webhook receives the alert as JSON with ``X-KF-Signature: t=<unix time>,v1=<hex>``,
where ``v1`` is HMAC-SHA256 of ``<t>.<body>`` under the webhook's secret: the receiver
recomputes it (and may refuse old ``t``) to know the alert came from this platform
and was not changed. Any answer but 2xx is a failure (and is retried by the notifier).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import smtplib
import time
from email.message import EmailMessage
from typing import Any, Protocol

import httpx


class Channel(Protocol):
    @property
    def name(self) -> str: ...

    def send(self, alert: dict[str, Any]) -> str:
        """Deliver ``alert``; the receiver's answer. Raises on any failure."""
        ...


def signature(secret: str, timestamp: int, body: bytes) -> str:
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={mac.hexdigest()}"


class WebhookChannel:
    def __init__(self, url: str, secret: str, timeout_s: float = 5.0) -> None:
        self._url = url
        self._secret = secret
        self._timeout_s = timeout_s

    @property
    def name(self) -> str:
        return f"webhook:{self._url}"

    def send(self, alert: dict[str, Any]) -> str:
        body = json.dumps(alert, separators=(",", ":"), sort_keys=True).encode()
        headers = {
            "content-type": "application/json",
            "X-KF-Signature": signature(self._secret, int(time.time()), body),
            "X-KF-Alert-Id": str(alert["alert_id"]),
        }
        response = httpx.post(self._url, content=body, headers=headers, timeout=self._timeout_s)
        if not 200 <= response.status_code < 300:
            raise RuntimeError(f"the webhook answered {response.status_code}")
        return str(response.status_code)


class EmailChannel:
    def __init__(
        self, host: str, port: int, sender: str, recipients: list[str], timeout_s: float = 10.0
    ) -> None:
        self._host = host
        self._port = port
        self._sender = sender
        self._recipients = recipients
        self._timeout_s = timeout_s

    @property
    def name(self) -> str:
        return "email:" + ",".join(self._recipients)

    def send(self, alert: dict[str, Any]) -> str:
        message = EmailMessage()
        message["From"] = self._sender
        message["To"] = ", ".join(self._recipients)
        message["Subject"] = (
            f"[Knowledge Foundry] {alert['budget']} at {alert['threshold']}% of its limit"
        )
        message["X-KF-Alert-Id"] = str(alert["alert_id"])
        message.set_content(
            f"Tenant {alert['tenant_id']}: the budget {alert['budget']} reached"
            f" {alert['threshold']}% of its limit {alert['limit']} in the period starting"
            f" {alert['period_start']} (used: {alert['used']}).\n\n"
            + json.dumps(alert, indent=2, sort_keys=True)
        )
        with smtplib.SMTP(self._host, self._port, timeout=self._timeout_s) as smtp:
            refused = smtp.send_message(message)
            reply = smtp.noop()
        if refused:
            raise RuntimeError(f"the SMTP server refused {sorted(refused)}")
        return f"{reply[0]} sent"


def send_invitation(
    *,
    host: str,
    port: int,
    sender: str,
    to: str,
    link: str,
    expires_at: str,
    reset: bool,
    timeout_s: float = 10.0,
) -> None:
    """Mail a set-password link to a person (raises on any failure: the link is still shown
    to the admin who asked, so nobody is left without one)."""
    message = EmailMessage()
    message["From"] = sender
    message["To"] = to
    if reset:
        message["Subject"] = "[Knowledge Foundry] Set a new password"
        opening = "An administrator asked for a new password link for your account."
    else:
        message["Subject"] = "[Knowledge Foundry] You are invited"
        opening = "You have been invited to Knowledge Foundry."
    message.set_content(
        f"{opening}\n\nChoose your password here (the link works once, until {expires_at}):\n\n"
        f"  {link}\n\nIf you did not expect this, ignore this e-mail.\n"
    )
    with smtplib.SMTP(host, port, timeout=timeout_s) as smtp:
        refused = smtp.send_message(message)
    if refused:
        raise RuntimeError(f"the SMTP server refused {sorted(refused)}")
