#!/usr/bin/env bash
# Builds Ferry's runner image offline, for tests and local proofs: the same contents as
# runner/Dockerfile (static ferry-wrapper, node, the bundled publisher), assembled from
# this machine's node and gcc and imported into Docker without any registry.
set -euo pipefail
IMAGE="${1:-ferry-runner:local}"
cd "$(dirname "$0")/.."
ROOT="$(mktemp -d)"
trap 'rm -rf "$ROOT"' EXIT
mkdir -p "$ROOT/opt/ferry" "$ROOT/tmp"
chmod 1777 "$ROOT/tmp"
gcc -static -Os -s -o "$ROOT/opt/ferry/ferry-wrapper" runner/wrapper/ferry-wrapper.c
node scripts/bundle-publisher.mjs "$ROOT/opt/ferry/publisher.mjs" >/dev/null
NODE="$(command -v node)"
cp "$NODE" "$ROOT/opt/ferry/node"
# node's shared libraries, at the paths the dynamic loader looks for them.
for lib in $(ldd "$NODE" | grep -o '/[^ ]*'); do
  mkdir -p "$ROOT$(dirname "$lib")"
  cp -L "$lib" "$ROOT$lib"
done
tar -C "$ROOT" -c . | docker import \
  --change 'ENTRYPOINT ["/opt/ferry/node", "/opt/ferry/publisher.mjs"]' \
  - "$IMAGE" >/dev/null
echo "$IMAGE"
