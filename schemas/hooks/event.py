"""The `event` hook: what an event extension reads from its payload file.

CloudStack's bodies (reference/cloudstack.md §3.3) are maps serialised by plain Gson
(framework/events/.../Event.java): null values are left out, key order is random, and each
category has its own keys. Most values are strings; AsyncJobEvent nests two objects. The models
below name the keys CloudStack is known to send, all optional, and keep every other key.
The body reaches the extension exactly as parsed from CloudStack's JSON: nothing is unescaped
or rewritten (Gson's `\u003c` is JSON's own escape and is already `<` once parsed).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from .common import HookInput


class _Body(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True, coerce_numbers_to_str=True)

    event_date_time: str | None = Field(default=None, alias="eventDateTime")
    """`yyyy-MM-dd HH:mm:ss Z`, management server local time."""


class ResourceStateEventBody(_Body):
    """Published twice per transition, before and after it.

    Only VirtualMachine events carry `status` (pre/postStateTransitionEvent), and only their
    post message depends on the transition being persisted (server/.../vm/UserVmStateListener.java
    @7fce265). Volume, Snapshot and Network listeners send `resource`, `id`, `old-state`,
    `new-state`, `eventDateTime` only: the two messages of a transition are identical, and the
    second is sent even when the transition was not persisted
    (server/.../storage/listener/VolumeStateListener.java @0d3489e, likewise the Snapshot and
    Network state listeners).
    """

    resource: str | None = None
    id: str | None = None
    old_state: str | None = Field(default=None, alias="old-state")
    new_state: str | None = Field(default=None, alias="new-state")
    status: str | None = None
    """`preStateTransitionEvent` or `postStateTransitionEvent`."""


class ActionEventBody(_Body):
    user: str | None = None
    account: str | None = None
    project: str | None = None
    event: str | None = None
    """e.g. `VM.START`."""
    status: str | None = None
    """Created, Scheduled, Started, Completed."""
    entity: str | None = None
    entityuuid: str | None = None
    description: str | None = None


class AlertEventBody(_Body):
    event: str | None = None
    data_center_id: str | None = Field(default=None, alias="dataCenterId")
    pod_id: str | None = Field(default=None, alias="podId")
    subject: str | None = None
    body: str | None = None


class UsageEventBody(_Body):
    account: str | None = None
    zone: str | None = None
    event: str | None = None
    resource: str | None = None
    """A Java class name such as `com.cloud.vm.VirtualMachine`."""
    id: str | None = None


class AsyncJobEventBody(_Body):
    """ApiServer.handleAsyncJobPublishEvent (server/src/main/java/com/cloud/api/ApiServer.java
    @02182a1): `processStatus`, `resultCode` and `status` are strings (`"" + int`); `jobResult`
    is the job result as a JSON object (ApiSerializerHelper.fromSerializedStringToMap) and
    `cmdInfo` an object, always present (possibly empty), with `ctxDetails` nested as an object.
    Releases before that (e.g. ApiServer.java of 4.9) sent both as JSON text in a string:
    accepted too. `username`, `accountname`, `domainname` come with `event.accountinfo`.
    """

    command: str | None = None
    user: str | None = None
    account: str | None = None
    process_status: str | None = Field(default=None, alias="processStatus")
    result_code: str | None = Field(default=None, alias="resultCode")
    status: str | None = None
    instance_uuid: str | None = Field(default=None, alias="instanceUuid")
    instance_type: str | None = Field(default=None, alias="instanceType")
    command_event_type: str | None = Field(default=None, alias="commandEventType")
    job_id: str | None = Field(default=None, alias="jobId")
    job_result: dict[str, Any] | str | None = Field(default=None, alias="jobResult")
    cmd_info: dict[str, Any] | str | None = Field(default=None, alias="cmdInfo")
    username: str | None = None
    accountname: str | None = None
    domainname: str | None = None


BODY_MODELS: dict[str, type[_Body]] = {
    "ResourceStateEvent": ResourceStateEventBody,
    "ActionEvent": ActionEventBody,
    "AlertEvent": AlertEventBody,
    "UsageEvent": UsageEventBody,
    "AsyncJobEvent": AsyncJobEventBody,
}


class EventInput(HookInput):
    """The payload file of an event extension (argv[1] is the category).

    `body` is CloudStack's body with its own keys, unknown keys kept; the other fields are
    the routing-key parts and a few normalised values, the same for every category.
    """

    routing_key: str
    """`management-server.<category>.<type>.<resourceType>.<resourceUUID>`, as published."""
    source: str | None = None
    category: str | None = None
    type: str | None = None
    """Routing-key form: dots became `-` (`VM-START`)."""
    resource_type: str | None = None
    resource_uuid: str | None = None
    event: str | None = None
    """The event type in CloudStack's dotted form when the body has it (`VM.START`), else `type`."""
    resource_id: str | None = None
    """The resource's UUID from the body (`id`, `entityuuid`, `instanceUuid`) or the key."""
    old_state: str | None = None
    new_state: str | None = None
    phase: Literal["pre", "post"] | None = None
    """VirtualMachine state events only: pre- or post-transition (other resources' state
    events carry no status, see ResourceStateEventBody)."""
    status: str | None = None
    event_date_time: str | None = None
    body: dict[str, Any] = {}


class EventResult(BaseModel):
    """Events have no caller: the result is the exit code (ack, retry, dead-letter)."""
