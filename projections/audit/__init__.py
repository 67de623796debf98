"""The audit trail: every event of every context, who did what to which resource and when.

``GET /v1/audit/events`` (auditors and admins), filtered by actor, action (with wildcards),
resource, time and request id, newest first.
"""

from projections.audit.projection import AuditProjection
from projections.audit.routes import router
from projections.audit.view import AuditEntry, AuditFilter, AuditPage, AuditView
from projections.slice import ReadModel

READ_MODEL = ReadModel(
    projection=AuditProjection,
    view=AuditView,
    migrations=("0006_audit.sql", "0007_audit_chain.sql"),
    router=router,
)

__all__ = ["READ_MODEL", "AuditEntry", "AuditFilter", "AuditPage", "AuditProjection", "AuditView"]
