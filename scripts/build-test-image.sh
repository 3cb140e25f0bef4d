#!/usr/bin/env bash
# Builds the offline test image `ferry-test:busybox`: a root file system holding only a
# static busybox, imported into the local Docker Engine (no registry is needed).
set -euo pipefail
IMAGE="${1:-ferry-test:busybox}"
BUSYBOX="$(command -v busybox || true)"
if [[ -z "$BUSYBOX" ]] || ! file -L "$BUSYBOX" 2>/dev/null | grep -q 'statically linked'; then
  for candidate in /bin/busybox /usr/bin/busybox; do
    if [[ -x "$candidate" ]]; then BUSYBOX="$candidate"; break; fi
  done
fi
if [[ -z "$BUSYBOX" ]]; then
  echo "build-test-image: no busybox found; install Debian's busybox-static" >&2
  exit 1
fi
ROOT="$(mktemp -d)"
trap 'rm -rf "$ROOT"' EXIT
mkdir -p "$ROOT/bin" "$ROOT/tmp" "$ROOT/etc"
cp "$BUSYBOX" "$ROOT/bin/busybox"
for applet in $("$BUSYBOX" --list); do
  [[ "$applet" == busybox ]] || ln -sf busybox "$ROOT/bin/$applet"
done
chmod 1777 "$ROOT/tmp"
echo 'root:x:0:0:root:/root:/bin/sh' > "$ROOT/etc/passwd"
tar -C "$ROOT" -c . | docker import \
  --change 'ENV PATH=/bin' \
  --change 'CMD ["/bin/sh"]' \
  - "$IMAGE" >/dev/null
echo "$IMAGE"
