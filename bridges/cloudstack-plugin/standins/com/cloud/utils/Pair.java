// Compile-only stand-in (never packaged). Upstream: utils/src/main/java/com/cloud/utils/Pair.java
// (apache/cloudstack, read at 4.19/4.20-era main). Only the members the plugin uses.
package com.cloud.utils;

public class Pair<T, U> {
    private T t;
    private U u;

    public Pair(T t, U u) {
        this.t = t;
        this.u = u;
    }

    public T first() {
        return t;
    }

    public U second() {
        return u;
    }
}
