// Compile-only stand-in (never packaged; the test driver runs on it, CloudStack runs on its own).
// Upstream: utils/src/main/java/com/cloud/utils/component/AdapterBase.java
// (AdapterBase extends ComponentLifecycleBase implements Adapter: name, configure, start, stop).
package com.cloud.utils.component;

import java.util.Map;

import javax.naming.ConfigurationException;

public abstract class AdapterBase implements Adapter {
    protected String _name;

    @Override
    public String getName() {
        return _name;
    }

    @Override
    public void setName(String name) {
        _name = name;
    }

    @Override
    public boolean configure(String name, Map<String, Object> params) throws ConfigurationException {
        return true;
    }

    @Override
    public boolean start() {
        return true;
    }

    @Override
    public boolean stop() {
        return true;
    }
}
