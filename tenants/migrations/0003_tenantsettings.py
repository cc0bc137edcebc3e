# TenantSettings moved here from the deployments app; the table it was created in stays (no database change).

import django.core.validators
import django.db.models.deletion
import django.db.models.manager
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('tenants', '0002_invitations'),
        ('deployments', '0004_tenantsettings_to_tenants'),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.CreateModel(
                    name='TenantSettings',
                    fields=[
                        ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                        ('webhook_url', models.URLField(blank=True, max_length=500, validators=[django.core.validators.URLValidator(schemes=['http', 'https'])])),
                        ('webhook_secret', models.CharField(blank=True, max_length=128)),
                        ('updated_at', models.DateTimeField(auto_now=True)),
                        ('tenant', models.OneToOneField(on_delete=django.db.models.deletion.CASCADE, related_name='notification_settings', to='tenants.tenant')),
                    ],
                    options={
                        'verbose_name_plural': 'tenant settings',
                        'db_table': 'deployments_tenantsettings',
                        'default_manager_name': 'unscoped_objects',
                    },
                    managers=[('unscoped_objects', django.db.models.manager.Manager())],
                ),
            ],
            database_operations=[],
        ),
    ]
