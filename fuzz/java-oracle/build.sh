#!/usr/bin/env bash
# Builds the Java differential oracle (see README.md) into fuzz/java-oracle/build/.
# Needs a JDK, protoc and protobuf-java (Debian: openjdk-17-jdk-headless,
# protobuf-compiler, libprotobuf-java). Prints the classpath to use.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
jar="${PROTOBUF_JAR:-/usr/share/java/protobuf.jar}"
[ -f "$jar" ] || { echo "protobuf-java jar not found at $jar (set PROTOBUF_JAR)" >&2; exit 1; }
rm -rf "$here/build"
mkdir -p "$here/build/gen" "$here/build/classes"
protoc --proto_path="$root/proto" --java_out="$here/build/gen" "$root/proto/kpl_aggregation.proto"
mapfile -t generated < <(find "$here/build/gen" -name '*.java')
javac -nowarn -cp "$jar" -d "$here/build/classes" "${generated[@]}" "$here/Oracle.java"
echo "$here/build/classes:$jar"

