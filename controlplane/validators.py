"""Validators shared by models and serializers."""

from __future__ import annotations

from django.core.validators import RegexValidator

# Postgres column bounds: a number past them is a field error, not a DataError (500) at save time.
INT_MAX = 2_147_483_647  # integer (PositiveIntegerField)
BIGINT_MAX = 9_223_372_036_854_775_807  # bigint (PositiveBigIntegerField)

# Kubernetes object names are DNS-1123 labels (at most 63 characters). A tenant slug becomes the namespace
# "<prefix><slug>": 40 characters plus the default prefix "fd-" stay within 63.
dns1123_label = RegexValidator(
    regex=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$",
    message="must be a DNS-1123 label: lowercase letters, digits and '-', starting and ending with a letter or digit",
    code="invalid_dns_label",
)

# Longest deployment name: it names the Deployment, HTTPRoute, HPA and PDB, and "<name>-r<revision number>" names
# each revision's Service and Deployment. 40 characters plus "-r" and the ten digits of the largest revision number
# (a Postgres integer) stay within the 63 characters of a Kubernetes name.
DEPLOYMENT_NAME_MAX_LENGTH = 40


class DeploymentNameValidator(RegexValidator):
    """A deployment name must be a DNS-1035 label: a DNS-1123 label that starts with a letter.

    It names each revision's Service, and the API server refuses a Service named "70b-chat-r1" only once the pods
    already run, so the name is refused when it is given. The pattern is the whole DNS-1035 label (the OpenAPI
    schema shows it); a refusal says which of the two rules the name breaks.
    """

    regex = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"
    message = "must start with a letter: Kubernetes Service names are DNS-1035 labels"
    code = "invalid_dns1035_label"

    def __call__(self, value: object) -> None:
        dns1123_label(value)
        super().__call__(value)


DEPLOYMENT_NAME_VALIDATORS = (DeploymentNameValidator(),)
