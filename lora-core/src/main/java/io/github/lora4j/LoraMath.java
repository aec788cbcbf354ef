package io.github.lora4j;

/**
 * The arithmetic of LoRA's parameter savings, with no arrays involved.
 *
 * <p>A {@code d × k} weight ({@code d = out}, {@code k = in}) has {@code d·k} parameters under full
 * fine-tuning; a rank-{@code r} adapter trains {@code r·(d + k)}. For {@code d = k = 4096},
 * {@code r = 8}: 65,536 instead of 16,777,216, a savings of 99.61 %.
 */
public final class LoraMath {

    private LoraMath() {
    }

    /**
     * Parameters trained by full fine-tuning of a {@code d × k} weight: {@code d·k}.
     *
     * @param d output features, the rows of {@code W [d, k]}, {@code >= 1}
     * @param k input features, the columns of {@code W}, {@code >= 1}
     * @return {@code d·k}
     * @throws IllegalArgumentException if {@code d < 1} or {@code k < 1}, or if {@code d·k} exceeds {@code long}
     */
    public static long fullParameters(long d, long k) {
        checkDims(d, k);
        try {
            return Math.multiplyExact(d, k);
        } catch (ArithmeticException e) {
            throw overflow("d·k", "d=" + d + ", k=" + k);
        }
    }

    /**
     * Parameters of a rank-{@code r} adapter on a {@code d × k} weight: {@code r·(d + k)}.
     *
     * @param d output features, the rows of {@code W [d, k]}, {@code >= 1}
     * @param k input features, the columns of {@code W}, {@code >= 1}
     * @param r adapter rank, {@code >= 1}
     * @return {@code r·(d + k)}, the elements of {@code A [r, k]} and {@code B [d, r]}
     * @throws IllegalArgumentException if {@code d < 1}, {@code k < 1} or {@code r < 1}, or if {@code r·(d + k)}
     *                                  exceeds {@code long}
     */
    public static long loraParameters(long d, long k, int r) {
        checkDims(d, k);
        checkRank(r);
        try {
            return Math.multiplyExact(r, Math.addExact(d, k));
        } catch (ArithmeticException e) {
            throw overflow("r·(d + k)", "d=" + d + ", k=" + k + ", r=" + r);
        }
    }

    /**
     * Fraction of the full parameter count that LoRA does not train: {@code 1 − r·(d+k)/(d·k)}.
     *
     * @param d output features, the rows of {@code W [d, k]}, {@code >= 1}
     * @param k input features, the columns of {@code W}, {@code >= 1}
     * @param r adapter rank, {@code >= 1}
     * @return the savings as a fraction (0.9961 for 4096 × 4096 at r = 8); negative when LoRA is larger
     * @throws IllegalArgumentException as {@link #loraParameters} and {@link #fullParameters}
     */
    public static double savings(long d, long k, int r) {
        return 1.0 - (double) loraParameters(d, k, r) / (double) fullParameters(d, k);
    }

    /**
     * The extra cost ratio of the unmerged LoRA path against the base product: {@code r·(d+k)/(d·k)}.
     *
     * @param d output features, the rows of {@code W [d, k]}, {@code >= 1}
     * @param k input features, the columns of {@code W}, {@code >= 1}
     * @param r adapter rank, {@code >= 1}
     * @return {@code r·(d+k)/(d·k)}, also the trainable fraction of the parameters
     * @throws IllegalArgumentException as {@link #loraParameters} and {@link #fullParameters}
     */
    public static double overheadRatio(long d, long k, int r) {
        return (double) loraParameters(d, k, r) / (double) fullParameters(d, k);
    }

    /**
     * The largest rank whose savings are at least {@code targetSavings}, or 0 when even rank 1 saves less.
     * For 1024 × 1024 and 0.99 the answer is 5 ({@code 5·2048 = 10,240 <= 10,485.76}).
     *
     * @param d             output features, the rows of {@code W [d, k]}, {@code >= 1}
     * @param k             input features, the columns of {@code W}, {@code >= 1}
     * @param targetSavings in {@code [0, 1)}
     * @return the largest {@code r <= min(d, k)} with {@code savings(d, k, r) >= targetSavings}, or 0
     * @throws IllegalArgumentException if {@code d < 1}, {@code k < 1}, {@code targetSavings} is outside
     *                                  {@code [0, 1)}, or {@code d·k} exceeds {@code long}
     */
    public static int maxRankForSavings(long d, long k, double targetSavings) {
        checkDims(d, k);
        if (!(targetSavings >= 0 && targetSavings < 1)) {
            throw new IllegalArgumentException("targetSavings must be in [0, 1), got " + targetSavings);
        }
        // r·(d+k) <= (1 − t)·d·k; exact integer search around the real-valued bound avoids rounding surprises.
        long bound = (long) Math.floor((1.0 - targetSavings) * d * (double) k / (d + k));
        long r = Math.max(0, Math.min(bound + 1, Math.min(d, k)));
        while (r > 0 && savings(d, k, (int) r) < targetSavings) {
            r--;
        }
        return (int) r;
    }

    private static IllegalArgumentException overflow(String what, String arguments) {
        return new IllegalArgumentException(what + " overflows a long (above " + Long.MAX_VALUE + ") for " + arguments
                + "; expected dimensions whose parameter count fits in 64 bits");
    }

    private static void checkDims(long d, long k) {
        if (d < 1 || k < 1) {
            throw new IllegalArgumentException("dimensions must be >= 1, got d=" + d + ", k=" + k);
        }
    }

    private static void checkRank(int r) {
        if (r < 1) {
            throw new IllegalArgumentException("rank must be >= 1, got " + r);
        }
    }
}
