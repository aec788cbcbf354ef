package io.github.lora4j;

import java.util.Objects;
import org.nd4j.linalg.api.ndarray.INDArray;

/**
 * DoRA's row norms {@code ‖W + s·B·A‖_row} for hosts that keep {@code W}, {@code A} and {@code B} themselves (lora-dl4j's
 * layers hold them as DL4J parameters): the same computation {@link LoraLinear} divides its magnitude by (the expanded
 * square without an {@code [out, in]} temporary, summed in double, with the direct fallback for rows whose terms
 * cancel), so both hosts compute the same factors.
 */
public final class DoraNorms {

    private DoraNorms() {
    }

    /**
     * The norms {@code ‖W_j + s·(B·A)_j‖}, one per output feature (a row of {@code W [out, in]}, a column of a
     * {@link WeightLayout#IN_OUT} {@code W [in, out]}), in double. Costs one thin gemm {@code W Aᵀ} and one pass over
     * {@code W}; nothing is kept.
     *
     * @param weight  {@code W}, in {@code layout}; read only
     * @param layout  how {@code W} is stored
     * @param a       {@code A [r, in]}; read only
     * @param b       {@code B [out, r]}; read only
     * @param scaling {@code s}
     * @return a new array of {@code out} positive, finite norms
     * @throws IllegalStateException if a norm is zero or not finite (DoRA's direction is undefined there; PEFT would
     *                               output NaN), naming the row
     */
    public static double[] of(INDArray weight, WeightLayout layout, INDArray a, INDArray b, double scaling) {
        Objects.requireNonNull(weight, "weight must not be null");
        Objects.requireNonNull(layout, "layout must not be null");
        double[] n = Dora.computeNorms(weight, layout, a, b, scaling,
                Kernels.rowSquares(weight, layout == WeightLayout.IN_OUT));
        for (int j = 0; j < n.length; j++) {
            if (!(n[j] > 0) || Double.isInfinite(n[j])) {
                throw new IllegalStateException("DoRA: ‖W + s·B·A‖ of output feature " + j + " is " + n[j]
                        + "; expected a positive finite norm to divide the magnitude by (PEFT would output NaN "
                        + "there). Change A or B, or use plain LoRA");
            }
        }
        return n;
    }
}
