// Compile-only stand-in (never packaged). Upstream: api/src/main/java/com/cloud/vm/VirtualMachineProfile.java
// (read at 07643360a767). Read by reflection (getId, getUuid, getInstanceName, getType,
// getHypervisorType, getServiceOffering, getOwner, getTemplateId): HypervisorType became a class in
// 4.21, so typed calls would tie the jar to one side of that change.
package com.cloud.vm;

public interface VirtualMachineProfile {
}
