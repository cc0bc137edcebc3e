"""The deployments app's models, re-exported one by one so ``from deployments.models import X`` names its source."""

from deployments.models.deployment import REVISION_SPEC_FIELDS as REVISION_SPEC_FIELDS
from deployments.models.deployment import SYSTEM_FIELDS as SYSTEM_FIELDS
from deployments.models.deployment import DeploymentEvent as DeploymentEvent
from deployments.models.deployment import ModelDeployment as ModelDeployment
from deployments.models.deployment import Protocol as Protocol
from deployments.models.deployment import Revision as Revision
from deployments.models.deployment import Runtime as Runtime
from deployments.models.deployment import spec_digest as spec_digest
from deployments.models.secret import TenantSecret as TenantSecret
from deployments.models.slo import Rollout as Rollout
from deployments.models.slo import SloSample as SloSample
from deployments.models.slo import SloStatus as SloStatus
