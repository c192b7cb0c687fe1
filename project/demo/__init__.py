"""The demo app: holds the tutorial workflow from the README."""
