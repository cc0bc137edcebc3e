# TenantSettings moved to the tenants app; its table stays where it is (tenants' 0003 takes the model over).

from django.db import migrations


class Migration(migrations.Migration):

    dependencies = [
        ('deployments', '0003_slo_ttft_p95'),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[migrations.DeleteModel(name='TenantSettings')],
            database_operations=[],
        ),
    ]
