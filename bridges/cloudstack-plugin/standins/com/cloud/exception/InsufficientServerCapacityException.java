// Compile-only stand-in (never packaged).
// Upstream: api/src/main/java/com/cloud/exception/InsufficientServerCapacityException.java
// (a checked exception: InsufficientCapacityException extends CloudException extends Exception).
package com.cloud.exception;

public class InsufficientServerCapacityException extends Exception {
    public InsufficientServerCapacityException(String message) {
        super(message);
    }
}
