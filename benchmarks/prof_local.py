"""Time the local smoother's pieces on the windows a linear fit folds (by hand:
python -m benchmarks.prof_local PANEL [MODULE:NAME=JSON ...], the constants set as bench_forecast's --patch)."""
import os
import sys
import time

import numpy as np

import daskstate
from benchmarks.bench_forecast import origin_split, panels, set_constant
from daskstate.algorithms.forecast import local
from daskstate.algorithms.forecast import windows as W
from daskstate.algorithms.forecast.series import as_offset, default_prediction_length


def main() -> None:
    name = sys.argv[1] if len(sys.argv) > 1 else "usmacro_changes"
    for spec in sys.argv[2:]:
        print("patched", set_constant(spec))
    (df, freq), = panels([name]).values()
    H = default_prediction_length(as_offset(freq))
    train, _ = origin_split(name, df, H, 1)
    calls = []
    orig = local.local_forecast

    def spy(context, H, season=1, index=None):
        calls.append((context.copy(), H, season, None if index is None else index.copy()))
        return orig(context, H, season, index)

    local.local_forecast = spy
    W.local_forecast = spy
    daskstate.Forecaster(prediction_length=H, freq=freq).fit(train)
    local.local_forecast = orig
    W.local_forecast = orig
    print(name, "calls", [(c[0].shape, c[2], c[3] is not None) for c in calls], "nan share",
          [float(np.isnan(c[0]).mean()) for c in calls])
    reps = 5
    for fn_name in ["local_forecast"]:
        best = []
        for _ in range(reps):
            c = time.process_time()
            for ctx, h, s, idx in calls:
                orig(ctx, h, s, idx)
            best.append(time.process_time() - c)
        print(fn_name, "CPU s min/median", min(best), sorted(best)[reps // 2])
    for _ in range(3):
        c = time.process_time()
        daskstate.Forecaster(prediction_length=H, freq=freq).fit(train)
        print("fit CPU s", time.process_time() - c)
    print("loadavg", os.getloadavg())


if __name__ == "__main__":
    main()
