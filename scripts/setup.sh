#!/usr/bin/env bash
# Set up QuantPipe's environment in .venv: a virtual environment of the system Python
# (/usr/bin/python3) that also sees its site-packages, so Debian's `mininet` module (installed
# for that Python) is importable next to torch. torch is installed in the same pip command as
# its CPU pin, so nothing pulls the multi-GB CUDA build.
#   bash scripts/setup.sh          # project, test tools and Ray (the cluster extra)
set -euo pipefail
cd "$(dirname "$0")/.."

PY=/usr/bin/python3
if [ ! -x "$PY" ] || ! "$PY" -c 'import ensurepip, venv' 2>/dev/null; then
    echo "setup: installing Debian's python3 and python3-venv" >&2
    apt-get update -qq && apt-get install -y -qq python3 python3-venv >/dev/null
fi
# iproute2 (ip, tc): the runtime's rate-limited-link test builds network namespaces (as root)
if [ "$(id -u)" = 0 ] && ! { command -v ip && command -v tc; } >/dev/null 2>&1; then
    echo "setup: installing Debian's iproute2 (ip, tc)" >&2
    apt-get update -qq && apt-get install -y -qq iproute2 >/dev/null
fi
# Debian's mininet (mn, mnexec, and the module for /usr/bin/python3, which .venv sees): the
# emulation (emulation/) needs it and root; non-root users get everything else
if [ "$(id -u)" = 0 ] && [ ! -x /usr/bin/mn ]; then
    echo "setup: installing Debian's mininet" >&2
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mininet >/dev/null
fi
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv --system-site-packages .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check \
    "torch==2.13.0" -e ".[test,cluster]"
echo "setup: ready; use .venv/bin/python" >&2
