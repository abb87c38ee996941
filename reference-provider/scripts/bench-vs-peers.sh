#!/usr/bin/env bash
# Times `fixmyprint repair` (release) read-to-write on generated models with every defect, at
# 1M and 4M facets (override: FACETS="1000000 4000000"), with peak RSS from /usr/bin/time -v,
# and — when `admesh` is installed (Debian package) — admesh on the same files, with ratios.
# Usage: reference-provider/scripts/bench-vs-peers.sh [WORKDIR]
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
work=${1:-$(mktemp -d)}
mkdir -p "$work"
facets=${FACETS:-"1000000 4000000"}
runs=${RUNS:-3}
admesh_max=${ADMESH_MAX_FACETS:-4000000}

cd "$root"
cargo build --release -q -p fixmyprint --bin fixmyprint
cargo build --release -q -p fixmyprint-heal --features generate --example heal_gen
target=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
fmp=$target/release/fixmyprint
gen=$target/release/examples/heal_gen
timev=/usr/bin/time
[ -x "$timev" ] || { echo "need /usr/bin/time (apt-get install time)" >&2; exit 1; }

echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)"
printf '%-10s %-9s %10s %10s %8s %12s %10s %10s %8s  %s\n' facets tool best_s median_s cpu_s peak_rss_MB file_MB rss/file ratio load_1m

# Best and median wall seconds, max peak RSS (KB) and least CPU seconds (user + sys: less
# sensitive than wall time to other processes on a shared machine) over $runs runs.
measure() {
  local log=$work/time.log secs=() rss=0 r cpu="" c
  for _ in $(seq "$runs"); do
    "$timev" -v "$@" >/dev/null 2>"$log" || { echo "FAILED: $*" >&2; tail -5 "$log" >&2; return 1; }
    secs+=("$(awk -F': ' '/Elapsed \(wall clock\)/ {n=split($2,a,":"); s=0; for(i=1;i<=n;i++) s=s*60+a[i]; print s}' "$log")")
    r=$(awk -F': ' '/Maximum resident set size/ {print $2}' "$log")
    [ "$r" -gt "$rss" ] && rss=$r
    c=$(awk -F': ' '/User time/ {u=$2} /System time/ {s=$2} END {print u+s}' "$log")
    if [ -z "$cpu" ] || [ "$(echo "$c < $cpu" | bc -l)" = 1 ]; then cpu=$c; fi
  done
  local sorted
  sorted=$(printf '%s\n' "${secs[@]}" | sort -g)
  echo "$(echo "$sorted" | head -1) $(echo "$sorted" | sed -n "$(( (runs + 1) / 2 ))p") $rss $cpu"
}

for n in $facets; do
  in=$work/broken-$n.stl
  [ -f "$in" ] || "$gen" "$in" "$n" 1 all >/dev/null
  size=$(stat -L -c %s "$in")
  read -r best med rss cpu < <(measure "$fmp" repair --quiet "$in" "$work/out-$n.stl" --report "$work/report-$n.json")
  printf '%-10s %-9s %10.3f %10.3f %8.2f %12.1f %10.1f %10.2f %8s  %s\n' "$n" fixmyprint "$best" "$med" "$cpu" "$(echo "$rss/1024" | bc -l)" "$(echo "$size/1048576" | bc -l)" "$(echo "$rss*1024/$size" | bc -l)" "1.0" "$(cut -d' ' -f1 /proc/loadavg)"
  python3 - "$work/report-$n.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
s = r["stages"]
print("           stages: " + " ".join(f"{k}={v['seconds']:.3f}" for k, v in s.items()),
      f"| watertight={r['watertight']} shells={r['shells']} holes_filled={r['holes_filled']}")
PY
  if command -v admesh >/dev/null && [ "$n" -le "$admesh_max" ]; then
    # admesh's closest equivalent of a full repair: exact + nearby weld, remove unconnected,
    # fill holes, fix normal directions and values; write binary STL.
    read -r abest amed arss acpu < <(runs=1 measure admesh --exact --nearby --remove-unconnected --fill-holes --normal-directions --normal-values --write-binary-stl="$work/admesh-$n.stl" "$in")
    printf '%-10s %-9s %10.3f %10.3f %8.2f %12.1f %10.1f %10.2f %8.1f  %s\n' "$n" admesh "$abest" "$amed" "$acpu" "$(echo "$arss/1024" | bc -l)" "$(echo "$size/1048576" | bc -l)" "$(echo "$arss*1024/$size" | bc -l)" "$(echo "$abest/$best" | bc -l)" "$(cut -d' ' -f1 /proc/loadavg)"
  elif ! command -v admesh >/dev/null; then
    echo "           admesh not installed (apt-get install admesh) - skipped"
  fi
done
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "files in $work"
