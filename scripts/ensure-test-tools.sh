#!/usr/bin/env bash
# Install the tools the test suite drives besides Python and RabbitMQ, so that nothing is skipped
# on a fresh machine: Groovy (the KVM agent hooks), the JDK and the jars of the CloudStack plugin
# (RabbitMQ Java client, Gson, JUnit 5), and Chromium for the web UI tests (Playwright drives
# Debian's package; its own browser download does not work offline).
#
# Idempotent, never reads stdin (CI has none). As root: apt-get, non-interactive, one update only
# when something is missing. Anyone else: prints the command to run and exits 1.
# Environment: CSEXT_TEST_TOOLS_SKIP=1 skips the check (e.g. a machine managed otherwise).
set -euo pipefail

# Debian package -> a file it installs (cheaper and more exact than asking dpkg per package).
declare -A PACKAGES=(
    [groovy]=/usr/bin/groovy
    [openjdk-17-jdk-headless]=/usr/lib/jvm/java-17-openjdk-amd64/bin/javac
    [librabbitmq-client-java]=/usr/share/java/amqp-client.jar
    [libgoogle-gson-java]=/usr/share/java/gson.jar
    [junit5]=/usr/share/java/junit-platform-console-standalone.jar
    [chromium]=/usr/bin/chromium
)

step() { printf 'ensure-test-tools: %s\n' "$*"; }

if [[ "${CSEXT_TEST_TOOLS_SKIP:-}" == 1 ]]; then
    exit 0
fi

missing=()
for package in "${!PACKAGES[@]}"; do
    path="${PACKAGES[$package]}"
    if [[ "$package" == openjdk-17-jdk-headless ]]; then
        # any architecture's JDK 17 will do
        compgen -G "/usr/lib/jvm/java-17-openjdk-*/bin/javac" >/dev/null && continue
    elif [[ -e "$path" ]]; then
        continue
    fi
    missing+=("$package")
done

if [[ ${#missing[@]} -eq 0 ]]; then
    exit 0
fi
IFS=$'\n' missing=($(sort <<<"${missing[*]}")); unset IFS
if [[ "$(id -u)" != 0 ]] || ! command -v apt-get >/dev/null 2>&1; then
    printf 'ensure-test-tools: error: missing %s; install them with\n' "${missing[*]}" >&2
    printf '  sudo apt-get update && sudo apt-get install -y %s\n' "${missing[*]}" >&2
    exit 1
fi
step "installing ${missing[*]} with apt-get"
export DEBIAN_FRONTEND=noninteractive
apt-get update -q </dev/null >/dev/null
apt-get install -y -q --no-install-recommends "${missing[@]}" </dev/null >/dev/null
step "installed ${missing[*]}"
