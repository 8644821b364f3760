package org.csext.cloudstack;

import java.util.Map;

import org.apache.cloudstack.auth.UserAuthenticator;

import com.cloud.utils.Pair;
import com.cloud.utils.component.AdapterBase;
import com.google.gson.JsonElement;
import com.google.gson.JsonObject;

/**
 * A CloudStack UserAuthenticator that asks a csext {@code user-authenticator} extension
 * (action {@code authenticate}).
 *
 * <p>Fails closed, as csext's handler does (handlers/user_authenticator.py): a broker that cannot
 * be reached, a deadline passed, an unknown or disabled extension, a malformed reply or csext's
 * own fallback answer all refuse the login without counting the attempt (it is not the user's
 * fault), with one WARN line saying why. The password is never logged. A denial by the extension
 * counts towards the lockout when its answer says so ({@code count_failed_attempt}); a denial that
 * does not count ("not my user") lets CloudStack's next authenticator decide.
 */
public class CsextUserAuthenticator extends AdapterBase implements UserAuthenticator {
    private static final Log LOG = Log.of(CsextUserAuthenticator.class);
    private final Bridge bridge = new Bridge();
    private volatile boolean quietAboutConfiguration;

    @Override
    public Pair<Boolean, ActionOnFailedAuthentication> authenticate(String username, String password, Long domainId,
            Map<String, Object[]> requestParameters) {
        if (username == null || username.isEmpty() || password == null || password.isEmpty()) {
            LOG.debug(prefix() + "username or password is empty; not asking the extension");
            return new Pair<>(false, null);
        }
        try {
            Reply reply = bridge.call(getName(), "authenticate",
                    Payloads.login(username, password, domainId, requestParameters));
            boolean authenticated = reply.requireBoolean("authenticated");
            String fallback = reply.fallbackReason();
            if (fallback != null) {
                LOG.warn(prefix() + "login of user '" + username + "' refused (fail-closed): " + fallback);
                return new Pair<>(false, null);
            }
            if (authenticated) {
                LOG.debug(prefix() + "user '" + username + "' authenticated");
                return new Pair<>(true, null);
            }
            boolean count = flag(reply.result, "count_failed_attempt");
            LOG.info(prefix() + "login of user '" + username + "' denied by the extension"
                    + (count ? " (counted towards the lockout)" : " (not counted)") + message(reply.result));
            return new Pair<>(false, count ? incrementAttempts() : null);
        } catch (RpcFailure failure) {
            if (!"bad-configuration".equals(failure.kind()) || !quietAboutConfiguration) {
                LOG.warn(prefix() + "login of user '" + username + "' refused (fail-closed): " + failure.why());
            }
            // Not configured yet: CloudStack appends unlisted authenticators to its chain, so say
            // it once, not on every failed login.
            quietAboutConfiguration = "bad-configuration".equals(failure.kind());
            return new Pair<>(false, null);
        } catch (RuntimeException | LinkageError e) {
            LOG.warn(prefix() + "login of user '" + username + "' refused (fail-closed): internal: " + e);
            return new Pair<>(false, null);
        }
    }

    /**
     * This authenticator stores nothing: the extension holds its users' secrets. CloudStack hashes a
     * new password with the first encoder whose encode() is not null (AccountManagerImpl.createUser
     * and updateUser loop over user.password.encoders.order), so null hands the job to the next
     * one. (LDAP's returns the password unchanged, which would store it in clear text if LDAP came
     * first in that order; null cannot.)
     */
    @Override
    public String encode(String password) {
        return null;
    }

    /** The enum's one constant, found by position: its spelling has changed upstream once. */
    static ActionOnFailedAuthentication incrementAttempts() {
        return ActionOnFailedAuthentication.values()[0];
    }

    static boolean flag(JsonObject result, String field) {
        JsonElement value = result.get(field);
        return !Reply.isNull(value) && value.isJsonPrimitive() && value.getAsJsonPrimitive().isBoolean()
                && value.getAsBoolean();
    }

    static String message(JsonObject result) {
        JsonElement value = result.get("message");
        return Reply.isNull(value) ? "" : ": " + value.getAsString();
    }

    private String prefix() {
        return "csext authenticator " + getName() + " (extension " + bridge.extension(getName()) + "): ";
    }

    // Bean properties, for the module's Spring XML (csext.properties overrides them).

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
