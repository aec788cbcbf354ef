package io.github.lora4j.benchmarks;

import java.util.Arrays;

/**
 * Timings of one variant, in microseconds, with the order statistics the probe prints: median and the
 * interquartile range (25th to 75th percentile). Quantiles interpolate linearly between order statistics (the
 * "type 7" rule of R and NumPy's default), so the median of an even count is the mean of the middle two.
 */
final class Samples {

    private double[] values = new double[16];
    private int size;

    /** Adds one observation. */
    void add(double v) {
        if (size == values.length) {
            values = Arrays.copyOf(values, 2 * size);
        }
        values[size++] = v;
    }

    /** Number of observations. */
    int size() {
        return size;
    }

    /** The {@code q}-quantile, {@code q} in {@code [0, 1]}; NaN when empty. */
    double quantile(double q) {
        return quantile(Arrays.copyOf(values, size), q);
    }

    double median() {
        return quantile(0.5);
    }

    double p25() {
        return quantile(0.25);
    }

    double p75() {
        return quantile(0.75);
    }

    double min() {
        return quantile(0);
    }

    double max() {
        return quantile(1);
    }

    /** Element-wise {@code this[i] / other[i]} of two series taken in the same rounds. */
    Samples dividedBy(Samples other) {
        if (other.size != size) {
            throw new IllegalArgumentException("expected two series of the same rounds, got " + size + " and "
                    + other.size + " observations");
        }
        Samples q = new Samples();
        for (int i = 0; i < size; i++) {
            q.add(values[i] / other.values[i]);
        }
        return q;
    }

    /** The {@code q}-quantile of {@code xs} by linear interpolation; sorts {@code xs} in place. */
    static double quantile(double[] xs, double q) {
        if (!(q >= 0 && q <= 1)) {
            throw new IllegalArgumentException("quantile: expected q in [0, 1], got " + q);
        }
        if (xs.length == 0) {
            return Double.NaN;
        }
        Arrays.sort(xs);
        double pos = q * (xs.length - 1);
        int lo = (int) Math.floor(pos);
        int hi = Math.min(lo + 1, xs.length - 1);
        return xs[lo] + (pos - lo) * (xs[hi] - xs[lo]);
    }
}
