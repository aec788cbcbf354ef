package io.github.lora4j.benchmarks.report;

import java.util.List;
import java.util.Map;

/**
 * One JMH result: a benchmark method with its parameters and the median of its time samples.
 *
 * @param benchmark  {@code SimpleClassName.method}, e.g. {@code ForwardBenchmark.plain}
 * @param params     JMH parameters ({@code in}, {@code out}, {@code rank}, {@code batch}, {@code mode}), as JMH
 *                   prints them; an older result's {@code size} is read as {@code in = out = size}
 * @param medianUs   median time in microseconds: JMH's 50th percentile, over all samples in sample-time mode
 *                   (every invocation), over iteration scores in average-time mode
 * @param meanUs     JMH's score (the mean) in microseconds
 * @param errorUs    JMH's 99.9 % confidence half-width of the mean, in microseconds (NaN when JMH gives none)
 * @param samples    how many samples the median was taken over
 * @param forkMediansUs the median of each fork on its own, in fork order (one entry per fork)
 */
public record Measurement(String benchmark, Map<String, String> params, double medianUs, double meanUs,
        double errorUs, long samples, List<Double> forkMediansUs) {

    /** Copies the fork medians. */
    public Measurement {
        forkMediansUs = List.copyOf(forkMediansUs);
    }

    /**
     * The range the median is known to lie in: {@code median·(1 ± error/mean)}, JMH's relative 99.9 % error of the
     * mean carried over to the median, widened with two or more forks to hold every fork's own median (the
     * run-to-run variance that one fork's error cannot show). Without an error and with one fork the range is the
     * median itself.
     */
    public Interval interval() {
        double rel = Double.isNaN(errorUs) || !(meanUs > 0) ? 0 : Math.abs(errorUs / meanUs);
        double low = medianUs * (1 - rel);
        double high = medianUs * (1 + rel);
        for (double f : forkMediansUs.size() >= 2 ? forkMediansUs : List.<Double>of()) {
            low = Math.min(low, f);
            high = Math.max(high, f);
        }
        return new Interval(medianUs, low, high);
    }

    /** {@code max / min − 1} over the fork medians: the run-to-run spread; NaN with fewer than two forks. */
    public double forkSpread() {
        if (forkMediansUs.size() < 2) {
            return Double.NaN;
        }
        double lo = forkMediansUs.stream().mapToDouble(Double::doubleValue).min().orElseThrow();
        double hi = forkMediansUs.stream().mapToDouble(Double::doubleValue).max().orElseThrow();
        return hi / lo - 1;
    }

    /** Integer parameter {@code name}, or -1 when absent. */
    public int intParam(String name) {
        String v = params.get(name);
        return v == null ? -1 : Integer.parseInt(v);
    }

    /** Whether this is {@code benchmark} with every given {@code key, value} pair among its parameters. */
    public boolean matches(String benchmark, String... keyValues) {
        if (!this.benchmark.equals(benchmark)) {
            return false;
        }
        for (int i = 0; i + 1 < keyValues.length; i += 2) {
            if (!keyValues[i + 1].equals(params.get(keyValues[i]))) {
                return false;
            }
        }
        return true;
    }
}
