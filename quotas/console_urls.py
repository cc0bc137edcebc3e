"""Console routes for usage and quotas (included by ``controlplane/console_urls.py``)."""

from django.urls import path

from quotas import console

urlpatterns = [
    path("t/<slug:tenant>/usage/", console.TenantUsageView.as_view(), name="console-usage"),
    path("staff/", console.StaffTenantsView.as_view(), name="staff-home"),
    path("staff/tenants/<slug:slug>/quota/", console.StaffQuotaView.as_view(), name="staff-quota"),
    path("staff/usage/", console.StaffUsageView.as_view(), name="staff-usage"),
    path("staff/capacity/", console.StaffCapacityView.as_view(), name="staff-capacity"),
]
