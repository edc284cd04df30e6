#!/usr/bin/env bash
# Submit a peirce run to a Ray cluster from deploy/ray/job.yaml.
#
#   deploy/ray/submit.sh [--config FILE] [--address URL] [--env KEY=VALUE]... \
#                        [--submission-id ID] [--no-wait] [-- ENTRYPOINT ARGV...]
#
# Address: --address, else $RAY_JOB_ADDRESS, else job.yaml's `address`.
# Everything after `--` replaces job.yaml's entrypoint. Prints the `ray job submit` output;
# with --no-wait it returns once the job is accepted (follow it with `ray job logs -f ID`).
# $PYTHON / $RAY choose the interpreter and CLI (default: the repo's .venv, else PATH).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
PYTHON="${PYTHON:-$( [ -x "$REPO/.venv/bin/python" ] && echo "$REPO/.venv/bin/python" || command -v python3 )}"
RAY="${RAY:-$( [ -x "$REPO/.venv/bin/ray" ] && echo "$REPO/.venv/bin/ray" || command -v ray || true )}"
[ -n "$RAY" ] || { echo "submit.sh: no 'ray' CLI found (pip install 'ray[default]')" >&2; exit 2; }

CONFIG="$HERE/job.yaml"
ARGS=()
while [ $# -gt 0 ]; do
    case "$1" in
        --config) CONFIG="$2"; shift 2 ;;
        --address|--env|--submission-id) ARGS+=("$1" "$2"); shift 2 ;;
        --no-wait) ARGS+=("$1"); shift ;;
        --) break ;;
        -h|--help) sed -n '2,12p' "${BASH_SOURCE[0]}"; exit 0 ;;
        *) echo "submit.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
    esac
done
if [ -n "${RAY_JOB_ADDRESS:-}" ] && [[ " ${ARGS[*]-} " != *" --address "* ]]; then
    ARGS+=(--address "$RAY_JOB_ADDRESS")
fi
# jobspec.py validates the YAML and prints the argument vector NUL-separated.
SUBMIT=()
while IFS= read -r -d '' token; do SUBMIT+=("$token"); done \
    < <("$PYTHON" "$HERE/jobspec.py" "$CONFIG" ${ARGS[@]+"${ARGS[@]}"} "$@")
[ ${#SUBMIT[@]} -gt 0 ] || { echo "submit.sh: could not read $CONFIG" >&2; exit 2; }
exec "$RAY" "${SUBMIT[@]}"
