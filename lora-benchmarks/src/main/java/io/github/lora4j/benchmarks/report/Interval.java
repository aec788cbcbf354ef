package io.github.lora4j.benchmarks.report;

import java.util.Locale;

/**
 * A measured value with the range it is known to lie in: {@code low <= value <= high}. A time's interval comes
 * from JMH's score error and the forks ({@link Measurement#interval()}); a ratio's from its two times by
 * {@link #over}, the widest quotient the two ranges allow.
 *
 * @param value the point estimate (a median, or a ratio of medians)
 * @param low   lower end; NaN when unknown
 * @param high  upper end; NaN when unknown
 */
public record Interval(double value, double low, double high) {

    /** A value known exactly (no error given). */
    public static Interval exact(double value) {
        return new Interval(value, value, value);
    }

    /**
     * {@code this / den}: the value is the quotient of the values, the range {@code [low / den.high,
     * high / den.low]}, which holds whenever both times lie in their ranges. A denominator range that reaches 0
     * gives an unbounded upper end.
     */
    public Interval over(Interval den) {
        double hi = den.low > 0 ? high / den.low : Double.POSITIVE_INFINITY;
        return new Interval(value / den.value, low / den.high, hi);
    }

    /** Whether the value is missing (NaN). */
    public boolean isMissing() {
        return Double.isNaN(value) || Double.isInfinite(value);
    }

    /** {@code high / low − 1}: the relative width of the range. */
    public double relativeWidth() {
        return high / low - 1;
    }

    /** A ratio as {@code 1.012 [0.990, 1.034]}, or {@code —} when missing. */
    public String formatRatio() {
        if (isMissing()) {
            return "—";
        }
        if (Double.isNaN(low) || Double.isNaN(high)) {
            return String.format(Locale.ROOT, "%.3f", value);
        }
        return String.format(Locale.ROOT, "%.3f [%.3f, %s]", value, low,
                Double.isInfinite(high) ? "∞" : String.format(Locale.ROOT, "%.3f", high));
    }
}
