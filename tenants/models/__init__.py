"""The tenants app's models, re-exported one by one so ``from tenants.models import X`` names its source."""

from tenants.models.invitations import Invitation as Invitation
from tenants.models.settings import TenantSettings as TenantSettings
from tenants.models.tenant import KEY_NAME_MAX_LENGTH as KEY_NAME_MAX_LENGTH
from tenants.models.tenant import ApiKey as ApiKey
from tenants.models.tenant import AuditEvent as AuditEvent
from tenants.models.tenant import IdempotencyRecord as IdempotencyRecord
from tenants.models.tenant import Membership as Membership
from tenants.models.tenant import Role as Role
from tenants.models.tenant import Scope as Scope
from tenants.models.tenant import Tenant as Tenant
from tenants.models.tenant import role_at_least as role_at_least
