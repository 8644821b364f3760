package org.csext.cloudstack;

import java.lang.reflect.Method;
import java.util.logging.Level;
import java.util.logging.Logger;

/**
 * The management server's logger, whichever it has: Log4j 2 (CloudStack 4.20+), Log4j 1.2
 * (earlier releases), else java.util.logging. Found by reflection so that the jar links against
 * none of them and runs on every release.
 */
final class Log {
    private final String name;
    private final Object delegate;
    private final Method warn;
    private final Method info;
    private final Method debug;

    private Log(String name, Object delegate, Method warn, Method info, Method debug) {
        this.name = name;
        this.delegate = delegate;
        this.warn = warn;
        this.info = info;
        this.debug = debug;
    }

    static Log of(Class<?> owner) {
        String name = owner.getName();
        Log found = bind(name, "org.apache.logging.log4j.LogManager", String.class);
        if (found == null) {
            found = bind(name, "org.apache.log4j.Logger", Object.class);
        }
        return found != null ? found : new Log(name, null, null, null, null);
    }

    private static Log bind(String name, String factory, Class<?> argument) {
        try {
            Class<?> type = Class.forName(factory);
            Object logger = type.getMethod("getLogger", String.class).invoke(null, name);
            Class<?> api = logger.getClass();
            return new Log(name, logger, publicMethod(api, "warn", argument), publicMethod(api, "info", argument),
                    publicMethod(api, "debug", argument));
        } catch (ReflectiveOperationException | LinkageError | RuntimeException e) {
            return null;
        }
    }

    private static Method publicMethod(Class<?> type, String method, Class<?> argument)
            throws NoSuchMethodException {
        Method found = type.getMethod(method, argument);
        found.setAccessible(true);
        return found;
    }

    void warn(String message) {
        emit(warn, Level.WARNING, message);
    }

    void info(String message) {
        emit(info, Level.INFO, message);
    }

    void debug(String message) {
        emit(debug, Level.FINE, message);
    }

    private void emit(Method method, Level level, String message) {
        if (delegate != null) {
            try {
                method.invoke(delegate, message);
                return;
            } catch (ReflectiveOperationException | RuntimeException e) {
                // fall through to java.util.logging
            }
        }
        Logger.getLogger(name).log(level, message);
    }
}
