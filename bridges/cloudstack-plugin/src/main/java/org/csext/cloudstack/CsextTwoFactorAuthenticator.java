package org.csext.cloudstack;

import org.apache.cloudstack.auth.UserTwoFactorAuthenticator;

import com.cloud.user.UserAccount;
import com.cloud.utils.component.AdapterBase;
import com.cloud.utils.exception.CloudRuntimeException;
import com.google.gson.JsonElement;

/**
 * A CloudStack two-factor provider that asks a csext {@code two-factor} extension: {@code check}
 * on every 2FA login, {@code setup} when a user enables 2FA with this provider.
 *
 * <p>Fails closed, as csext's handler does (handlers/two_factor.py): any failure to get a clear
 * "passed" throws, so the login is refused, with one WARN line saying why (never the code or the
 * secret). The extension's own exit-code convention (e.g. totp-2fa's "exit 1 = passed") is csext's
 * business: the reply's typed {@code passed} is all this adapter reads.
 */
public class CsextTwoFactorAuthenticator extends AdapterBase implements UserTwoFactorAuthenticator {
    private static final Log LOG = Log.of(CsextTwoFactorAuthenticator.class);
    static final String INVALID = "two-factor authentication code provided is invalid";
    private final Bridge bridge = new Bridge();

    @Override
    public String getDescription() {
        return "csext two-factor provider (extension " + bridge.extension(getName()) + ")";
    }

    @Override
    public void check2FA(String code, UserAccount userAccount) {
        String user = String.valueOf(Reflect.get(userAccount, "getUsername"));
        if (code == null || code.trim().isEmpty()) {
            LOG.info(prefix() + "2FA of user '" + user + "' refused: no code given");
            throw Denials.twoFactor(INVALID);
        }
        String why;
        try {
            Reply reply = bridge.call(getName(), "check", Payloads.twoFactor(userAccount, code.trim()));
            boolean passed = reply.requireBoolean("passed");
            String fallback = reply.fallbackReason();
            if (fallback == null && passed) {
                LOG.debug(prefix() + "2FA of user '" + user + "' passed");
                return;
            }
            why = fallback != null ? "(fail-closed) " + fallback
                    : "the extension says the code is wrong" + CsextUserAuthenticator.message(reply.result);
        } catch (RpcFailure failure) {
            why = "(fail-closed) " + failure.why();
        } catch (RuntimeException | LinkageError e) {
            why = "(fail-closed) internal: " + e;
        }
        LOG.warn(prefix() + "2FA of user '" + user + "' refused: " + why);
        throw Denials.twoFactor(INVALID);
    }

    @Override
    public String setup2FAKey(UserAccount userAccount) {
        String user = String.valueOf(Reflect.get(userAccount, "getUsername"));
        String why;
        try {
            Reply reply = bridge.call(getName(), "setup", Payloads.twoFactor(userAccount, null));
            JsonElement secret = reply.requireResult().get("secret");
            String fallback = reply.fallbackReason();
            if (fallback == null && !Reply.isNull(secret) && !secret.getAsString().isEmpty()) {
                Reflect.set(userAccount, "setKeyFor2fa", secret.getAsString());
                LOG.info(prefix() + "2FA set up for user '" + user + "'");
                return secret.getAsString();
            }
            why = fallback != null ? fallback : "the reply has no secret";
        } catch (RpcFailure failure) {
            why = failure.why();
        } catch (RuntimeException | LinkageError e) {
            why = "internal: " + e;
        }
        LOG.warn(prefix() + "2FA setup for user '" + user + "' failed: " + why);
        throw new CloudRuntimeException("Unable to set up two-factor authentication: " + why);
    }

    private String prefix() {
        return "csext 2FA provider " + getName() + " (extension " + bridge.extension(getName()) + "): ";
    }

    public void setExtension(String extension) {
        bridge.bean.extension = extension;
    }

    public void setDeadlineMs(long deadlineMs) {
        bridge.bean.deadlineMs = deadlineMs;
    }

    public void setBrokerUrl(String brokerUrl) {
        bridge.bean.brokerUrl = brokerUrl;
    }

    public void setConfigFile(String configFile) {
        bridge.bean.configFile = configFile;
    }

    @Override
    public boolean start() {
        bridge.warmUp(getName());
        return super.start();
    }

    @Override
    public boolean stop() {
        RpcClient.closeAll();
        return super.stop();
    }
}
