#!/usr/bin/env bash
# Runs every fuzz target (or the ones named) for SECONDS each, one after another, from the committed seed
# corpus, and prints one summary line per target: executions, executions per second, and libFuzzer's
# coverage figures (`cov`: edges covered, `ft`: features) from its last status line.
#
#   fuzz/run.sh SECONDS [TARGET...]
#
# New interesting inputs go to a scratch corpus under fuzz/target/corpus/<target> (kept between runs,
# never committed); the committed seeds in fuzz/corpus/<target> are only read. To keep a find as a
# seed, minimise it into the committed corpus on purpose (fuzz/dicts/ holds the targets' dictionaries):
#   cargo +nightly fuzz cmin TARGET fuzz/corpus/TARGET
# A crash stops that target, leaves its input under fuzz/artifacts/<target>/ (the path is printed), and
# makes the script exit non-zero after the other targets have run.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

seconds=${1:?usage: fuzz/run.sh SECONDS [TARGET...]}
shift
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  targets=(sse_tap json_scan request_body keys routes config)
fi

# libFuzzer's sanitizer flags need a nightly compiler; without a nightly toolchain, stable stands in.
toolchain=()
if rustup run nightly rustc --version >/dev/null 2>&1; then
  toolchain=(+nightly)
else
  export RUSTC_BOOTSTRAP=1
fi
if ! cargo "${toolchain[@]}" fuzz --version >/dev/null 2>&1; then
  cargo install cargo-fuzz --locked
fi

fuzz=(cargo "${toolchain[@]}" fuzz)
(cd fuzz && "${fuzz[@]}" build)

logs=fuzz/target/logs
mkdir -p "$logs"
summary=()
failed=0
for t in "${targets[@]}"; do
  work=fuzz/target/corpus/$t
  mkdir -p "$work"
  log=$logs/$t.log
  status=ok
  # A dictionary of the tokens a target's input is made of, where one helps.
  dict=()
  case $t in
    sse_tap) dict=(-dict=dicts/sse.dict) ;;
    json_scan | request_body) dict=(-dict=dicts/json.dict) ;;
    routes) dict=(-dict=dicts/paths.dict) ;;
    config) dict=(-dict=dicts/toml.dict) ;;
  esac
  # The first corpus directory receives new inputs; the committed one is read only.
  if ! (cd fuzz && "${fuzz[@]}" run "$t" "../$work" "corpus/$t" -- \
    -max_total_time="$seconds" -timeout=20 -print_final_stats=1 "${dict[@]}") >"$log" 2>&1; then
    status=FAILED
    failed=1
    echo "== $t failed; the end of $log:"
    tail -n 40 "$log"
    grep -h -E 'Test unit written to|artifact_prefix' "$log" || true
  fi
  execs=$(grep -h 'stat::number_of_executed_units' "$log" | tail -n 1 | awk '{print $2}')
  rate=$(grep -h 'stat::average_exec_per_sec' "$log" | tail -n 1 | awk '{print $2}')
  last=$(grep -h -E '^#[0-9]+.* cov: ' "$log" | tail -n 1 || true)
  cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$last")
  ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$last")
  summary+=("$(printf '%-13s %-7s %8ss %12s execs %8s exec/s  cov %6s  ft %7s' \
    "$t" "$status" "$seconds" "${execs:-?}" "${rate:-?}" "${cov:-?}" "${ft:-?}")")
done

echo "== fuzz summary ($seconds s per target; logs in $logs)"
printf '%s\n' "${summary[@]}"
exit "$failed"
