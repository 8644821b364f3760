package org.csext.cloudstack;

import java.nio.charset.StandardCharsets;

import com.google.gson.JsonElement;
import com.google.gson.JsonObject;
import com.google.gson.JsonParser;

/**
 * A csext RPC reply (docs/protocol.md, "Reply"): the extension's exit code, csext's error if any,
 * and the hook's typed result (docs/hooks/). Anything else is a malformed reply.
 */
final class Reply {
    final Integer exitCode;
    final String errorKind;
    final String errorMessage;
    final JsonObject result;

    private Reply(Integer exitCode, String errorKind, String errorMessage, JsonObject result) {
        this.exitCode = exitCode;
        this.errorKind = errorKind;
        this.errorMessage = errorMessage;
        this.result = result;
    }

    @SuppressWarnings("deprecation") // JsonParser.parseString is Gson 2.8.6+; CloudStack has shipped older
    static Reply parse(byte[] body) throws RpcFailure {
        JsonElement root;
        try {
            root = new JsonParser().parse(new String(body, StandardCharsets.UTF_8));
        } catch (RuntimeException e) {
            throw new RpcFailure("malformed-reply", "the reply is not JSON (" + body.length + " bytes)");
        }
        if (root == null || !root.isJsonObject()) {
            throw new RpcFailure("malformed-reply", "the reply is not a JSON object");
        }
        JsonObject reply = root.getAsJsonObject();
        if (!reply.has("exit_code") && !reply.has("error")) {
            throw new RpcFailure("malformed-reply", "the reply has neither exit_code nor error");
        }
        try {
            Integer exit = isNull(reply.get("exit_code")) ? null : reply.get("exit_code").getAsInt();
            String kind = null;
            String message = null;
            JsonElement error = reply.get("error");
            if (!isNull(error)) {
                JsonObject fields = error.getAsJsonObject();
                kind = isNull(fields.get("kind")) ? "error" : fields.get("kind").getAsString();
                message = isNull(fields.get("message")) ? "" : fields.get("message").getAsString();
            }
            JsonElement result = reply.get("result");
            JsonObject typed = isNull(result) ? null : result.getAsJsonObject();
            return new Reply(exit, kind, message, typed);
        } catch (RuntimeException e) {
            throw new RpcFailure("malformed-reply", "the reply's fields have the wrong types: " + e.getMessage());
        }
    }

    static boolean isNull(JsonElement element) {
        return element == null || element.isJsonNull();
    }

    /** The typed result, or a failure saying why there is none. */
    JsonObject requireResult() throws RpcFailure {
        if (result == null) {
            if (errorKind != null) {
                throw new RpcFailure(errorKind, errorMessage);
            }
            throw new RpcFailure("malformed-reply", "the reply carries no result");
        }
        return result;
    }

    /** A boolean field of the result; a failure when it is missing or not a boolean. */
    boolean requireBoolean(String field) throws RpcFailure {
        JsonObject typed = requireResult();
        JsonElement value = typed.get(field);
        if (isNull(value) || !value.isJsonPrimitive() || !value.getAsJsonPrimitive().isBoolean()) {
            throw new RpcFailure("malformed-reply", "the result has no boolean '" + field + "'");
        }
        return value.getAsBoolean();
    }

    /** Why the answer came from csext's failure policy rather than the extension, or null. */
    String fallbackReason() {
        if (result != null && !isNull(result.get("fallback"))) {
            String why = result.get("fallback").getAsString();
            return errorKind != null ? why + " (" + errorKind + ": " + errorMessage + ")" : why;
        }
        return errorKind != null ? errorKind + ": " + errorMessage : null;
    }
}
