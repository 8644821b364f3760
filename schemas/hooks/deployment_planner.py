"""The `deployment-planner` hook: CloudStack's DeploymentClusterPlanner.

`can-handle` answers whether this planner wants the VM; `order-clusters` answers cluster ids in
preference order, or no preference (CloudStack then uses its own order).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from .common import HookInput, HookResult

ACTIONS = ("can-handle", "order-clusters")


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)


class ServiceOffering(_Open):
    id: str | None = None
    name: str | None = None
    cpu: int | None = None
    speed: int | None = None
    """MHz per core."""
    ram_size: int | None = None
    """MiB."""


class VirtualMachineProfile(_Open):
    id: int | str | None = None
    uuid: str | None = None
    name: str | None = None
    type: str | None = None
    """User, DomainRouter, ConsoleProxy, SecondaryStorageVm..."""
    hypervisor_type: str | None = None
    service_offering: ServiceOffering | None = None
    template_id: str | None = None
    owner: str | None = None
    details: dict[str, Any] = {}


class DeploymentPlan(_Open):
    data_center_id: int | None = None
    pod_id: int | None = None
    cluster_id: int | None = None
    host_id: int | None = None
    pool_id: int | None = None


class ExcludeList(_Open):
    data_centers: list[int] = []
    pods: list[int] = []
    clusters: list[int] = []
    hosts: list[int] = []
    pools: list[int] = []


class ClusterCandidate(_Open):
    """A cluster the caller may deploy to, with what it knows of its capacity."""

    id: int
    name: str | None = None
    pod_id: int | None = None
    hypervisor_type: str | None = None
    total_memory: int | None = None
    """Bytes."""
    used_memory: int | None = None
    free_memory: int | None = None
    total_cpu: int | None = None
    """MHz."""
    used_cpu: int | None = None


class DeploymentPlannerInput(HookInput):
    vm: VirtualMachineProfile = Field(default_factory=VirtualMachineProfile)
    plan: DeploymentPlan = Field(default_factory=DeploymentPlan)
    avoid: ExcludeList = Field(default_factory=ExcludeList)
    clusters: list[ClusterCandidate] = []
    """Candidate clusters, when the caller lists them (order-clusters)."""


class DeploymentPlannerResult(HookResult):
    can_handle: bool | None = None
    """`can-handle`."""
    cluster_ids: list[int] | None = None
    """`order-clusters`: cluster ids, most preferred first (avoided ids removed)."""
    no_preference: bool = False
    """`order-clusters`: the planner has no preference; CloudStack keeps its own order."""
