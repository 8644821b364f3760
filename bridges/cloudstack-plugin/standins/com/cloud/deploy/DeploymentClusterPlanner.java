// Compile-only stand-in (never packaged).
// Upstream: api/src/main/java/com/cloud/deploy/DeploymentClusterPlanner.java (read at 41c721005432;
// its ConfigKey constants are left out: the plugin does not use them).
package com.cloud.deploy;

import java.util.List;

import com.cloud.exception.InsufficientServerCapacityException;
import com.cloud.vm.VirtualMachineProfile;

public interface DeploymentClusterPlanner extends DeploymentPlanner {
    List<Long> orderClusters(VirtualMachineProfile vm, DeploymentPlan plan, ExcludeList avoid)
            throws InsufficientServerCapacityException;

    PlannerResourceUsage getResourceUsage(VirtualMachineProfile vmProfile, DeploymentPlan plan, ExcludeList avoid)
            throws InsufficientServerCapacityException;
}
