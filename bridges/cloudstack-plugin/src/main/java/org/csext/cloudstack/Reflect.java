package org.csext.cloudstack;

import java.lang.reflect.Field;
import java.lang.reflect.Method;
import java.util.Collection;

import com.google.gson.JsonArray;
import com.google.gson.JsonElement;
import com.google.gson.JsonNull;
import com.google.gson.JsonObject;
import com.google.gson.JsonPrimitive;

/**
 * Reads CloudStack objects by getter name. The payloads describe VMs, plans and user accounts
 * whose getters changed return types across releases (int to Integer, HypervisorType from enum to
 * class in 4.21); reading them by name keeps one jar working on all of them, and a getter a
 * release lacks simply leaves its field out.
 */
final class Reflect {
    private Reflect() {
    }

    /** {@code target.getter()}, or null when there is no such getter or it fails. */
    static Object get(Object target, String getter) {
        if (target == null) {
            return null;
        }
        try {
            Method method = target.getClass().getMethod(getter);
            method.setAccessible(true); // public method of a non-public class (proxies, test doubles)
            return method.invoke(target);
        } catch (ReflectiveOperationException | RuntimeException | LinkageError e) {
            return null;
        }
    }

    /** A public field's value (CapacityDaoImpl.SummedCapacity exposes fields), or null. */
    static Object field(Object target, String name) {
        if (target == null) {
            return null;
        }
        try {
            Field field = target.getClass().getField(name);
            field.setAccessible(true);
            return field.get(target);
        } catch (ReflectiveOperationException | RuntimeException e) {
            return null;
        }
    }

    /** Calls {@code target.setter(value)} if there is such a one-String-argument method. */
    static boolean set(Object target, String setter, String value) {
        try {
            Method method = target.getClass().getMethod(setter, String.class);
            method.setAccessible(true);
            method.invoke(target, value);
            return true;
        } catch (ReflectiveOperationException | RuntimeException | LinkageError e) {
            return false;
        }
    }

    /** JSON for a value: numbers and booleans as such, collections as arrays, the rest as text. */
    static JsonElement json(Object value) {
        if (value == null) {
            return JsonNull.INSTANCE;
        }
        if (value instanceof Number) {
            return new JsonPrimitive((Number) value);
        }
        if (value instanceof Boolean) {
            return new JsonPrimitive((Boolean) value);
        }
        if (value instanceof Collection) {
            JsonArray array = new JsonArray();
            for (Object item : (Collection<?>) value) {
                array.add(json(item));
            }
            return array;
        }
        return new JsonPrimitive(String.valueOf(value));
    }

    /** Adds {@code target.getter()} as {@code key} when the getter exists and is not null. */
    static void copy(JsonObject into, String key, Object target, String getter) {
        Object value = get(target, getter);
        if (value != null) {
            into.add(key, json(value));
        }
    }
}
