"""Validators shared by models and serializers."""

from __future__ import annotations

from django.core.validators import RegexValidator

# Kubernetes object names are DNS-1123 labels; deployment names also become Service and Deployment names.
dns1123_label = RegexValidator(
    regex=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$",
    message="must be a DNS-1123 label: lowercase letters, digits and '-', starting and ending with a letter or digit",
    code="invalid_dns_label",
)
