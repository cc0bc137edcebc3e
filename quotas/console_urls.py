"""Console routes for usage, quotas and the staff pages (included by ``controlplane/console_urls.py``)."""

from django.urls import path

from quotas import console
from tenants import staff_console

urlpatterns = [
    path("t/<slug:tenant>/usage/", console.TenantUsageView.as_view(), name="console-usage"),
    path("staff/", console.StaffTenantsView.as_view(), name="staff-home"),
    path("staff/tenants/new/", staff_console.StaffTenantCreateView.as_view(), name="staff-tenant-create"),
    path("staff/tenants/<slug:slug>/quota/", console.StaffQuotaView.as_view(), name="staff-quota"),
    path(
        "staff/tenants/<slug:slug>/quota/preview/", console.StaffQuotaPreviewView.as_view(), name="staff-quota-preview"
    ),
    path("staff/usage/", console.StaffUsageView.as_view(), name="staff-usage"),
    path("staff/capacity/", console.StaffCapacityView.as_view(), name="staff-capacity"),
]
