package io.github.lora4j.benchmarks.sidebyside;

import java.util.ArrayList;
import java.util.Collections;
import java.util.List;

/**
 * The side-by-side timing method, the same as the PyTorch script's: 3 warm-up calls, then calls until the budget
 * is spent (at least 5), and the median of those calls with its quartiles.
 */
final class Timing {

    /** One measured target: median and quartiles of the calls, in milliseconds. */
    record Stats(double medianMs, double p25Ms, double p75Ms, int calls) {
    }

    private Timing() {
    }

    static Stats measure(Runnable call, double budgetSeconds) {
        for (int i = 0; i < 3; i++) {
            call.run();
        }
        List<Double> times = new ArrayList<>();
        long end = System.nanoTime() + (long) (budgetSeconds * 1e9);
        while (times.size() < 5 || System.nanoTime() < end) {
            long t = System.nanoTime();
            call.run();
            times.add((System.nanoTime() - t) / 1e6);
        }
        Collections.sort(times);
        return new Stats(quantile(times, 0.5), quantile(times, 0.25), quantile(times, 0.75), times.size());
    }

    /** The {@code q}-quantile by linear interpolation between order statistics (Python's "inclusive" method). */
    static double quantile(List<Double> sorted, double q) {
        double pos = q * (sorted.size() - 1);
        int lo = (int) Math.floor(pos);
        int hi = Math.min(sorted.size() - 1, lo + 1);
        return sorted.get(lo) + (pos - lo) * (sorted.get(hi) - sorted.get(lo));
    }
}
