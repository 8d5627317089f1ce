#!/usr/bin/env bash
# Idempotent build of the e2e Next.js site: installs node_modules from the lock when missing, runs `next build`
# when there is no build yet or a source is newer than it. Prints nothing interesting when there is nothing to do.
set -euo pipefail
cd "$(dirname "$0")"
export NEXT_TELEMETRY_DISABLED=1

if [ ! -d node_modules/next ] || [ ! -d node_modules/playwright-core ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  npm ci --no-audit --no-fund
fi

need_build=0
if [ ! -f .next/BUILD_ID ]; then
  need_build=1
elif [ -n "$(find pages next.config.js package.json package-lock.json -newer .next/BUILD_ID -print -quit)" ]; then
  need_build=1
fi

if [ "$need_build" = 1 ]; then
  rm -rf .next
  npx --no-install next build
fi
cat .next/BUILD_ID
echo
