#!/usr/bin/env bash
# The forecasting quality bar of issue 19: a rolling-origin backtest over the last 20% of each of
# the five reference series in shared/data/timeseries with the default settings (the horizon is the
# season: 12 monthly, 52 weekly, the detected one for lynx, 5 for the Nile, which has none), the
# airline series' last 12 months from one origin, and seeds 1-3 of that split.
# Usage: bench/forecast_backtests.sh [DATA_DIR] [RECUR_BINARY]; writes under ${OUT:-/tmp/forecast-bench}.
set -euo pipefail
data=${1:-../shared/data/timeseries}
recur=${2:-target/release/recur}
out=${OUT:-/tmp/forecast-bench}
mkdir -p "$out"
# El Niño is in wide form (YEAR, JAN..DEC): one row per month for the reader.
python3 - "$data/elnino/elnino.csv" "$out/elnino_long.csv" <<'PY'
import csv, sys
rows = list(csv.reader(open(sys.argv[1])))
with open(sys.argv[2], "w") as f:
    f.write("month,temperature\n")
    for r in rows[1:]:
        for m, v in enumerate(r[1:]):
            f.write(f"{int(float(r[0])):04d}-{m + 1:02d},{v}\n")
PY
run() {
    name=$1; shift
    echo "== $name: recur forecast backtest $*"
    "$recur" forecast backtest --out "$out/$name" --overwrite --quiet "$@" | sed -n '/rolling-origin/,$p'
}
run airline
run co2 --csv "$data/co2/co2_weekly.csv" --target co2 --date date --fill linear
run nile --csv "$data/nile/nile.csv" --target volume --date year
run lynx --csv "$data/lynx/lynx.csv" --target lynx --date year
run elnino --csv "$out/elnino_long.csv" --target temperature --date month
run airline-holdout-12 --test-size 12 --horizon 12
for seed in 1 2 3; do
    run "airline-holdout-12-seed-$seed" --test-size 12 --horizon 12 --seed "$seed"
done
