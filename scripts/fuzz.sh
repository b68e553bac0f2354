#!/usr/bin/env bash
# Fuzz poormanci's message parsing, decisions, config checking and peer
# answer reading with cargo-fuzz (libFuzzer), each target for SECONDS
# (default 60), one process on one core, one target after the other.
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]     (targets: fuzz/fuzz_targets/*.rs)
#
# Prints one summary line per target and exits non-zero when a target found
# a crash (a panic, a failed invariant, a timeout or an out-of-memory); the
# input that did it is under fuzz/artifacts/<target>/ and the full libFuzzer
# output under fuzz/target/fuzz-logs/. Replay one with
#   cargo +nightly fuzz run <target> fuzz/artifacts/<target>/<file>
#
# The corpus grows under fuzz/corpus/ (gitignored), seeded from
# tests/fixtures/*.json (topic line + envelope) and fuzz/seeds/. A nightly
# toolchain gives AddressSanitizer (FUZZ_SANITIZER=none to skip it); with
# stable only, the script builds with RUSTC_BOOTSTRAP=1 and --sanitizer none
# (libFuzzer's coverage guidance still works).
# Set CARGO_BUILD_JOBS=1 to keep the build to one core as well.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
secs=${1:-60}
shift || true
[[ $secs =~ ^[0-9]+$ ]] || { echo "usage: $0 [SECONDS] [TARGET...]" >&2; exit 2; }

command -v cargo-fuzz >/dev/null || cargo install --locked cargo-fuzz

if rustup run nightly rustc --version >/dev/null 2>&1; then
    fuzz=(cargo +nightly fuzz)
    # FUZZ_SANITIZER=none: about twice the executions (poormanci is safe Rust).
    sanitizer=(--sanitizer "${FUZZ_SANITIZER:-address}")
    toolchain="nightly, sanitizer ${FUZZ_SANITIZER:-address}"
else
    export RUSTC_BOOTSTRAP=1
    fuzz=(cargo fuzz)
    sanitizer=(--sanitizer none)
    toolchain="stable with RUSTC_BOOTSTRAP=1, no sanitizer"
fi

cd fuzz
if (($#)); then targets=("$@"); else mapfile -t targets < <("${fuzz[@]}" list); fi

# Seed corpus: one file per fixture, named by its content's hash (so
# reseeding adds nothing twice); compact JSON keeps the inputs small.
python3 - "$root/tests/fixtures" corpus <<'EOF'
import hashlib, json, os, sys
fixtures, corpus = sys.argv[1], sys.argv[2]
def put(target, data):
    d = os.path.join(corpus, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "seed-" + hashlib.sha1(data).hexdigest()), "wb") as f:
        f.write(data)
for name in sorted(os.listdir(fixtures)):
    if not name.endswith(".json"):
        continue
    with open(os.path.join(fixtures, name), "rb") as f:
        v = json.load(f)
    compact = json.dumps(v, separators=(",", ":"), ensure_ascii=False).encode()
    topic = v.get("topic") if isinstance(v, dict) else None
    if isinstance(topic, str):
        # The fuzz config listens on the prod topics, as poormanci does.
        topic = topic.replace("io.pagure.dev.", "io.pagure.prod.")
        put("parse_and_decide", topic.encode() + b"\n" + compact)
    else:
        # A Jenkins answer: status 200, no Location, no Retry-After.
        put("peer_answer", b"\x00\xc8\n\n" + compact)
EOF

echo "building ${targets[*]} ($toolchain)"
mkdir -p target
for t in "${targets[@]}"; do
    "${fuzz[@]}" build "${sanitizer[@]}" "$t" >target/fuzz-build.log 2>&1 || { tail -40 target/fuzz-build.log; exit 1; }
done

mkdir -p target/fuzz-logs
failed=0 total=0
for t in "${targets[@]}"; do
    mkdir -p "corpus/$t" "seeds/$t" "artifacts/$t"
    log=target/fuzz-logs/$t.log
    rc=0
    "${fuzz[@]}" run "${sanitizer[@]}" "$t" "corpus/$t" "seeds/$t" -- \
        -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 >"$log" 2>&1 || rc=$?
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    speed=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
    cov=$( (grep -o 'cov: [0-9]*' "$log" || true) | tail -1 | cut -d' ' -f2)
    crashes=$(grep -c 'Test unit written to' "$log" || true)
    if ((rc != 0 && crashes == 0)); then crashes=1; fi
    total=$((total + ${runs:-0}))
    printf '%-18s %12s executions in %s s (%s exec/s), coverage %s, crashes %s\n' \
        "$t:" "${runs:-?}" "$secs" "${speed:-?}" "${cov:-?}" "$crashes"
    if ((crashes)); then
        failed=1
        grep -m1 -E "panicked at|ERROR: libFuzzer|ERROR: AddressSanitizer" "$log" | sed 's/^/    /' || true
        grep -o 'Test unit written to .*' "$log" | sed 's/^/    /' || true
        echo "    full output: fuzz/$log"
    fi
done
echo "total: $total executions, $( ((failed)) && echo "CRASHES FOUND" || echo "no crash")"
exit $failed
