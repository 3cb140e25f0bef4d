#!/usr/bin/env bash
# Runs the README's "Try it" commands as written, in this checkout: the first block (install,
# then `npm start`, left running in the background as in its own terminal) and the second (an
# image built offline, a job run on it), which must print `hello`. Used by .ci/run.
set -euo pipefail
cd "$(dirname "$0")/.."

# The ```sh blocks of the "## Try it" section, in order, as files try-1.sh, try-2.sh, …
work="$(mktemp -d)"
node -e '
  const fs = require("node:fs");
  const text = fs.readFileSync("README.md", "utf8");
  const section = text.slice(text.indexOf("## Try it"), text.indexOf("\n## ", text.indexOf("## Try it") + 1));
  const blocks = [...section.matchAll(/```sh\n([\s\S]*?)```/g)].map((m) => m[1]);
  blocks.forEach((block, i) => fs.writeFileSync(`${process.argv[1]}/try-${i + 1}.sh`, block));
' "$work"

first="$work/try-1.sh"
start_line=$(grep -n '^npm start$' "$first" | cut -d: -f1)
[[ -n "$start_line" ]] || { echo "the first Try-it block has no 'npm start' line" >&2; exit 1; }
echo "== README, first block, before npm start"
head -n "$((start_line - 1))" "$first" | bash -euxo pipefail

echo "== README, first block: npm start (in the background)"
# In a process group of its own, so that stopping it stops the server npm started too.
setsid npm start >"$work/server.log" 2>&1 &
server=$!
trap 'kill -TERM -- "-$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true' EXIT
for _ in $(seq 1 60); do
  grep -q 'serving on' "$work/server.log" && break
  kill -0 "$server" 2>/dev/null || { cat "$work/server.log"; echo "npm start exited" >&2; exit 1; }
  sleep 1
done
grep -q 'serving on' "$work/server.log" || { cat "$work/server.log"; echo "npm start did not serve" >&2; exit 1; }
grep 'serving on' "$work/server.log"

echo "== README, second block"
output=$(bash -euxo pipefail "$work/try-2.sh")
echo "$output"
[[ "$(echo "$output" | tail -n 1)" == "hello" ]] || { echo "expected the job to print hello" >&2; exit 1; }
echo "== the README's first commands run as written"
