# Sourced by slurm_train.sh and slurm_test.sh: the job's sizes from the environment, checked, and the
# Python that runs the upstream script.
PYTHON=${PYTHON:-python}
SRUN_ARGS=${SRUN_ARGS:-}

require_count() {  # NAME VALUE: a positive integer
    if ! [[ $2 =~ ^[1-9][0-9]*$ ]]; then echo "error: $1 must be a positive integer, got '$2'" >&2; exit 2; fi
}
GPUS=${GPUS:-8}
require_count GPUS "$GPUS"
GPUS_PER_NODE=${GPUS_PER_NODE:-$(( GPUS < 8 ? GPUS : 8 ))}
require_count GPUS_PER_NODE "$GPUS_PER_NODE"
CPUS_PER_TASK=${CPUS_PER_TASK:-5}
require_count CPUS_PER_TASK "$CPUS_PER_TASK"
if [ "$GPUS_PER_NODE" -gt "$GPUS" ]; then
    echo "error: GPUS_PER_NODE=$GPUS_PER_NODE is more than GPUS=$GPUS; GPUS is the total over all machines" >&2
    exit 2
fi
if ! command -v srun >/dev/null 2>&1; then
    echo "error: srun not found; run this on a SLURM cluster (on one machine, use tools/dist_train.sh or" \
        "tools/dist_test.sh)" >&2
    exit 2
fi
PYTHONPATH="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONPATH
if [ -n "${PORT:-}" ]; then export MASTER_PORT=$PORT; fi  # mmengine's SLURM set-up reads MASTER_PORT
