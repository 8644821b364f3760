// Compile-only stand-in (never packaged). Upstream: api/src/main/java/com/cloud/deploy/DeploymentPlan.java
// Read by reflection (getDataCenterId, getPodId, getClusterId, getHostId, getPoolId).
package com.cloud.deploy;

public interface DeploymentPlan {
}
