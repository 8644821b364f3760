package org.csext.cloudstack;

import com.cloud.utils.exception.CloudRuntimeException;

/**
 * The exception CloudStack expects when a 2FA check fails: CloudTwoFactorAuthenticationException
 * where the release has it, CloudAuthenticationException in the first 2FA release; both are
 * CloudRuntimeExceptions, so either is thrown as one.
 */
final class Denials {
    private static final String[] TWO_FACTOR = {
        "com.cloud.exception.CloudTwoFactorAuthenticationException",
        "com.cloud.exception.CloudAuthenticationException",
    };

    private Denials() {
    }

    static RuntimeException twoFactor(String message) {
        for (String name : TWO_FACTOR) {
            try {
                Object made = Class.forName(name).getConstructor(String.class).newInstance(message);
                if (made instanceof RuntimeException) {
                    return (RuntimeException) made;
                }
            } catch (ReflectiveOperationException | LinkageError | RuntimeException e) {
                // try the next one
            }
        }
        return new CloudRuntimeException(message);
    }
}
