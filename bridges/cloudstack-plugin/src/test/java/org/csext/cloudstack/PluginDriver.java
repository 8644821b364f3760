package org.csext.cloudstack;

import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;

import org.apache.cloudstack.auth.UserAuthenticator.ActionOnFailedAuthentication;

import com.cloud.capacity.dao.CapacityDao;
import com.cloud.deploy.DeploymentPlan;
import com.cloud.deploy.DeploymentPlanner.ExcludeList;
import com.cloud.user.UserAccount;
import com.cloud.utils.Pair;
import com.cloud.vm.VirtualMachineProfile;
import com.google.gson.JsonArray;
import com.google.gson.JsonElement;
import com.google.gson.JsonObject;
import com.google.gson.JsonParser;

/**
 * Drives the plugin's adapters as CloudStack would, for tests/plugin/: one JSON request per stdin
 * line, one JSON answer per stdout line, with the wall time of the adapter call. The adapters
 * read their settings from the file named by -Dcsext.properties; logs go to stderr.
 *
 * <pre>
 * {"op": "auth", "adapter": "CSEXT", "username": "alice", "password": "...", "domain_id": 1}
 * {"op": "check2fa", "adapter": "csext", "code": "123456", "user": {"username": "alice", "key": "..."}}
 * {"op": "setup2fa", "adapter": "csext", "user": {"username": "alice"}}
 * {"op": "can_handle" | "order", "adapter": "CsextPlanner", "vm": {"type": "User", "ram_size": 512},
 *  "candidates": [1, 2, 3], "capacity": {"1": [total, used]}, "avoid": [4], "firstfit_can_handle": true}
 * </pre>
 */
public final class PluginDriver {
    private final Map<String, Object> adapters = new HashMap<>();

    public static void main(String[] args) throws Exception {
        PluginDriver driver = new PluginDriver();
        BufferedReader in = new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8));
        String line;
        while ((line = in.readLine()) != null) {
            if (line.trim().isEmpty()) {
                continue;
            }
            @SuppressWarnings("deprecation")
            JsonObject request = new JsonParser().parse(line).getAsJsonObject();
            JsonObject answer = driver.run(request);
            System.out.println(answer);
            System.out.flush();
        }
    }

    private JsonObject run(JsonObject request) throws Exception {
        String op = request.get("op").getAsString();
        String adapter = request.get("adapter").getAsString();
        JsonObject answer = new JsonObject();
        long started = System.nanoTime();
        switch (op) {
            case "auth":
                auth(adapter, request, answer);
                break;
            case "encode":
                answer.addProperty("encoded",
                        adapter(adapter, CsextUserAuthenticator.class).encode(request.get("password").getAsString()));
                break;
            case "check2fa":
                check2fa(adapter, request, answer);
                break;
            case "setup2fa":
                setup2fa(adapter, request, answer);
                break;
            case "can_handle":
                answer.addProperty("can_handle", planner(adapter, request).canHandle(
                        new Vm(request.getAsJsonObject("vm")), new Plan(), avoid(request)));
                break;
            case "order":
                List<Long> order = planner(adapter, request).orderClusters(
                        new Vm(request.getAsJsonObject("vm")), new Plan(), avoid(request));
                answer.add("clusters", Reflect.json(order));
                break;
            default:
                throw new IllegalArgumentException("unknown op " + op);
        }
        long elapsed = System.nanoTime() - started;
        answer.addProperty("ms", elapsed / 1_000_000);
        answer.addProperty("us", elapsed / 1_000);
        return answer;
    }

    private void auth(String name, JsonObject request, JsonObject answer) throws Exception {
        CsextUserAuthenticator authenticator = adapter(name, CsextUserAuthenticator.class);
        Map<String, Object[]> parameters = new HashMap<>();
        parameters.put("command", new Object[] {"login"});
        parameters.put("password", new Object[] {request.get("password").getAsString()});
        Long domain = request.has("domain_id") ? request.get("domain_id").getAsLong() : null;
        Pair<Boolean, ActionOnFailedAuthentication> result = authenticator.authenticate(
                request.get("username").getAsString(), request.get("password").getAsString(), domain, parameters);
        answer.addProperty("authenticated", result.first());
        answer.addProperty("action", result.second() == null ? null : result.second().name());
    }

    private void check2fa(String name, JsonObject request, JsonObject answer) throws Exception {
        CsextTwoFactorAuthenticator provider = adapter(name, CsextTwoFactorAuthenticator.class);
        try {
            provider.check2FA(request.get("code").getAsString(), new Account(request.getAsJsonObject("user")));
            answer.addProperty("passed", true);
        } catch (RuntimeException e) {
            answer.addProperty("passed", false);
            answer.addProperty("exception", e.getClass().getName());
            answer.addProperty("message", e.getMessage());
        }
    }

    private void setup2fa(String name, JsonObject request, JsonObject answer) throws Exception {
        CsextTwoFactorAuthenticator provider = adapter(name, CsextTwoFactorAuthenticator.class);
        Account account = new Account(request.getAsJsonObject("user"));
        try {
            answer.addProperty("secret", provider.setup2FAKey(account));
            answer.addProperty("stored", account.key);
        } catch (RuntimeException e) {
            answer.addProperty("exception", e.getClass().getName());
            answer.addProperty("message", e.getMessage());
        }
    }

    private DriverPlanner planner(String name, JsonObject request) throws Exception {
        DriverPlanner planner = adapter(name, DriverPlanner.class);
        planner.candidates = new ArrayList<>();
        for (JsonElement id : request.has("candidates") ? request.getAsJsonArray("candidates") : new JsonArray()) {
            planner.candidates.add(id.getAsLong());
        }
        planner.firstFitCanHandle = !request.has("firstfit_can_handle")
                || request.get("firstfit_can_handle").getAsBoolean();
        planner.setCapacityDao(new Capacities(request.has("capacity") ? request.getAsJsonObject("capacity")
                : new JsonObject()));
        return planner;
    }

    private static ExcludeList avoid(JsonObject request) {
        Set<Long> clusters = new HashSet<>();
        if (request.has("avoid")) {
            for (JsonElement id : request.getAsJsonArray("avoid")) {
                clusters.add(id.getAsLong());
            }
        }
        return new ExcludeList(null, null, clusters, null, null);
    }

    /** One adapter per name, built as Spring builds a bean: constructor, name, configure, start. */
    private <T> T adapter(String name, Class<T> type) throws Exception {
        Object made = adapters.get(type.getSimpleName() + "/" + name);
        if (made == null) {
            made = type.getDeclaredConstructor().newInstance();
            com.cloud.utils.component.Adapter lifecycle = (com.cloud.utils.component.Adapter) made;
            lifecycle.setName(name);
            lifecycle.configure(name, new HashMap<>());
            lifecycle.start();
            adapters.put(type.getSimpleName() + "/" + name, made);
        }
        return type.cast(made);
    }

    /** FirstFit's part, which needs CloudStack's database, given by the request instead. */
    public static final class DriverPlanner extends CsextDeploymentPlanner {
        List<Long> candidates = new ArrayList<>();
        boolean firstFitCanHandle = true;

        @Override
        protected List<Long> defaultOrder(VirtualMachineProfile vm, DeploymentPlan plan, ExcludeList avoid) {
            return new ArrayList<>(candidates);
        }

        @Override
        protected boolean defaultCanHandle(VirtualMachineProfile vm, DeploymentPlan plan, ExcludeList avoid) {
            return firstFitCanHandle;
        }
    }

    /** The getters of CloudStack's UserAccount the plugin reads. */
    public static final class Account implements UserAccount {
        private final JsonObject fields;
        String key;

        Account(JsonObject fields) {
            this.fields = fields;
            this.key = text("key");
        }

        private String text(String field) {
            return fields.has(field) ? fields.get(field).getAsString() : null;
        }

        public long getId() {
            return fields.has("id") ? fields.get("id").getAsLong() : 2L;
        }

        public String getUsername() {
            return text("username");
        }

        public String getAccountName() {
            return "admin";
        }

        public Long getDomainId() {
            return 1L;
        }

        public String getKeyFor2fa() {
            return key;
        }

        public void setKeyFor2fa(String key) {
            this.key = key;
        }

        public String getUser2faProvider() {
            return "csext";
        }
    }

    /** The getters of CloudStack's VirtualMachineProfile (and ServiceOffering) the plugin reads. */
    public static final class Vm implements VirtualMachineProfile {
        private final JsonObject fields;

        Vm(JsonObject fields) {
            this.fields = fields == null ? new JsonObject() : fields;
        }

        public long getId() {
            return 42L;
        }

        public String getUuid() {
            return "2b7a768a-3bc2-4c3c-ae05-2b3480b53478";
        }

        public String getInstanceName() {
            return "i-2-42-VM";
        }

        public String getType() {
            return fields.has("type") ? fields.get("type").getAsString() : "User";
        }

        public String getHypervisorType() {
            return "KVM";
        }

        public Offering getServiceOffering() {
            return new Offering(fields.has("ram_size") ? fields.get("ram_size").getAsInt() : 512);
        }
    }

    public static final class Offering {
        private final int ramSize;

        Offering(int ramSize) {
            this.ramSize = ramSize;
        }

        public Integer getCpu() {
            return 1;
        }

        public Integer getSpeed() {
            return 1000;
        }

        public Integer getRamSize() {
            return ramSize;
        }
    }

    public static final class Plan implements DeploymentPlan {
        public long getDataCenterId() {
            return 1L;
        }

        public Long getPodId() {
            return null;
        }
    }

    /** CapacityDao rows shaped as CapacityDaoImpl.SummedCapacity (public fields). */
    public static final class Capacities implements CapacityDao {
        private final JsonObject byCluster;

        Capacities(JsonObject byCluster) {
            this.byCluster = byCluster;
        }

        @Override
        public List<?> findCapacityBy(Integer capacityType, Long zoneId, Long podId, Long clusterId) {
            List<Row> rows = new ArrayList<>();
            JsonElement entry = byCluster.get(String.valueOf(clusterId));
            if (capacityType == 0 && entry != null) {
                JsonArray pair = entry.getAsJsonArray();
                rows.add(new Row(clusterId, pair.get(0).getAsLong(), pair.get(1).getAsLong()));
            }
            return rows;
        }
    }

    public static final class Row {
        public Long clusterId;
        public long sumTotal;
        public long sumUsed;
        public long sumReserved;

        Row(Long clusterId, long total, long used) {
            this.clusterId = clusterId;
            this.sumTotal = total;
            this.sumUsed = used;
            this.sumReserved = 0;
        }
    }
}
