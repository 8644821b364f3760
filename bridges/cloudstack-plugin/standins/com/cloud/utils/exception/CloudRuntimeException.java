// Compile-only stand-in (never packaged).
// Upstream: utils/src/main/java/com/cloud/utils/exception/CloudRuntimeException.java
package com.cloud.utils.exception;

public class CloudRuntimeException extends RuntimeException {
    public CloudRuntimeException(String message) {
        super(message);
    }

    public CloudRuntimeException(String message, Throwable cause) {
        super(message, cause);
    }
}
