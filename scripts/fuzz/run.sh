#!/usr/bin/env bash
# Bounded libFuzzer runs of the parser and subscription-filter targets in Fuzz/ (ASan + libFuzzer).
#
#   scripts/fuzz/run.sh [SECONDS_PER_TARGET] [TARGET...]    # default 60 s each, all targets
#   scripts/fuzz/run.sh 0                                    # only replay the seed corpus (regression check)
#
# The seed corpus (Fuzz/Corpus/<target>) is in the repository; inputs the fuzzer finds go to a
# scratch copy under .build/fuzz, and crashes to .build/fuzz/crashes (add the minimised input to
# Fuzz/Corpus as a regression seed when fixing it). Prints executions per target.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
secs="${1:-60}"; shift || true
targets=("$@"); ((${#targets[@]})) || targets=(FuzzNDJSON FuzzLineProtocol FuzzSubscription)
declare -A corpus=([FuzzNDJSON]=ndjson [FuzzLineProtocol]=lineprotocol [FuzzSubscription]=subscription)

(cd Fuzz && swift build -c debug -Xswiftc -sanitize=fuzzer,address -Xswiftc -parse-as-library 2>&1 | grep -Ev "ld.gold: warning: Cannot export local symbol" | tail -3)
bin="$(cd Fuzz && swift build -c debug -Xswiftc -sanitize=fuzzer,address -Xswiftc -parse-as-library --show-bin-path)"
work="$ROOT/.build/fuzz"; mkdir -p "$work/crashes"
status=0
for t in "${targets[@]}"; do
    seeds="$ROOT/Fuzz/Corpus/${corpus[$t]}"
    scratch="$work/corpus-${corpus[$t]}"; mkdir -p "$scratch"
    log="$work/$t.log"
    if [ "$secs" = 0 ]; then
        args=(-runs=0 "$seeds")
    else
        args=(-max_total_time="$secs" -max_len=4096 -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 "$scratch" "$seeds")
    fi
    if "$bin/$t" -artifact_prefix="$work/crashes/$t-" "${args[@]}" >"$log" 2>&1; then
        runs=$(grep -Eo "stat::number_of_executed_units: *[0-9]+" "$log" | grep -Eo "[0-9]+$" || grep -Eo "Done [0-9]+ runs" "$log" | grep -Eo "[0-9]+" || echo "?")
        echo "$t: ok, $runs executions in ${secs}s (corpus $(ls "$scratch" | wc -l) + $(ls "$seeds" | wc -l) seeds)"
    else
        status=1
        echo "$t: FAILED (see $log; inputs in $work/crashes)"
        grep -E "Fatal error|ERROR: AddressSanitizer|SUMMARY|precondition|chunking changed" "$log" | head -5
    fi
done
exit $status
