#!/usr/bin/env bash
# Install the HTTP cache conformance suite (http-cache-tests, the version
# pinned in package-lock.json) into tests/conformance/node_modules for
# test_conformance.py. Needs Node 20 and npm; the npm registry is the
# only network it uses, and nothing at all once the pinned version is
# installed. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")"

if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
    echo "setup.sh: node and npm are needed (Node 20)" >&2
    exit 1
fi

pinned=$(node -p 'require("./package-lock.json").packages["node_modules/http-cache-tests"].version')
installed=$(node -p 'try { require("./node_modules/http-cache-tests/package.json").version } catch { "" }')
if [ "$installed" = "$pinned" ] && [ -d node_modules/node-fetch ]; then
    exit 0
fi

npm ci --no-audit --no-fund --loglevel=error
