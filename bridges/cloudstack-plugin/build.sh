#!/usr/bin/env bash
# Build the csext CloudStack plugin with the JDK alone (no Maven, works offline):
#   bash bridges/cloudstack-plugin/build.sh [jar|test]
#   jar  (default) build/csext-cloudstack-plugin-<version>.jar
#   test           the jar, plus build/test-classes (the Java test driver of tests/plugin/)
#
# Compiles against the RabbitMQ Java client and Gson from /usr/share/java (Debian's
# librabbitmq-client-java, libgoogle-gson-java) and against standins/, minimal copies of the
# CloudStack types the plugin uses (never packaged: CloudStack provides the real ones).
# Environment: JAVA_LIBS (default /usr/share/java), CSEXT_VERSION (default: pyproject.toml's).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
libs="${JAVA_LIBS:-/usr/share/java}"
version="${CSEXT_VERSION:-$(sed -n 's/^version = "\(.*\)"/\1/p' "$root/pyproject.toml" | head -1)}"
build="$here/build"
jar="$build/csext-cloudstack-plugin-$version.jar"
wire="$libs/amqp-client.jar:$libs/gson.jar"

for tool in javac jar; do
    command -v "$tool" >/dev/null || { echo "build.sh: $tool not found (apt-get install openjdk-17-jdk-headless)" >&2; exit 1; }
done
for lib in amqp-client gson; do
    [[ -f "$libs/$lib.jar" ]] || { echo "build.sh: $libs/$lib.jar missing (make test-tools installs it)" >&2; exit 1; }
done

rm -rf "$build/standins" "$build/classes" "$build/test-classes"
mkdir -p "$build/standins" "$build/classes"
# --release 11: the management server runs on Java 11 (4.18, 4.19) or 17 (4.20 and later).
# Short-lived compiler JVMs: C1 only and the serial GC cost less CPU than the defaults.
jvm=(-J-XX:TieredStopAtLevel=1 -J-XX:+UseSerialGC)
javac_opts=("${jvm[@]}" --release 11 -encoding UTF-8 -Xlint:all,-options -Werror)

# The stand-ins mirror upstream code as it is (its warnings included); the plugin is -Werror clean.
javac "${jvm[@]}" --release 11 -encoding UTF-8 -nowarn -Xlint:none -d "$build/standins" $(find "$here/standins" -name '*.java' | sort)
javac "${javac_opts[@]}" -cp "$build/standins:$wire" -d "$build/classes" \
    $(find "$here/src/main/java" -name '*.java' | sort)
cp -r "$here/src/main/resources/." "$build/classes/"
printf 'Implementation-Title: csext CloudStack plugin\nImplementation-Version: %s\n' "$version" \
    > "$build/MANIFEST.add"
rm -f "$build"/csext-cloudstack-plugin-*.jar
jar --create --file "$jar" --manifest "$build/MANIFEST.add" -C "$build/classes" .
echo "built $jar"

if [[ "${1:-jar}" == test ]]; then
    mkdir -p "$build/test-classes"
    javac "${javac_opts[@]}" -cp "$jar:$build/standins:$wire" -d "$build/test-classes" \
        $(find "$here/src/test/java" -name '*.java' | sort)
    echo "built $build/test-classes"
fi
