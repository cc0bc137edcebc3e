"""URL map of the web console (included at the end of ``controlplane/urls.py``)."""

from django.urls import include, path

from batches import console as batches_console
from controlplane.console import home
from deployments.console import secrets as console_secrets
from deployments.console import slo as console_slo
from deployments.console import views as deployments_console
from tenants import console as tenants_console
from tenants.sso.views import SignInView, SignOutView

_deployment = "t/<slug:tenant>/deployments/<slug:name>/"

urlpatterns = [
    path("", home, name="console-home"),
    path("login/", SignInView.as_view(), name="login"),
    path("logout/", SignOutView.as_view(), name="logout"),
    path("oidc/", include("tenants.sso.urls")),
    path("invite/<str:token>/", tenants_console.InvitationAcceptView.as_view(), name="console-invitation"),
    path("t/<slug:tenant>/", deployments_console.OverviewView.as_view(), name="console-overview"),
    path("t/<slug:tenant>/deployments/", deployments_console.DeploymentListView.as_view(), name="console-deployments"),
    path(
        "t/<slug:tenant>/deployments/new/",
        deployments_console.DeploymentCreateView.as_view(),
        name="console-deployment-create",
    ),
    path(_deployment, deployments_console.DeploymentDetailView.as_view(), name="console-deployment"),
    path(f"{_deployment}scale/", deployments_console.DeploymentScaleView.as_view(), name="console-deployment-scale"),
    path(
        f"{_deployment}traffic/", deployments_console.DeploymentTrafficView.as_view(), name="console-deployment-traffic"
    ),
    path(
        f"{_deployment}revision/",
        deployments_console.DeploymentRevisionView.as_view(),
        name="console-deployment-revision",
    ),
    path(
        f"{_deployment}rollout/", deployments_console.DeploymentRolloutView.as_view(), name="console-deployment-rollout"
    ),
    path(
        f"{_deployment}manifests/",
        deployments_console.DeploymentManifestsView.as_view(),
        name="console-deployment-manifests",
    ),
    path(f"{_deployment}delete/", deployments_console.DeploymentDeleteView.as_view(), name="console-deployment-delete"),
    path("t/<slug:tenant>/keys/", tenants_console.KeyListView.as_view(), name="console-keys"),
    path(
        "t/<slug:tenant>/keys/<str:key_id>/revoke/", tenants_console.KeyRevokeView.as_view(), name="console-key-revoke"
    ),
    path("t/<slug:tenant>/secrets/", console_secrets.SecretListView.as_view(), name="console-secrets"),
    path("t/<slug:tenant>/batches/", batches_console.BatchListView.as_view(), name="console-batches"),
    path(
        "t/<slug:tenant>/batches/<str:batch_id>/cancel/",
        batches_console.BatchCancelView.as_view(),
        name="console-batch-cancel",
    ),
    path(
        "t/<slug:tenant>/files/<str:file_id>/content/",
        batches_console.BatchFileContentView.as_view(),
        name="console-batch-file",
    ),
    path("t/<slug:tenant>/members/", tenants_console.MemberListView.as_view(), name="console-members"),
    path(
        "t/<slug:tenant>/members/<str:username>/",
        tenants_console.MemberChangeView.as_view(),
        name="console-member-change",
    ),
    path(
        "t/<slug:tenant>/invitations/<int:pk>/revoke/",
        tenants_console.InvitationRevokeView.as_view(),
        name="console-invitation-revoke",
    ),
    path("t/<slug:tenant>/audit/", tenants_console.AuditLogView.as_view(), name="console-audit"),
    path("", include("quotas.console_urls")),
]
urlpatterns += [
    path("t/<slug:tenant>/settings/", tenants_console.TenantSettingsView.as_view(), name="console-settings"),
    path(f"{_deployment}slo/", console_slo.DeploymentSloView.as_view(), name="console-deployment-slo"),
]
