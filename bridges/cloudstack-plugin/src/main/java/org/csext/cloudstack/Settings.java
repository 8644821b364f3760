package org.csext.cloudstack;

import java.io.IOException;
import java.io.InputStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.Paths;
import java.util.Properties;

/**
 * Where an adapter's settings come from, first match wins:
 * <ol>
 * <li>{@code <adapter name>.<key>} in the properties file,</li>
 * <li>{@code <key>} in the properties file (shared by every csext adapter),</li>
 * <li>the bean's own property in the module's Spring XML,</li>
 * <li>the built-in default.</li>
 * </ol>
 * The file is {@code /etc/cloudstack/management/csext.properties} (the system property
 * {@code csext.properties} or the bean property {@code configFile} names another). It is read
 * again when it changes, so an operator edits it without restarting the management server.
 * Keys: {@code broker.url}, {@code extension}, {@code deadline.ms}.
 */
final class Settings {
    static final String FILE_PROPERTY = "csext.properties";
    static final String DEFAULT_FILE = "/etc/cloudstack/management/csext.properties";
    static final String DEFAULT_BROKER_URL = "amqp://guest:guest@localhost:5672";
    static final long DEFAULT_DEADLINE_MS = 3000;

    private static final Object LOCK = new Object();
    private static Path loadedPath;
    private static long loadedStamp = Long.MIN_VALUE;
    private static Properties loaded = new Properties();

    private final String adapter;
    private final Properties file;
    private final BeanDefaults bean;

    private Settings(String adapter, Properties file, BeanDefaults bean) {
        this.adapter = adapter;
        this.file = file;
        this.bean = bean;
    }

    /** The bean properties set in the Spring XML (null: not set). */
    static final class BeanDefaults {
        String configFile;
        String brokerUrl;
        String extension;
        Long deadlineMs;
    }

    static Settings of(String adapter, BeanDefaults bean) {
        return new Settings(adapter, properties(path(bean)), bean);
    }

    static Path path(BeanDefaults bean) {
        String named = System.getProperty(FILE_PROPERTY);
        if (named == null || named.isEmpty()) {
            named = bean.configFile != null ? bean.configFile : DEFAULT_FILE;
        }
        return Paths.get(named);
    }

    private static Properties properties(Path path) {
        long stamp;
        try {
            stamp = Files.getLastModifiedTime(path).toMillis() ^ Files.size(path);
        } catch (IOException e) {
            stamp = Long.MIN_VALUE + 1; // no file: bean properties and defaults only
        }
        synchronized (LOCK) {
            if (path.equals(loadedPath) && stamp == loadedStamp) {
                return loaded;
            }
            Properties fresh = new Properties();
            if (stamp != Long.MIN_VALUE + 1) {
                try (InputStream in = Files.newInputStream(path)) {
                    fresh.load(in);
                } catch (IOException e) {
                    fresh = new Properties();
                }
            }
            loadedPath = path;
            loadedStamp = stamp;
            loaded = fresh;
            return fresh;
        }
    }

    private String lookup(String key, String beanValue) {
        String value = file.getProperty(adapter + "." + key);
        if (value == null) {
            value = file.getProperty(key);
        }
        if (value == null) {
            value = beanValue;
        }
        return value == null ? null : value.trim();
    }

    String brokerUrl() {
        String url = lookup("broker.url", bean.brokerUrl);
        if (url == null || url.isEmpty()) {
            return DEFAULT_BROKER_URL;
        }
        // "amqp://host:5672/" means the default vhost "/" to csext's Python side; the Java client
        // would read an empty vhost there.
        int path = url.indexOf('/', url.indexOf("://") + 3);
        return path == url.length() - 1 ? url.substring(0, path) : url;
    }

    /** The extension to call; null when none is configured. */
    String extension() {
        String name = lookup("extension", bean.extension);
        return name == null || name.isEmpty() ? null : name;
    }

    long deadlineMs() {
        String value = lookup("deadline.ms", bean.deadlineMs == null ? null : bean.deadlineMs.toString());
        if (value == null || value.isEmpty()) {
            return DEFAULT_DEADLINE_MS;
        }
        try {
            long parsed = Long.parseLong(value);
            return parsed > 0 ? parsed : DEFAULT_DEADLINE_MS;
        } catch (NumberFormatException e) {
            return DEFAULT_DEADLINE_MS;
        }
    }
}
