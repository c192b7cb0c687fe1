"""beluga_workflows: durable workflows for Django.

Use the public API through ``from beluga_workflows import workflow``.
"""

__version__ = "0.1.0"
