#!/usr/bin/env bash
# scripts/slurm/onebit-train.sbatch outside SLURM, run by ctest: fake srun, scontrol and
# onebit-train show what the script does with the ranks' exit codes and with a SIGTERM.
# 1. ranks exit 138 (SIGUSR1 before the time limit, checkpoint written): requeue, exit 138;
# 2. ranks exit 0: no requeue, exit 0;
# 3. SIGTERM to the batch shell while the ranks checkpoint: it waits for them, exits 143 and
#    leaves the requeue to SLURM (preemption) or to nobody (scancel).
set -uo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
SBATCH=$ROOT/scripts/slurm/onebit-train.sbatch
source "$ROOT/tests/scripts/checks.sh"

mkdir -p "$TMP/bin"
cat >"$TMP/bin/srun" <<'SH'
#!/usr/bin/env bash
while [[ $# -gt 0 && $1 == -* ]]; do shift; done  # srun's own options
exec "$@"
SH
cat >"$TMP/bin/scontrol" <<'SH'
#!/usr/bin/env bash
case "$1" in
  show) echo node1 ;;
  requeue) echo "requeue $2" >>"$FAKE_DIR/scontrol.log" ;;
esac
SH
# The "rank": sleeps FAKE_SLEEP seconds, then exits FAKE_RC.
cat >"$TMP/bin/fake-train" <<'SH'
#!/usr/bin/env bash
echo "train $*" >>"$FAKE_DIR/train.log"
sleep "${FAKE_SLEEP:-0}"
exit "${FAKE_RC:-0}"
SH
chmod +x "$TMP/bin/"*

run_sbatch() {  # FAKE_RC FAKE_SLEEP: runs the script in the background, sets $pid
  rm -f "$TMP/scontrol.log" "$TMP/train.log"
  env PATH="$TMP/bin:$PATH" FAKE_DIR="$TMP" FAKE_RC="$1" FAKE_SLEEP="$2" ONEBIT_TRAIN="$TMP/bin/fake-train" \
    SLURM_JOB_NODELIST=node1 SLURM_JOB_ID=4242 SLURM_NTASKS=1 SLURM_JOB_NUM_NODES=1 \
    bash "$SBATCH" cfg.yaml train.max_steps=9 >"$TMP/out.log" 2>&1 &
  pid=$!
}

run_sbatch 138 0
wait "$pid"
rc=$?
check "ranks exit 138: the script exits 138" test "$rc" -eq 138
check "ranks exit 138: the job is requeued" grep -qx "requeue 4242" "$TMP/scontrol.log"
check "the ranks get the config and the overrides" grep -qx "train --config cfg.yaml train.max_steps=9" "$TMP/train.log"

run_sbatch 0 0
wait "$pid"
rc=$?
check "ranks exit 0: the script exits 0" test "$rc" -eq 0
check "ranks exit 0: no requeue" test ! -e "$TMP/scontrol.log"

run_sbatch 143 2
sleep 0.5
kill -TERM "$pid"
t0=$SECONDS
wait "$pid"
rc=$?
check "SIGTERM to the shell: it waits for the ranks and exits with their 143" test "$rc" -eq 143
check "SIGTERM to the shell: it said so" grep -q "SIGTERM; waiting for the ranks to checkpoint" "$TMP/out.log"
check "SIGTERM to the shell: no requeue by the script" test ! -e "$TMP/scontrol.log"
check "SIGTERM to the shell: it waited about the ranks' 2 s" test $((SECONDS - t0)) -ge 1

[[ $fails -eq 0 ]] || { cat "$TMP/out.log"; echo "$fails check(s) failed"; exit 1; }
echo "all checks passed"
