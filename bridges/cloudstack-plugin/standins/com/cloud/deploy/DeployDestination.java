// Compile-only stand-in (never packaged). Upstream: api/src/main/java/com/cloud/deploy/DeployDestination.java
package com.cloud.deploy;

public class DeployDestination {
}
