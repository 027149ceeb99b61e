"""Pytest fixtures for simulated BMCs (OpenIPMI ``ipmi_sim`` via ``hack/bmcsim/bmcsim.py``).

Register them from tests/integration/conftest.py with ``from .bmc import *`` (or list
``tests.integration.bmc`` in ``pytest_plugins``). They need no Kubernetes cluster, only the
Debian packages ``openipmi`` and ``ipmitool`` (hack/debian-packages.txt); without
``ipmi_sim`` they fail with that hint rather than skip, so a CI run cannot go green by
accident.

- ``bmcsim``: the launcher module (``BmcFleet``, ``SimulatedBmc``, …).
- ``bmc_factory``: ``bmc_factory(count=1, **options)`` starts a fleet on free loopback
  ports in the test's temporary directory and returns it; every fleet it made is stopped
  when the test ends, passed or failed.
- ``bmc``: one running :class:`SimulatedBmc` (host off, boot device none).
- ``bmc_fleet``: ten running simulators.
- ``ipmi_executor``: a private :class:`~stratus.drivers.ipmi.IpmiExecutor` with four threads.
- ``ipmi_client``: ``ipmi_client(bmc, password=None, **options)`` makes an
  :class:`~stratus.drivers.ipmi.IpmiClient` for a simulator on that executor.
"""

from __future__ import annotations

import importlib.util
import shutil
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from stratus.drivers.ipmi import BmcCredentials, IpmiClient, IpmiExecutor, parse_address

__all__ = ["bmcsim", "bmc_factory", "bmc", "bmc_fleet", "ipmi_executor", "ipmi_client"]

BMCSIM_PATH = Path(__file__).resolve().parents[2] / "hack" / "bmcsim" / "bmcsim.py"


def load_bmcsim() -> ModuleType:
    """Import hack/bmcsim/bmcsim.py (not a package) once per process."""
    name = "stratus_hack_bmcsim"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, BMCSIM_PATH)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def bmcsim() -> ModuleType:
    missing = [tool for tool in ("ipmi_sim", "ipmitool") if not shutil.which(tool)]
    if missing:
        pytest.fail(
            f"{', '.join(missing)} not installed: install the Debian packages listed in hack/debian-packages.txt "
            "(openipmi, ipmitool)",
            pytrace=False,
        )
    return load_bmcsim()


@pytest.fixture
def bmc_factory(bmcsim: ModuleType, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., Any]]:
    fleets: list[Any] = []

    def make(count: int = 1, **options: Any) -> Any:
        directory = tmp_path_factory.mktemp("bmcsim")
        fleet = None
        for _attempt in range(3):  # a port taken between the check and the bind: pick again
            fleet = bmcsim.BmcFleet.create(directory, count, **options)
            fleets.append(fleet)
            try:
                fleet.start()
                return fleet
            except bmcsim.BmcSimError as err:
                if "exited" not in str(err):
                    raise
        raise AssertionError("could not start the BMC simulators on free ports")

    yield make
    errors = []
    for fleet in fleets:
        try:
            fleet.stop()
        except Exception as err:  # noqa: BLE001 - stop the others, then report
            errors.append(err)
    assert not errors, errors


@pytest.fixture
def bmc(bmc_factory: Callable[..., Any]) -> Any:
    return bmc_factory(1)[0]


@pytest.fixture
def bmc_fleet(bmc_factory: Callable[..., Any]) -> Any:
    return bmc_factory(10)


@pytest.fixture
def ipmi_executor() -> Iterator[IpmiExecutor]:
    executor = IpmiExecutor(max_concurrency=4)
    yield executor
    executor.shutdown()


@pytest.fixture
def ipmi_client(ipmi_executor: IpmiExecutor) -> Callable[..., IpmiClient]:
    def make(sim: Any, password: str | None = None, username: str | None = None, **options: Any) -> IpmiClient:
        options.setdefault("executor", ipmi_executor)
        return IpmiClient(
            parse_address(sim.address),
            BmcCredentials(username or sim.username, sim.password if password is None else password),
            **options,
        )

    return make
