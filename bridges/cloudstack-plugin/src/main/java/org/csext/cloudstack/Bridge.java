package org.csext.cloudstack;

import com.google.gson.JsonObject;

/**
 * What each adapter shares: its bean properties (set from the module's Spring XML), and one call
 * to its configured extension with the configured deadline.
 */
final class Bridge {
    final Settings.BeanDefaults bean = new Settings.BeanDefaults();

    /** The extension's reply to {@code action}; a failure names the extension and why. */
    Reply call(String adapter, String action, JsonObject payload) throws RpcFailure {
        Settings settings = Settings.of(adapter, bean);
        String extension = settings.extension();
        if (extension == null) {
            throw new RpcFailure("bad-configuration", "no extension configured for adapter '" + adapter + "': set "
                    + adapter + ".extension in " + Settings.path(bean));
        }
        long deadline = System.currentTimeMillis() + settings.deadlineMs();
        try {
            return RpcClient.forUrl(settings.brokerUrl()).call(extension, action, payload, deadline);
        } catch (RpcFailure failure) {
            throw new RpcFailure(failure.kind(), "extension '" + extension + "' " + action + ": "
                    + failure.getMessage(), failure.getCause());
        }
    }

    /** Connect ahead of the first call (adapters call this from start()). */
    void warmUp(String adapter) {
        Settings settings = Settings.of(adapter, bean);
        if (settings.extension() != null) {
            RpcClient.forUrl(settings.brokerUrl()).warmUp(System.currentTimeMillis() + settings.deadlineMs());
        }
    }

    /** The extension name for log lines ("?" when none is configured). */
    String extension(String adapter) {
        String name = Settings.of(adapter, bean).extension();
        return name == null ? "?" : name;
    }
}
