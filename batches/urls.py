"""The internal routes the gateway forwards ``/v1/files`` and ``/v1/batches`` to (``batch_wire.INTERNAL_PREFIX``)."""

from django.urls import path, re_path

from batches import openai_views

ID = r"(?P<%s>[A-Za-z0-9_-]{1,64})"

urlpatterns = [
    path("v1/files", openai_views.files),
    re_path(rf"^v1/files/{ID % 'file_id'}$", openai_views.file_detail),
    re_path(rf"^v1/files/{ID % 'file_id'}/content$", openai_views.file_content),
    path("v1/batches", openai_views.batches),
    re_path(rf"^v1/batches/{ID % 'batch_id'}$", openai_views.batch_detail),
    re_path(rf"^v1/batches/{ID % 'batch_id'}/cancel$", openai_views.batch_cancel),
]
