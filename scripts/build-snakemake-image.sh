#!/usr/bin/env bash
# Builds the offline image `ferry-test:snakemake` for running Snakemake workflows through
# snakemake-executor-plugin-tes: Python 3.12 (copied from this machine's pyenv, with the shared
# libraries its interpreter and extension modules need), Snakemake 9.27.1 and the S3 storage
# plugin (pinned below), real /bin/bash (the plugin runs `/bin/bash /tmp/run_snakemake.sh`) and a
# static busybox for every other tool. Only PyPI is used, for the pinned wheels; everything is
# assembled in a temporary directory and imported into Docker without any registry.
#
# The jobscript Snakemake writes starts with `pip install --target .snakemake/pip-deployments
# snakemake-storage-plugin-s3` (auto-deploy of the default storage provider). So that this works
# without PyPI, the image carries the wheels in /opt/wheels and sets PIP_NO_INDEX/PIP_FIND_LINKS.
set -euo pipefail
IMAGE="${1:-ferry-test:snakemake}"
PY_PREFIX="${PY_PREFIX:-$HOME/.pyenv/versions/3.12.1}"
PY="$PY_PREFIX/bin/python3.12"
[[ -x "$PY" ]] || { echo "build-snakemake-image: no Python 3.12 at $PY (set PY_PREFIX)" >&2; exit 1; }
[[ "$("$PY" -c 'import sys; print(sys.version.split()[0])')" == 3.12.* ]] || { echo "build-snakemake-image: $PY is not 3.12" >&2; exit 1; }

BUSYBOX="$(command -v busybox || true)"
if [[ -z "$BUSYBOX" ]] || ! file -L "$BUSYBOX" 2>/dev/null | grep -q 'statically linked'; then
  BUSYBOX=""
  for candidate in /bin/busybox /usr/bin/busybox; do
    if [[ -x "$candidate" ]]; then BUSYBOX="$candidate"; break; fi
  done
fi
[[ -n "$BUSYBOX" ]] || { echo "build-snakemake-image: no busybox found; install Debian's busybox-static" >&2; exit 1; }
BASH_BIN="$(command -v bash)"

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
ROOT="$WORK/root"
WHEELS="$WORK/wheels"
SITE="$ROOT/usr/local/lib/python3.12/site-packages"
mkdir -p "$ROOT/bin" "$ROOT/tmp" "$ROOT/etc" "$ROOT/root" "$ROOT/usr/local/bin" "$ROOT/usr/local/lib" "$WHEELS"
chmod 1777 "$ROOT/tmp"

# Every package in the image, pinned: Snakemake 9.27.1 and the S3 storage plugin with their whole
# dependency closure (as resolved by pip on Python 3.12, linux x86_64). The TES executor plugin is
# not needed inside: the job runs `python -m snakemake ... --mode remote` with the local executor.
cat > "$WORK/pins.txt" <<'EOF'
annotated-types==0.8.0
argparse-dataclass==2.0.0
attrs==26.1.0
boto3==1.44.18
botocore==1.44.18
certifi==2026.10.19.post1
charset-normalizer==3.5.3
conda-inject==1.3.2
ConfigArgParse==1.9.0
connection_pool==0.0.3
docutils==0.22.4
dpath==2.2.0
fastjsonschema==2.22.3
gitdb==4.0.12
GitPython==3.2.1
greenlet==3.5.6
humanfriendly==10.0
idna==3.20
immutables==0.21
Jinja2==3.1.6
jmespath==1.1.0
jsonschema==4.26.0
jsonschema-specifications==2025.9.1
jupyter_core==5.9.1
MarkupSafe==3.0.4
nbformat==5.11.1
packaging==25.0
platformdirs==4.14.9
psutil==7.2.2
PuLP==3.3.2
pydantic==2.14.4
pydantic_core==2.50.5
python-dateutil==2.9.0.post0
PyYAML==6.0.4
referencing==0.37.0
requests==2.34.2
rpds-py==2026.9.1
s3transfer==0.19.3
six==1.17.0
smart_open==7.7.1
smmap==5.0.3
snakemake==9.27.1
snakemake-interface-common==1.23.0
snakemake-interface-executor-plugins==9.4.0
snakemake-interface-logger-plugins==2.1.0
snakemake-interface-report-plugins==1.3.0
snakemake-interface-scheduler-plugins==2.0.2
snakemake-interface-storage-plugins==4.4.1
snakemake-storage-plugin-s3==0.3.6
SQLAlchemy==2.0.58
sqlmodel==0.0.37
tabulate==0.10.0
tenacity==9.2.1
throttler==1.2.3
traitlets==5.16.1
typing-inspection==0.4.5
typing_extensions==4.16.0
urllib3==2.8.0
wrapt==2.5.2
yte==1.9.4
EOF

# Wheels for exactly these versions (pip's own download cache may be reused; sdist-only
# packages are built into wheels here, so nothing is built inside the image).
"$PY" -m pip wheel --quiet --disable-pip-version-check --no-deps -r "$WORK/pins.txt" -w "$WHEELS"
"$PY" -m pip install --quiet --disable-pip-version-check --root-user-action=ignore --no-index \
  --find-links "$WHEELS" --no-deps --no-compile --target "$SITE" -r "$WORK/pins.txt"
rm -rf "$SITE/bin"
# PuLP bundles CBC for macOS and Windows too; the image needs only the Linux one.
rm -rf "$SITE/pulp/solverdir/cbc/osx" "$SITE/pulp/solverdir/cbc/win"

# The interpreter and its standard library, without tests, IDLE, Tk, the static libpython and
# pyenv's site-packages (only pip is kept, for the jobscript's `pip install`).
cp "$PY" "$ROOT/usr/local/bin/python3.12"
cp -L "$PY_PREFIX/lib/libpython3.12.so.1.0" "$ROOT/usr/local/lib/"
strip --strip-unneeded "$ROOT/usr/local/lib/libpython3.12.so.1.0" 2>/dev/null || true
tar -C "$PY_PREFIX/lib" -c \
  --exclude='python3.12/test' --exclude='python3.12/idlelib' --exclude='python3.12/tkinter' \
  --exclude='python3.12/turtledemo' --exclude='python3.12/ensurepip' --exclude='python3.12/lib2to3' \
  --exclude='python3.12/config-3.12-*' --exclude='python3.12/site-packages' \
  --exclude='python3.12/lib-dynload/_tkinter*' --exclude='python3.12/lib-dynload/_test*' \
  --exclude='python3.12/lib-dynload/xx*' \
  python3.12 | tar -C "$ROOT/usr/local/lib" -x
cp -r "$PY_PREFIX/lib/python3.12/site-packages/pip" "$PY_PREFIX"/lib/python3.12/site-packages/pip-*.dist-info "$SITE/"
ln -s python3.12 "$ROOT/usr/local/bin/python3"
ln -s python3.12 "$ROOT/usr/local/bin/python"
printf '#!/usr/local/bin/python3.12\nimport sys\nfrom snakemake.cli import main\nsys.exit(main())\n' > "$ROOT/usr/local/bin/snakemake"
printf '#!/usr/local/bin/python3.12\nimport sys\nfrom pip._internal.cli.main import main\nsys.exit(main())\n' > "$ROOT/usr/local/bin/pip"
chmod 755 "$ROOT/usr/local/bin/snakemake" "$ROOT/usr/local/bin/pip"
ln -s pip "$ROOT/usr/local/bin/pip3"
# Byte-compile the installed packages, recording their in-image paths.
"$PY" -m compileall -q -j 0 -s "$ROOT" -p / "$SITE" >/dev/null

# Shared libraries of the interpreter, bash and every extension module (stdlib and wheels), at
# the paths the dynamic loader looks for them; libraries wheels bundle themselves stay put.
cp "$BASH_BIN" "$ROOT/bin/bash"
find "$ROOT/usr/local/bin/python3.12" "$ROOT/bin/bash" "$ROOT/usr/local/lib" -name '*.so*' -o -type f -perm -u+x \
  | while read -r object; do
      file -b "$object" | grep -q '^ELF' || continue
      LD_LIBRARY_PATH="$ROOT/usr/local/lib" ldd "$object" 2>/dev/null | grep -o '/[^ ]*' || true
    done | sort -u | while read -r lib; do
      [[ "$lib" == "$ROOT"* || -e "$ROOT$lib" ]] && continue
      mkdir -p "$ROOT$(dirname "$lib")"
      cp -L "$lib" "$ROOT$lib"
    done
# The loader finds libpython through /etc/ld.so.cache (its RUNPATH names the pyenv directory).
echo /usr/local/lib > "$ROOT/etc/ld.so.conf"
ldconfig -r "$ROOT"

# busybox for sh and the usual tools (bash stays the real one).
cp "$BUSYBOX" "$ROOT/bin/busybox"
for applet in $("$BUSYBOX" --list); do
  [[ "$applet" == busybox || -e "$ROOT/bin/$applet" ]] || ln -s busybox "$ROOT/bin/$applet"
done
ln -s ../bin "$ROOT/usr/bin"
echo 'root:x:0:0:root:/root:/bin/sh' > "$ROOT/etc/passwd"
echo 'root:x:0:' > "$ROOT/etc/group"

# Offline wheelhouse for the jobscript's `pip install --target ... snakemake-storage-plugin-s3`:
# the wheels of that package's dependency closure, resolved among the pinned wheels only.
mkdir -p "$ROOT/opt/wheels"
"$PY" -m pip install --quiet --disable-pip-version-check --root-user-action=ignore --dry-run \
  --ignore-installed --no-index --find-links "$WHEELS" --target "$WORK/unused" \
  --report "$WORK/closure.json" snakemake-storage-plugin-s3
"$PY" - "$WORK/closure.json" "$ROOT/opt/wheels" <<'PY'
import json, shutil, sys
from urllib.parse import unquote, urlparse
for item in json.load(open(sys.argv[1]))["install"]:
    shutil.copy(unquote(urlparse(item["download_info"]["url"]).path), sys.argv[2])
PY

tar -C "$ROOT" -c . | docker import \
  --change 'ENV PATH=/usr/local/bin:/bin' \
  --change 'ENV HOME=/root' \
  --change 'ENV PIP_NO_INDEX=1' \
  --change 'ENV PIP_FIND_LINKS=/opt/wheels' \
  --change 'ENV PIP_DISABLE_PIP_VERSION_CHECK=1' \
  --change 'ENV PIP_ROOT_USER_ACTION=ignore' \
  --change 'CMD ["/bin/sh"]' \
  - "$IMAGE" >/dev/null
echo "$IMAGE"
