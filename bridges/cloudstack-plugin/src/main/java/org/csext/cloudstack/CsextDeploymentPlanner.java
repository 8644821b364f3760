package org.csext.cloudstack;

import java.util.ArrayList;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Set;

import javax.inject.Inject;

import com.cloud.capacity.dao.CapacityDao;
import com.cloud.deploy.DeploymentClusterPlanner;
import com.cloud.deploy.DeploymentPlan;
import com.cloud.deploy.FirstFitPlanner;
import com.cloud.exception.InsufficientServerCapacityException;
import com.cloud.vm.VirtualMachineProfile;
import com.google.gson.JsonArray;
import com.google.gson.JsonElement;
import com.google.gson.JsonObject;

/**
 * A CloudStack deployment planner that lets a csext {@code deployment-planner} extension order the
 * clusters. It extends CloudStack's FirstFitPlanner, as UserConcentratedPodPlanner and
 * UserDispersingPlanner do: FirstFit lists the clusters with capacity (avoid set, thresholds,
 * disabled pods already applied), the extension reorders them or leaves some out.
 *
 * <p>Fails open, as csext's handler does (handlers/deployment_planner.py): when the extension
 * cannot be asked or answers garbage, {@code canHandle} is FirstFit's answer and
 * {@code orderClusters} is FirstFit's order, so deployments go on as without csext (one WARN line
 * says why). The extension can never add a cluster FirstFit did not offer.
 */
public class CsextDeploymentPlanner extends FirstFitPlanner implements DeploymentClusterPlanner {
    private static final Log LOG = Log.of(CsextDeploymentPlanner.class);
    private static final int CAPACITY_TYPE_MEMORY = 0; // com.cloud.capacity.Capacity
    private static final int CAPACITY_TYPE_CPU = 1;
    private final Bridge bridge = new Bridge();

    @Inject
    private CapacityDao csextCapacityDao;

    @Override
    public boolean canHandle(VirtualMachineProfile vm, DeploymentPlan plan, ExcludeList avoid) {
        try {
            Reply reply = bridge.call(getName(), "can-handle", Payloads.planning(vm, plan, avoid, null));
            boolean yes = reply.requireBoolean("can_handle");
            String fallback = reply.fallbackReason();
            if (fallback == null) {
                return yes;
            }
            LOG.warn(prefix() + "can-handle fell back to FirstFit's answer (fail-open): " + fallback);
        } catch (RpcFailure failure) {
            LOG.warn(prefix() + "can-handle fell back to FirstFit's answer (fail-open): " + failure.why());
        } catch (RuntimeException | LinkageError e) {
            LOG.warn(prefix() + "can-handle fell back to FirstFit's answer (fail-open): internal: " + e);
        }
        return defaultCanHandle(vm, plan, avoid);
    }

    @Override
    public List<Long> orderClusters(VirtualMachineProfile vm, DeploymentPlan plan, ExcludeList avoid)
            throws InsufficientServerCapacityException {
        List<Long> candidates = defaultOrder(vm, plan, avoid);
        if (candidates == null || candidates.isEmpty()) {
            return candidates; // nothing to order: FirstFit's answer (and its log) stands
        }
        try {
            JsonArray described = describe(candidates, Reflect.get(plan, "getDataCenterId"));
            Reply reply = bridge.call(getName(), "order-clusters", Payloads.planning(vm, plan, avoid, described));
            JsonObject result = reply.requireResult();
            String fallback = reply.fallbackReason();
            if (fallback != null) {
                LOG.warn(prefix() + "kept FirstFit's cluster order (fail-open): " + fallback);
                return candidates;
            }
            if (CsextUserAuthenticator.flag(result, "no_preference")) {
                return candidates;
            }
            return chosen(result.get("cluster_ids"), candidates);
        } catch (RpcFailure failure) {
            LOG.warn(prefix() + "kept FirstFit's cluster order (fail-open): " + failure.why());
        } catch (RuntimeException | LinkageError e) {
            LOG.warn(prefix() + "kept FirstFit's cluster order (fail-open): internal: " + e);
        }
        return candidates;
    }

    /** The extension's ids that FirstFit offered, in the extension's order. */
    private List<Long> chosen(JsonElement ids, List<Long> candidates) throws RpcFailure {
        if (Reply.isNull(ids) || !ids.isJsonArray()) {
            throw new RpcFailure("malformed-reply", "order-clusters result has neither cluster_ids nor no_preference");
        }
        Set<Long> offered = new LinkedHashSet<>(candidates);
        List<Long> order = new ArrayList<>();
        List<Long> foreign = new ArrayList<>();
        for (JsonElement id : ids.getAsJsonArray()) {
            long cluster = id.getAsLong();
            if (offered.contains(cluster)) {
                if (!order.contains(cluster)) {
                    order.add(cluster);
                }
            } else {
                foreign.add(cluster);
            }
        }
        if (!foreign.isEmpty()) {
            LOG.warn(prefix() + "ignored clusters FirstFit did not offer: " + foreign);
        }
        if (order.isEmpty()) {
            LOG.warn(prefix() + "the extension kept none of FirstFit's clusters " + candidates + "; kept FirstFit's order");
            return candidates;
        }
        LOG.debug(prefix() + "cluster order " + order + " (FirstFit offered " + candidates + ")");
        return order;
    }

    /** The candidates with their memory and CPU capacity, as far as the capacity table tells. */
    private JsonArray describe(List<Long> clusters, Object zoneId) {
        JsonArray out = new JsonArray();
        for (Long cluster : clusters) {
            JsonObject item = new JsonObject();
            item.addProperty("id", cluster);
            long[] memory = capacity(CAPACITY_TYPE_MEMORY, zoneId, cluster);
            if (memory != null) {
                item.addProperty("total_memory", memory[0]);
                item.addProperty("used_memory", memory[1]);
                item.addProperty("free_memory", Math.max(0, memory[0] - memory[1]));
            }
            long[] cpu = capacity(CAPACITY_TYPE_CPU, zoneId, cluster);
            if (cpu != null) {
                item.addProperty("total_cpu", cpu[0]);
                item.addProperty("used_cpu", cpu[1]);
            }
            out.add(item);
        }
        return out;
    }

    /** {total, used + reserved} of one capacity type in one cluster, or null when unknown. */
    private long[] capacity(int type, Object zoneId, Long cluster) {
        if (csextCapacityDao == null) {
            return null;
        }
        try {
            Long zone = zoneId instanceof Number ? ((Number) zoneId).longValue() : null;
            List<?> rows = csextCapacityDao.findCapacityBy(type, zone, null, cluster);
            if (rows == null || rows.isEmpty()) {
                return null;
            }
            long total = 0;
            long used = 0;
            for (Object row : rows) {
                total += number(Reflect.field(row, "sumTotal"));
                used += number(Reflect.field(row, "sumUsed")) + number(Reflect.field(row, "sumReserved"));
            }
            return new long[] {total, used};
        } catch (RuntimeException | LinkageError e) {
            LOG.debug(prefix() + "no capacity for cluster " + cluster + ": " + e);
            return null;
        }
    }

    private static long number(Object value) {
        return value instanceof Number ? ((Number) value).longValue() : 0L;
    }

    /** FirstFit's cluster list for this VM (the candidates the extension orders). */
    protected List<Long> defaultOrder(VirtualMachineProfile vm, DeploymentPlan plan, ExcludeList avoid)
            throws InsufficientServerCapacityException {
        return super.orderClusters(vm, plan, avoid);
    }

    /** FirstFit's canHandle: the answer when the extension cannot be asked. */
    protected boolean defaultCanHandle(VirtualMachineProfile vm, DeploymentPlan plan, ExcludeList avoid) {
        return super.canHandle(vm, plan, avoid);
    }

    private String prefix() {
        return "csext planner " + getName() + " (extension " + bridge.extension(getName()) + "): ";
    }

    public void setCapacityDao(CapacityDao capacityDao) {
        this.csextCapacityDao = capacityDao;
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
