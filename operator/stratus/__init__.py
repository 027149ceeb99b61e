"""Stratus: an OpenStack-style service set for Kubernetes, reconciled by kopf."""

__version__ = "0.1.0"
