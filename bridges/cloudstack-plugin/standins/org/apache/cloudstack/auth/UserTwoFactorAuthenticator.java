// Compile-only stand-in (never packaged).
// Upstream: api/src/main/java/org/apache/cloudstack/auth/UserTwoFactorAuthenticator.java
// (read at commit 38dc04586540, which has setup2FAKey; the first 2FA release, 093bb5cc29e4,
// has check2FA only, and there the extra method is simply never called).
package org.apache.cloudstack.auth;

import com.cloud.exception.CloudTwoFactorAuthenticationException;
import com.cloud.user.UserAccount;
import com.cloud.utils.component.Adapter;

public interface UserTwoFactorAuthenticator extends Adapter {
    String getName();

    String getDescription();

    void check2FA(String code, UserAccount userAccount) throws CloudTwoFactorAuthenticationException;

    String setup2FAKey(UserAccount userAccount);
}
