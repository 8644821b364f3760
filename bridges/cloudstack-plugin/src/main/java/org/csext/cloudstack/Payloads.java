package org.csext.cloudstack;

import java.util.ArrayList;
import java.util.List;
import java.util.Locale;
import java.util.Map;

import com.cloud.deploy.DeploymentPlanner.ExcludeList;
import com.google.gson.JsonArray;
import com.google.gson.JsonObject;
import com.google.gson.JsonPrimitive;

/**
 * The hooks' payloads (docs/hooks/*.md; schemas/hooks/*.py) built from CloudStack's arguments.
 * Field names are csext's snake_case; anything CloudStack cannot give is left out.
 */
final class Payloads {
    private Payloads() {
    }

    /** user-authenticator: username, password, domain_id, domain (path), request_parameters. */
    static JsonObject login(String username, String password, Long domainId, Map<String, Object[]> parameters) {
        JsonObject payload = new JsonObject();
        payload.addProperty("username", username);
        payload.addProperty("password", password);
        if (domainId != null) {
            payload.addProperty("domain_id", domainId);
        }
        JsonObject params = new JsonObject();
        if (parameters != null) {
            for (Map.Entry<String, Object[]> entry : parameters.entrySet()) {
                String key = entry.getKey();
                if (key == null || key.toLowerCase(Locale.ROOT).contains("password")) {
                    continue; // the password travels once, as "password"
                }
                JsonArray values = new JsonArray();
                for (Object value : entry.getValue() == null ? new Object[0] : entry.getValue()) {
                    values.add(new JsonPrimitive(String.valueOf(value)));
                }
                params.add(key, values);
                if ("domain".equals(key) && values.size() > 0) {
                    payload.addProperty("domain", values.get(0).getAsString());
                }
            }
        }
        payload.add("request_parameters", params);
        return payload;
    }

    /** two-factor: user_account (key = the stored 2FA secret), plus the code for check. */
    static JsonObject twoFactor(Object userAccount, String code) {
        JsonObject payload = new JsonObject();
        if (code != null) {
            payload.addProperty("code", code);
        }
        JsonObject account = new JsonObject();
        Reflect.copy(account, "id", userAccount, "getId");
        Reflect.copy(account, "uuid", userAccount, "getUuid");
        Reflect.copy(account, "username", userAccount, "getUsername");
        Reflect.copy(account, "account_name", userAccount, "getAccountName");
        Reflect.copy(account, "domain_id", userAccount, "getDomainId");
        Reflect.copy(account, "email", userAccount, "getEmail");
        Reflect.copy(account, "key", userAccount, "getKeyFor2fa");
        Reflect.copy(account, "provider", userAccount, "getUser2faProvider");
        if (!account.has("username")) {
            account.addProperty("username", "");
        }
        payload.add("user_account", account);
        return payload;
    }

    /** deployment-planner: vm, plan, avoid, and the candidate clusters when known. */
    static JsonObject planning(Object vm, Object plan, ExcludeList avoid, JsonArray clusters) {
        JsonObject payload = new JsonObject();
        payload.add("vm", vm(vm));
        payload.add("plan", plan(plan));
        payload.add("avoid", avoid(avoid));
        if (clusters != null) {
            payload.add("clusters", clusters);
        }
        return payload;
    }

    private static JsonObject vm(Object vm) {
        JsonObject out = new JsonObject();
        Reflect.copy(out, "id", vm, "getId");
        Reflect.copy(out, "uuid", vm, "getUuid");
        Reflect.copy(out, "name", vm, "getInstanceName");
        Reflect.copy(out, "type", vm, "getType");
        Reflect.copy(out, "hypervisor_type", vm, "getHypervisorType");
        Object template = Reflect.get(vm, "getTemplateId");
        if (template != null) {
            out.addProperty("template_id", String.valueOf(template));
        }
        Object owner = Reflect.get(vm, "getOwner");
        Object ownerName = Reflect.get(owner, "getAccountName");
        if (ownerName != null) {
            out.addProperty("owner", String.valueOf(ownerName));
        }
        Object offering = Reflect.get(vm, "getServiceOffering");
        if (offering != null) {
            JsonObject so = new JsonObject();
            Object uuid = Reflect.get(offering, "getUuid");
            if (uuid != null) {
                so.addProperty("id", String.valueOf(uuid));
            }
            Reflect.copy(so, "name", offering, "getName");
            Reflect.copy(so, "cpu", offering, "getCpu");
            Reflect.copy(so, "speed", offering, "getSpeed");
            Reflect.copy(so, "ram_size", offering, "getRamSize");
            out.add("service_offering", so);
        }
        return out;
    }

    private static JsonObject plan(Object plan) {
        JsonObject out = new JsonObject();
        Reflect.copy(out, "data_center_id", plan, "getDataCenterId");
        Reflect.copy(out, "pod_id", plan, "getPodId");
        Reflect.copy(out, "cluster_id", plan, "getClusterId");
        Reflect.copy(out, "host_id", plan, "getHostId");
        Reflect.copy(out, "pool_id", plan, "getPoolId");
        return out;
    }

    private static JsonObject avoid(ExcludeList avoid) {
        JsonObject out = new JsonObject();
        if (avoid != null) {
            out.add("data_centers", Reflect.json(sorted(avoid.getDataCentersToAvoid())));
            out.add("pods", Reflect.json(sorted(avoid.getPodsToAvoid())));
            out.add("clusters", Reflect.json(sorted(avoid.getClustersToAvoid())));
            out.add("hosts", Reflect.json(sorted(avoid.getHostsToAvoid())));
            out.add("pools", Reflect.json(sorted(avoid.getPoolsToAvoid())));
        }
        return out;
    }

    private static List<Long> sorted(java.util.Collection<Long> ids) {
        List<Long> out = ids == null ? new ArrayList<>() : new ArrayList<>(ids);
        out.sort(null);
        return out;
    }
}
