"""Signals models send about changes Django's own signals do not see.

``QuerySet.update()`` sends no ``post_save``. A model method that changes rows with it sends ``bulk_change``, so the
layers above the models (the gateway snapshot's triggers) hear of the change without the model importing them.
"""

from django.dispatch import Signal

# Sent by the changed model's class, with ``update_fields`` (the fields the UPDATE wrote), ``using`` (the database
# alias it ran on) and, when the sender knows them, ``tenant_ids`` (the tenants whose rows changed; absent: any),
# once per UPDATE that changed at least one row.
bulk_change = Signal()
