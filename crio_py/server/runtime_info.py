"""RuntimeService handlers about the runtime itself: Version, Status, RuntimeConfig."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from crio_py import __version__
from crio_py import log as log_mod
from crio_py.cgroups import cgroup_version
from crio_py.cgroups.controllers import available_controllers, hugepage_sizes
from crio_py.config import Config
from crio_py.cri import api_pb2 as pb
from crio_py.network import NetworkStatus

RUNTIME_NAME = "crio-py"
RUNTIME_API_VERSION = "v1"


class RuntimeInfoHandlers:
    """Version, Status and the runtime configuration."""

    def __init__(
        self,
        config: Callable[[], Config],
        network_status: Callable[[], NetworkStatus],
        recursive_read_only: Callable[[str], bool],
    ):
        self._config = config
        self._network_status = network_status
        # Whether a runtime handler can make mounts read-only recursively (it asks the runtime).
        self._recursive_read_only = recursive_read_only

    def Version(self, request: pb.VersionRequest, context: Any) -> pb.VersionResponse:
        return pb.VersionResponse(
            version="0.1.0",
            runtime_name=RUNTIME_NAME,
            runtime_version=__version__,
            runtime_api_version=RUNTIME_API_VERSION,
        )

    def Status(self, request: pb.StatusRequest, context: Any) -> pb.StatusResponse:
        net = self._network_status()
        conditions = [
            pb.RuntimeCondition(type="RuntimeReady", status=True),
            pb.RuntimeCondition(type="NetworkReady", status=net.ready, reason=net.reason, message=net.message),
        ]
        config = self._config()
        handlers = [
            pb.RuntimeHandler(
                name=name,
                features=pb.RuntimeHandlerFeatures(
                    recursive_read_only_mounts=self._recursive_read_only(name), user_namespaces=False
                ),
            )
            for name in ["", *sorted(config.runtimes)]
        ]
        info = {}
        if request.verbose:
            info = {
                "config": json.dumps(config.to_dict()),
                "cgroups": json.dumps(cgroups_info(config)),
                # People type `runc list` and see nothing: each handler keeps its state in its own root.
                "runtimeRoots": json.dumps({n: h.root for n, h in sorted(config.runtimes.items())}),
                "daemonLog": json.dumps(log_mod.destination()),
            }
        return pb.StatusResponse(
            status=pb.RuntimeStatus(conditions=conditions),
            info=info,
            runtime_handlers=handlers,
            features=pb.RuntimeFeatures(supplemental_groups_policy=True),
        )

    def RuntimeConfig(self, request: pb.RuntimeConfigRequest, context: Any) -> pb.RuntimeConfigResponse:
        driver = pb.SYSTEMD if self._config().cgroup_manager == "systemd" else pb.CGROUPFS
        return pb.RuntimeConfigResponse(linux=pb.LinuxRuntimeConfiguration(cgroup_driver=driver))

    def UpdateRuntimeConfig(
        self, request: pb.UpdateRuntimeConfigRequest, context: Any
    ) -> pb.UpdateRuntimeConfigResponse:
        # kubelet sends the node's pod CIDR here; the CNI config owns addressing, as in CRI-O.
        return pb.UpdateRuntimeConfigResponse()


def cgroups_info(config: Config) -> dict[str, Any]:
    """What containers can get here: cgroup version, driver, controllers, huge page sizes.

    Requests touching a controller or page size not listed are applied without it (see
    crio_py.spec.limits), so this is where an operator sees why a limit had no effect.
    """
    return {
        "version": cgroup_version(),
        "driver": config.cgroup_manager,
        "controllers": sorted(available_controllers()),
        "hugepageSizes": sorted(hugepage_sizes()),
    }
