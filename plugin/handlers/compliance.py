"""Mandatory compliance topics. They are verified and recorded durably here (even for shops that are no
longer installed); producing the data export and erasing personal data is the install/compliance work's
(issue 4) and reads these recorded deliveries.
"""

from __future__ import annotations

from plugin.handlers import handles
from plugin.payloads import ComplianceRequest
from plugin.profiles import HandlerContext

PENDING_NOTE = "recorded; awaiting the compliance processor (export/erasure)"


@handles("customers/data_request", "customers/redact", "shop/redact")
def on_compliance_request(ctx: HandlerContext, request: ComplianceRequest) -> str:
    """Validate and keep the request; return the note stored on the delivery."""
    return PENDING_NOTE
