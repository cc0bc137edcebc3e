"""A deployment's protocol and whether it serves images.

Triton speaks only the Open Inference Protocol (v2), so its existing deployments get "v2"; every other existing
deployment served the OpenAI API and keeps it. Their revisions' specs stay as they are: a spec without a protocol
serves its runtime's default, which is what each deployment now says.
"""

from typing import Any

from django.db import migrations, models


def triton_speaks_v2(apps: Any, schema_editor: Any) -> None:
    ModelDeployment = apps.get_model("deployments", "ModelDeployment")
    ModelDeployment.unscoped_objects.filter(runtime="triton").update(protocol="v2")


class Migration(migrations.Migration):
    dependencies = [
        ("deployments", "0007_cold_start_and_idle_grace"),
    ]

    operations = [
        migrations.AddField(
            model_name="modeldeployment",
            name="protocol",
            field=models.CharField(
                choices=[("openai", "OpenAI"), ("v2", "Open Inference Protocol (v2)")],
                default="openai",
                help_text="the API the replicas speak: openai, or v2 (the Open Inference Protocol); default: the runtime's",
                max_length=8,
            ),
        ),
        migrations.AddField(
            model_name="modeldeployment",
            name="image_generation",
            field=models.BooleanField(
                default=False,
                help_text="the replicas serve /v1/images/generations (protocol openai; runtime builtin or external)",
            ),
        ),
        migrations.RunPython(triton_speaks_v2, migrations.RunPython.noop),
    ]
