# Shared set-up for the scripts: make sure uv exists and the workspace environment is in sync.
# Sourced, not run.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

if ! command -v uv >/dev/null 2>&1; then
  echo "==> installing uv (the environment manager) with pip"
  python3 -m pip install --quiet --user uv 2>/dev/null || python3 -m pip install --quiet uv
  export PATH="$HOME/.local/bin:$PATH"
fi

echo "==> syncing the Python environment (.venv) from uv.lock"
uv sync --all-packages --frozen --quiet
