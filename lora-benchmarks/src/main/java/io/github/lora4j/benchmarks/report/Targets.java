package io.github.lora4j.benchmarks.report;

import java.util.Locale;
import java.util.OptionalDouble;

/**
 * The targets of issues 3 and 5, and how a measured ratio is judged against them: {@code PASS} when its whole
 * interval meets the target, {@code MISS} when none of it does, and {@code within noise} when the target lies
 * inside the interval, so that machine noise could flip the answer.
 */
public final class Targets {

    /** merged / plain, every shape: the merged forward must be exactly one gemm. */
    public static final double MERGED_OVER_PLAIN = 1.02;
    /** unmerged / merged at in = out = 4096, r = 8, every batch. */
    public static final double UNMERGED_OVER_MERGED_4096 = 1.05;
    /** unmerged / merged at in = out = 1024, r = 8, n = 1. */
    public static final double UNMERGED_OVER_MERGED_1024_N1 = 1.15;
    /** merge (and unmerge) / one {@code [out, r] × [r, in]} gemm accumulated into W. */
    public static final double MERGE_OVER_GEMM = 1.5;
    /** 8 adapters in a batch of 64 / one adapter in a batch of 64. */
    public static final double MIXED_OVER_SINGLE = 1.3;

    private Targets() {
    }

    /** The verdict that says the interval straddles the target. */
    public static final String WITHIN_NOISE = "within noise";

    /** The unmerged/merged target for a shape {@code W [out, in]}, or empty where the issue sets none (it sets
     * them for square shapes only). */
    public static OptionalDouble unmergedOverMerged(int in, int out, int rank, int batch) {
        if (in != out) {
            return OptionalDouble.empty();
        }
        int size = in;
        if (size == 4096 && rank == 8) {
            return OptionalDouble.of(UNMERGED_OVER_MERGED_4096);
        }
        if (size == 1024 && rank == 8 && batch == 1) {
            return OptionalDouble.of(UNMERGED_OVER_MERGED_1024_N1);
        }
        return OptionalDouble.empty();
    }

    /** The cost model's extra work of the unmerged path: {@code r·(in + out) / (in·out)}. */
    public static double theoreticalExtraCost(int rank, int in, int out) {
        return (double) rank * (in + out) / ((double) in * out);
    }

    /** Whether {@code ratio} meets {@code target} (a missing ratio, NaN, never does). */
    public static boolean meets(double ratio, double target) {
        return ratio <= target;
    }

    /**
     * {@code PASS}, {@code MISS (+x.x %)} with how far above the target the ratio is, or {@code —} when the ratio
     * is missing (NaN).
     */
    public static String verdict(double ratio, double target) {
        if (Double.isNaN(ratio)) {
            return "—";
        }
        if (meets(ratio, target)) {
            return "PASS";
        }
        return String.format(Locale.ROOT, "MISS (+%.1f %%)", 100 * (ratio / target - 1));
    }

    /**
     * The verdict on a ratio with its interval: {@code PASS} if {@code high <= target}; {@code MISS (+x.x %)} with
     * how far the value lies above the target if {@code low > target}; {@value #WITHIN_NOISE} otherwise (the
     * target lies inside the interval); {@code —} when the ratio is missing. An interval without ends (NaN) is
     * judged on its value alone.
     */
    public static String verdict(Interval ratio, double target) {
        if (ratio.isMissing()) {
            return "—";
        }
        if (Double.isNaN(ratio.low()) || Double.isNaN(ratio.high())) {
            return verdict(ratio.value(), target);
        }
        if (ratio.high() <= target) {
            return "PASS";
        }
        if (ratio.low() > target) {
            return String.format(Locale.ROOT, "MISS (+%.1f %%)", 100 * (ratio.value() / target - 1));
        }
        return WITHIN_NOISE;
    }
}
