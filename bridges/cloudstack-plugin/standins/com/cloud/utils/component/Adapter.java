// Compile-only stand-in (never packaged). Upstream: utils/src/main/java/com/cloud/utils/component/Adapter.java
// (Adapter extends ComponentLifecycle; these are the lifecycle methods the plugin relies on).
package com.cloud.utils.component;

import java.util.Map;

import javax.naming.ConfigurationException;

public interface Adapter {
    String getName();

    void setName(String name);

    boolean configure(String name, Map<String, Object> params) throws ConfigurationException;

    boolean start();

    boolean stop();
}
