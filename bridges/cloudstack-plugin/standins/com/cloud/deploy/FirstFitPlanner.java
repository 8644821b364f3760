// Compile-only stand-in (never packaged). Upstream: server/src/main/java/com/cloud/deploy/FirstFitPlanner.java
// (read at 04a2f419bcef): CloudStack's default planner, which UserConcentratedPodPlanner,
// UserDispersingPlanner and ImplicitDedicationPlanner extend, and so does CsextDeploymentPlanner.
// Its bodies here only say they are stand-ins: the tests override the two hooks that reach them.
package com.cloud.deploy;

import java.util.List;

import com.cloud.exception.InsufficientServerCapacityException;
import com.cloud.utils.component.AdapterBase;
import com.cloud.vm.VirtualMachineProfile;

public class FirstFitPlanner extends AdapterBase implements DeploymentClusterPlanner, DeploymentPlanner {
    @Override
    public List<Long> orderClusters(VirtualMachineProfile vmProfile, DeploymentPlan plan, ExcludeList avoid)
            throws InsufficientServerCapacityException {
        throw new UnsupportedOperationException("compile-only stand-in of CloudStack's FirstFitPlanner");
    }

    @Override
    public boolean canHandle(VirtualMachineProfile vm, DeploymentPlan plan, ExcludeList avoid) {
        throw new UnsupportedOperationException("compile-only stand-in of CloudStack's FirstFitPlanner");
    }

    @Override
    public PlannerResourceUsage getResourceUsage(VirtualMachineProfile vmProfile, DeploymentPlan plan,
            ExcludeList avoid) throws InsufficientServerCapacityException {
        return PlannerResourceUsage.Shared;
    }

    @Override
    @SuppressWarnings("deprecation")
    public DeployDestination plan(VirtualMachineProfile vm, DeploymentPlan plan, ExcludeList avoid)
            throws InsufficientServerCapacityException {
        return null;
    }
}
