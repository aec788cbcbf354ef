package io.github.lora4j.benchmarks.report;

/**
 * What an exact merge remembers to make its unmerge bit-exact, for one shape: {@code LoraLinear.exactMergeBytes()}
 * right after {@code merge(MergeMode.EXACT)}, against {@code W}'s own size.
 *
 * @param in             input features (columns of {@code W})
 * @param out            output features (rows of {@code W})
 * @param rank           LoRA rank r
 * @param relativeUpdate {@code ‖s·B·A‖_F / ‖W‖_F} of the adapter that was merged
 * @param recordBytes    bytes kept by the exact merge (16 per remembered element, capacity included)
 * @param weightBytes    bytes of {@code W} (float32)
 * @param inexact        elements of {@code W} whose round trip {@code fl(fl(w + d) − d)} is not {@code w}, counted
 *                       over {@code W} and one unblocked {@code Δ} (the exact merge's blocked {@code Δ} may round
 *                       a few elements differently): what the record has to remember
 */
public record ExactMergeMemory(int in, int out, int rank, double relativeUpdate, long recordBytes, long weightBytes,
        long inexact) {

    /** {@code recordBytes / weightBytes}. */
    public double fractionOfWeight() {
        return (double) recordBytes / weightBytes;
    }

    /** {@code inexact} as a fraction of W's {@code in·out} elements. */
    public double inexactFraction() {
        return (double) inexact / ((long) in * out);
    }
}
