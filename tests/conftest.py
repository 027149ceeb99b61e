"""Test tiers: tests/unit (pure logic, no cluster) and tests/integration (the real local
control plane, or the cluster KUBECONFIG names, with the operator running for real)."""

import pytest


def pytest_collection_modifyitems(config, items):
    for item in items:
        if "/integration/" in str(item.fspath):
            item.add_marker(pytest.mark.integration)
