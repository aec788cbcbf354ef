package io.github.lora4j.benchmarks.report;

import java.util.Map;

/**
 * One JMH result: a benchmark method with its parameters and the median of its time samples.
 *
 * @param benchmark  {@code SimpleClassName.method}, e.g. {@code ForwardBenchmark.plain}
 * @param params     JMH parameters ({@code size}, {@code rank}, {@code batch}, {@code mode}), as JMH prints them
 * @param medianUs   median time in microseconds: JMH's 50th percentile, over all samples in sample-time mode
 *                   (every invocation), over iteration scores in average-time mode
 * @param meanUs     JMH's score (the mean) in microseconds
 * @param errorUs    JMH's 99.9 % confidence half-width of the mean, in microseconds (NaN when JMH gives none)
 * @param samples    how many samples the median was taken over
 */
public record Measurement(String benchmark, Map<String, String> params, double medianUs, double meanUs,
        double errorUs, long samples) {

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
