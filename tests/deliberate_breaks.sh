#!/usr/bin/env bash
# Shows that the suite catches a break in each area it guards: the revert mechanism (NF4
# confinement), a precision's real library (bitsandbytes' NF4), the Ray faults (retries) and
# the strict inputs (the closest-name hint). Each break is one sed line in a throwaway worktree
# of HEAD, imported ahead of the installed package (PYTHONPATH); each area's tests must then
# fail. A developer's check, run by hand after `make test` has built .venv and the test cache:
#   bash tests/deliberate_breaks.sh
set -u
root=$(git -C "$(dirname "$0")" rev-parse --show-toplevel)
cd "$root"
export OMP_NUM_THREADS=1 MUSE_QUANT_CACHE="$root/.cache/muse-quant" CI=true
run() {  # name, file, sed expression, pytest args...
  local name=$1 file=$2 expr=$3; shift 3
  local wt=/tmp/break-$name
  rm -rf "$wt"; git worktree prune; git worktree add -q --detach "$wt" HEAD
  sed -i "$expr" "$wt/$file"
  echo "== $name: $(cd "$wt" && git diff --stat | tail -1)"
  (cd "$wt" && git diff | grep '^[-+][^-+]')
  (cd "$wt" && PYTHONPATH="$wt" timeout 900 "$root/.venv/bin/python" -m pytest -q -p no:cacheprovider -n 2 --dist loadfile "$@" 2>&1 | grep -E "^(FAILED|ERROR)|passed|failed" | tail -8)
  git worktree remove --force "$wt"
}
run mechanism model_wrappers/codes.py 's/    confined = torch.maximum(torch.minimum(b1, hi), lo)/    confined = b1.clone()/' \
  tests/test_unlearning.py::test_confining_to_nf4_bins_keeps_the_asked_part_of_the_code_changes tests/test_zoo.py
run library model_wrappers/precisions/bitsandbytes.py '93s/"nf4"/"fp4"/' tests/test_precisions.py
run ray muse_quant/sweep/ray_executor.py 's/^RETRIES = 2/RETRIES = 0/' tests/test_sweep.py -k "killed_mid_cell or leaves_mid_cell"
run strict harness_ext/errors.py 's/    return f" (did you mean {close\[0\]!r}?)" if close else ""/    return ""/' tests/test_strict_inputs.py tests/test_cli_eval.py
