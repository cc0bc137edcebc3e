"""Query filters for the deployments list: ``?status=ready&runtime=vllm&gpu_type=nvidia-h100&name=chat``."""

from __future__ import annotations

import django_filters

from deployments.models import ModelDeployment, Runtime


class DeploymentFilter(django_filters.FilterSet):
    name = django_filters.CharFilter(field_name="name", lookup_expr="icontains", help_text="name contains")
    status = django_filters.MultipleChoiceFilter(choices=ModelDeployment.Status.choices)
    runtime = django_filters.MultipleChoiceFilter(choices=Runtime.choices)
    gpu_type = django_filters.CharFilter(field_name="gpu_type")
    desired_state = django_filters.ChoiceFilter(choices=ModelDeployment.DesiredState.choices)

    class Meta:
        model = ModelDeployment
        fields = ["name", "status", "runtime", "gpu_type", "desired_state"]
