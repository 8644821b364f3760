// Compile-only stand-in (never packaged). Upstream: api/src/main/java/com/cloud/deploy/DeploymentPlanner.java
// (read at commit 2d1a17e43757). ExcludeList keeps only its getters, which the plugin reads.
package com.cloud.deploy;

import java.io.Serializable;
import java.util.Set;

import com.cloud.exception.InsufficientServerCapacityException;
import com.cloud.utils.component.Adapter;
import com.cloud.vm.VirtualMachineProfile;

public interface DeploymentPlanner extends Adapter {
    @Deprecated
    DeployDestination plan(VirtualMachineProfile vm, DeploymentPlan plan, ExcludeList avoid)
            throws InsufficientServerCapacityException;

    boolean canHandle(VirtualMachineProfile vm, DeploymentPlan plan, ExcludeList avoid);

    enum PlannerResourceUsage {
        Shared, Dedicated
    }

    class ExcludeList implements Serializable {
        private Set<Long> _dcIds;
        private Set<Long> _podIds;
        private Set<Long> _clusterIds;
        private Set<Long> _hostIds;
        private Set<Long> _poolIds;

        public ExcludeList() {
        }

        public ExcludeList(Set<Long> dcIds, Set<Long> podIds, Set<Long> clusterIds, Set<Long> hostIds,
                Set<Long> poolIds) {
            _dcIds = dcIds;
            _podIds = podIds;
            _clusterIds = clusterIds;
            _hostIds = hostIds;
            _poolIds = poolIds;
        }

        public Set<Long> getDataCentersToAvoid() {
            return _dcIds;
        }

        public Set<Long> getPodsToAvoid() {
            return _podIds;
        }

        public Set<Long> getClustersToAvoid() {
            return _clusterIds;
        }

        public Set<Long> getHostsToAvoid() {
            return _hostIds;
        }

        public Set<Long> getPoolsToAvoid() {
            return _poolIds;
        }
    }
}
