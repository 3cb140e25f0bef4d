#!/usr/bin/env bash
# Builds `ferry-testjob:noshell`: an image holding one static program and nothing else —
# no shell, no libc — to prove that Ferry's Fargate task works for any image.
set -euo pipefail
IMAGE="${1:-ferry-testjob:noshell}"
cd "$(dirname "$0")/.."
ROOT="$(mktemp -d)"
trap 'rm -rf "$ROOT"' EXIT
gcc -static -Os -s -o "$ROOT/testjob" test/runner/testjob.c
tar -C "$ROOT" -c . | docker import - "$IMAGE" >/dev/null
echo "$IMAGE"
