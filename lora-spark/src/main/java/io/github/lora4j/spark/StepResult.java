package io.github.lora4j.spark;

import java.io.Serializable;

/**
 * The sum of what tasks return for one step: the gradient of A and B summed over rows (DL4J's backward pass gives
 * the sum; the driver's updater divides by the rows, as {@code fit} does), the rows, and the loss summed over rows.
 * Merging two results adds them; {@link #empty()} (no rows, no gradient) is the identity. A result is built fresh by
 * each task and merged in place: nothing else holds it.
 */
final class StepResult implements Serializable {

    private static final long serialVersionUID = 1L;

    /** Rows contributed. */
    long rows;
    /** Σ over rows of the loss (without regularisation). */
    double lossSum;
    /** Σ over rows of dL/dA, dL/dB; null when {@code rows == 0}. */
    FlatVector gradient;
    /** Tasks that contributed rows. */
    int tasks;
    /** Longest time one task spent computing its gradient. */
    long maxComputeNanos;

    StepResult() {
    }

    StepResult(long rows, double lossSum, FlatVector gradient, long computeNanos) {
        this.rows = rows;
        this.lossSum = lossSum;
        this.gradient = gradient;
        this.tasks = 1;
        this.maxComputeNanos = computeNanos;
    }

    /** The identity of {@link #merge}. */
    static StepResult empty() {
        return new StepResult();
    }

    /**
     * {@code this + other}, in place where this holds a gradient.
     *
     * @param other a result no one else holds; may be returned (and then be changed by later merges)
     * @return the sum
     */
    StepResult merge(StepResult other) {
        if (other.gradient == null) {
            return this;
        }
        if (gradient == null) {
            return other;
        }
        gradient.addInPlace(other.gradient);
        rows += other.rows;
        lossSum += other.lossSum;
        tasks += other.tasks;
        maxComputeNanos = Math.max(maxComputeNanos, other.maxComputeNanos);
        return this;
    }
}
