"""Staff pages and usage reports (placeholder until the staff console lands)."""

urlpatterns: list = []
