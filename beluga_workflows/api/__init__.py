"""REST API (Django REST framework) for workflow runs."""
