// Compile-only stand-in (never packaged).
// Upstream: server/src/main/java/org/apache/cloudstack/auth/UserAuthenticator.java
// (package com.cloud.server.auth before 4.x; read at commit ab05d3490d75).
package org.apache.cloudstack.auth;

import java.util.Map;

import com.cloud.utils.Pair;
import com.cloud.utils.component.Adapter;

public interface UserAuthenticator extends Adapter {
    enum ActionOnFailedAuthentication {
        INCREMENT_INCORRECT_LOGIN_ATTEMPT_COUNT
    }

    Pair<Boolean, ActionOnFailedAuthentication> authenticate(String username, String password, Long domainId,
            Map<String, Object[]> requestParameters);

    String encode(String password);
}
