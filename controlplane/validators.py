"""Validators shared by models and serializers."""

from __future__ import annotations

from django.core.validators import RegexValidator

# Postgres column bounds: a number past them is a field error, not a DataError (500) at save time.
INT_MAX = 2_147_483_647  # integer (PositiveIntegerField)
BIGINT_MAX = 9_223_372_036_854_775_807  # bigint (PositiveBigIntegerField)

# Kubernetes object names are DNS-1123 labels; deployment names also become Service and Deployment names.
dns1123_label = RegexValidator(
    regex=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$",
    message="must be a DNS-1123 label: lowercase letters, digits and '-', starting and ending with a letter or digit",
    code="invalid_dns_label",
)
