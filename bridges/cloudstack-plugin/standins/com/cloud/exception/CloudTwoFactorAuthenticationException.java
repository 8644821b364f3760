// Compile-only stand-in (never packaged).
// Upstream: api/src/main/java/com/cloud/exception/CloudTwoFactorAuthenticationException.java
// (older releases throw com.cloud.exception.CloudAuthenticationException; the plugin picks
// whichever the management server has at run time, see Denials.java).
package com.cloud.exception;

import com.cloud.utils.exception.CloudRuntimeException;

public class CloudTwoFactorAuthenticationException extends CloudRuntimeException {
    public CloudTwoFactorAuthenticationException(String message) {
        super(message);
    }
}
