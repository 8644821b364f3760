// Compile-only stand-in (never packaged).
// Upstream: engine/schema/src/main/java/com/cloud/capacity/dao/CapacityDao.java. Its elements are
// CapacityDaoImpl.SummedCapacity, read by reflection (public fields clusterId, sumTotal, sumUsed,
// sumReserved), so the stand-in needs only this method (present with this signature across 4.x).
package com.cloud.capacity.dao;

import java.util.List;

public interface CapacityDao {
    List<?> findCapacityBy(Integer capacityType, Long zoneId, Long podId, Long clusterId);
}
