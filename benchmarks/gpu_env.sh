# Sourced by the prepared GPU scripts (gpu_check.sh, gpu_study.sh) from the repository root:
# the Python to use ($PYTHON, else python3, else python), `install_wheels` for a device that
# cannot reach a package index (.whl/*.whl into /tmp/site), and `offline_env`: src and /tmp/site
# on PYTHONPATH, no hub access.
PY="${PYTHON:-python3}"
command -v "$PY" >/dev/null 2>&1 || PY=python

install_wheels() {
    if compgen -G ".whl/*.whl" >/dev/null; then
        "$PY" -m pip install --no-index --no-deps --target /tmp/site .whl/*.whl
    else
        echo "no .whl/ folder: using the installed packages"
    fi
}

offline_env() {
    export PYTHONPATH="/tmp/site:src${PYTHONPATH:+:$PYTHONPATH}"
    export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
}
