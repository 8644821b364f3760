// Compile-only stand-in (never packaged). Upstream: api/src/main/java/com/cloud/user/UserAccount.java
// The plugin reads a UserAccount by reflection (getId, getUsername, getAccountName, getDomainId,
// getEmail, getKeyFor2fa, getUser2faProvider; setKeyFor2fa after setup), so that the getters'
// return types, which changed between releases, cannot break it: the stand-in needs no members.
package com.cloud.user;

public interface UserAccount {
}
