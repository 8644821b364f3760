package org.csext.cloudstack;

/**
 * A csext call that gave no usable answer. {@code kind} is csext's error kind when the worker
 * said why (unknown-extension, disabled, timeout, ...: docs/protocol.md), or one of this plugin's
 * own: broker-unreachable, deadline, malformed-reply, channel-closed.
 */
final class RpcFailure extends Exception {
    private static final long serialVersionUID = 1L;
    private final String kind;

    RpcFailure(String kind, String message) {
        super(message);
        this.kind = kind;
    }

    RpcFailure(String kind, String message, Throwable cause) {
        super(message, cause);
        this.kind = kind;
    }

    String kind() {
        return kind;
    }

    /** One line for a log: the kind, then what happened. */
    String why() {
        return kind + ": " + getMessage();
    }
}
