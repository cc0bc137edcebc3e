"""The code flow's routes, under ``/oidc/`` (console_urls.py). The redirect URI to register at the provider is
``<console>/oidc/callback/``; the names are the ones mozilla-django-oidc reverses."""

from django.urls import path

from tenants.sso.views import SsoCallbackView, SsoStartView

urlpatterns = [
    path("authenticate/", SsoStartView.as_view(), name="oidc_authentication_init"),
    path("callback/", SsoCallbackView.as_view(), name="oidc_authentication_callback"),
]
