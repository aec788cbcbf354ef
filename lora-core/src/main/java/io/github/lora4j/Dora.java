package io.github.lora4j;

import java.util.Objects;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;

/**
 * DoRA's part of one adapter (PEFT's {@code lora_magnitude_vector}): the magnitude {@code m [out]}, its gradient, and
 * the row norms {@code ‖W + s·B·A‖_row} the layer divides by, one per output feature (a row of {@code W [out, in]},
 * a column of a {@code W [in, out]} stored {@link WeightLayout#IN_OUT}).
 *
 * <h2>The norms without an {@code [out, in]} temporary</h2>
 * PEFT forms {@code W + s·B·A} (an {@code [out, in]} temporary, three passes over W's size) on every forward. Here
 * <pre>
 *   ‖W_j + s·(BA)_j‖² = ‖W_j‖² + 2s·Σ_k B_jk·P_jk + s²·B_j G B_jᵀ,   P = W Aᵀ [out, r],  G = A Aᵀ [r, r]
 * </pre>
 * with {@code ‖W_j‖²} computed once per adapter (W is frozen), {@code P} by one thin gemm that reads W once, and the
 * rest in {@code O(out·r²)}. The three terms are summed in double. Where they cancel (the update takes away more than
 * three quarters of a row's squared norm: {@code ‖W_j‖² + s²‖(BA)_j‖² > 4·‖W_j + s(BA)_j‖²}) the sum would lose
 * digits, so that row is recomputed directly from its elements, in double, in {@code O(in·r)}. The norms are kept
 * until the adapter's A, B, magnitude or scale change (every change goes through the layer's exclusive lock, which
 * drops them): an inference loop pays for them once, training once per step.
 *
 * <p>A norm of zero (a zero row of {@code W + s·B·A}) has no direction to rescale: PEFT then outputs NaN, lora4j
 * refuses with an {@link IllegalStateException} naming the row.
 */
final class Dora {

    /** A row whose terms cancel beyond this ratio is recomputed from its elements (see the class comment). */
    static final double CANCELLATION_LIMIT = 4.0;

    private final INDArray magnitude;
    private final INDArray gradMagnitude;
    /** {@code ‖W_j‖²} per output feature, of the W the adapter was added to. */
    private final double[] weightRowSquares;
    /** {@code ‖W_j + s(BA)_j‖} of the current A, B, s; null until computed, dropped by {@link #invalidate()}. */
    private volatile double[] norms;
    /** {@code m / norms}, for {@link #norms} and the current m; null until computed, dropped with them. */
    private volatile double[] factors;

    private Dora(INDArray magnitude, double[] weightRowSquares) {
        this.magnitude = magnitude;
        this.gradMagnitude = Nd4j.zeros(magnitude.dataType(), magnitude.shape());
        this.weightRowSquares = weightRowSquares;
    }

    /**
     * The DoRA part of a new adapter on {@code weight}: {@code m = ‖W + s·B·A‖_row}, PEFT's initial magnitude (with
     * {@code B = 0}, the row norms of W), rounded to W's type.
     *
     * @throws IllegalArgumentException if a row of {@code W + s·B·A} has norm 0 (DoRA's direction is undefined there)
     */
    static Dora create(INDArray weight, WeightLayout layout, INDArray a, INDArray b, double s) {
        double[] rowSquares = Kernels.rowSquares(weight, layout == WeightLayout.IN_OUT);
        double[] n = computeNorms(weight, layout, a, b, s, rowSquares);
        for (int j = 0; j < n.length; j++) {
            if (!(n[j] > 0)) {
                throw new IllegalArgumentException("DoRA needs every output row of W + s·B·A to have a non-zero norm "
                        + "(its direction is undefined otherwise); row " + j + " of " + n.length + " has norm " + n[j]
                        + (layout == WeightLayout.IN_OUT ? " (column " + j + " of W [in, out])" : "")
                        + ". Use plain LoRA for this layer");
            }
        }
        INDArray m = Nd4j.createFromArray(n).castTo(weight.dataType());
        Dora d = new Dora(m, rowSquares);
        d.norms = n;
        return d;
    }

    /** The live magnitude {@code m [out]}. */
    INDArray magnitude() {
        return magnitude;
    }

    /** The live gradient {@code dL/dm [out]}. */
    INDArray gradMagnitude() {
        return gradMagnitude;
    }

    /** Drops the cached norms: A, B, m or the scale changed. Called under the layer's exclusive lock. */
    void invalidate() {
        norms = null;
        factors = null;
    }

    /**
     * {@code ‖W_j + s(BA)_j‖} of the adapter's current A, B and scaling over {@code weight} (the W it was added to,
     * unmerged); computed once and kept until {@link #invalidate()}. Readers may race to compute it: each computes
     * the same values, and the array is never written once published.
     *
     * @throws IllegalStateException if a norm is zero or not finite, naming the row
     */
    double[] norms(INDArray weight, WeightLayout layout, LoraAdapter adapter) {
        double[] n = norms;
        if (n == null) {
            n = computeNorms(weight, layout, adapter.a(), adapter.b(), adapter.scaling(), weightRowSquares);
            for (int j = 0; j < n.length; j++) {
                if (!(n[j] > 0) || Double.isInfinite(n[j])) {
                    throw new IllegalStateException("DoRA adapter '" + adapter.name() + "': ‖W + s·B·A‖ of output row "
                            + j + " is " + n[j] + "; expected a positive finite norm to divide the magnitude by (PEFT "
                            + "would output NaN there). Change A or B, or use plain LoRA");
                }
            }
            norms = n;
        }
        return n;
    }

    /**
     * The DoRA factors {@code c_j = m_j / ‖W_j + s(BA)_j‖} (PEFT's {@code mag_norm_scale}), in double, for norms
     * {@code norms} from {@link #norms}; kept with them (m changes only where they are dropped). Never written once
     * returned.
     */
    double[] factors(double[] norms) {
        double[] c = factors;
        if (c == null || this.norms != norms) {
            double[] m = Kernels.readDoubles(magnitude);
            c = new double[m.length];
            for (int j = 0; j < c.length; j++) {
                c[j] = m[j] / norms[j];
            }
            if (this.norms == norms) {
                factors = c;
            }
        }
        return c;
    }

    /** Copies {@code m} (checked by the caller) into the live magnitude. */
    void setMagnitude(INDArray m) {
        magnitude.assign(m);
    }

    /** {@code ‖W_j + s(BA)_j‖} by the expansion in the class comment, with the direct fallback for cancelling rows. */
    static double[] computeNorms(INDArray w, WeightLayout layout, INDArray a, INDArray b, double s,
                                 double[] rowSquares) {
        boolean inOut = layout == WeightLayout.IN_OUT;
        int r = Math.toIntExact(a.rows());
        int out = Math.toIntExact(b.rows());
        DataType type = w.dataType();
        INDArray p = Nd4j.createUninitialized(type, out, r);
        Kernels.gemm(w, a, p, inOut, true, 1.0, 0.0);                              // P = W A^T          [out, r]
        INDArray g = Nd4j.createUninitialized(type, r, r);
        Kernels.gemm(a, a, g, false, true, 1.0, 0.0);                              // G = A A^T          [r, r]
        double[] pv = Kernels.readDoubles(p);
        double[] gv = Kernels.readDoubles(g);
        double[] bv = Kernels.readDoubles(b);
        double[] norms = new double[out];
        double[] av = null;
        for (int j = 0; j < out; j++) {
            int o = j * r;
            double dot = 0;
            double quad = 0;
            for (int k = 0; k < r; k++) {
                dot += bv[o + k] * pv[o + k];
                double gb = 0;
                for (int l = 0; l < r; l++) {
                    gb += gv[k * r + l] * bv[o + l];
                }
                quad += bv[o + k] * gb;
            }
            double base = rowSquares[j] + s * s * Math.max(quad, 0.0);
            double n2 = rowSquares[j] + 2 * s * dot + s * s * quad;
            if (n2 > 0 && base <= CANCELLATION_LIMIT * n2 && Double.isFinite(base)) {
                norms[j] = Math.sqrt(n2);
            } else {
                if (av == null) {
                    av = Kernels.readDoubles(a);
                }
                norms[j] = directNorm(w, inOut, av, bv, r, s, j);
            }
        }
        return norms;
    }

    /** {@code ‖W_j + s(BA)_j‖} from the row's elements, in double, scaled against overflow. */
    private static double directNorm(INDArray w, boolean inOut, double[] a, double[] b, int r, double s, int j) {
        double[] row = Kernels.readDoubles(inOut ? w.getColumn(j) : w.getRow(j));
        int in = row.length;
        double max = 0;
        for (int i = 0; i < in; i++) {
            double d = 0;
            for (int k = 0; k < r; k++) {
                d += b[j * r + k] * a[k * in + i];
            }
            row[i] += s * d;
            max = Math.max(max, Math.abs(row[i]));
        }
        if (max == 0 || !Double.isFinite(max)) {
            return max;
        }
        double sum = 0;
        for (int i = 0; i < in; i++) {
            double v = row[i] / max;
            sum += v * v;
        }
        return max * Math.sqrt(sum);
    }

    /** Refuses a DoRA config on a layer that cannot carry it ({@code host} names the layer type). */
    static void refuseOn(String host, LoraConfig config) {
        Objects.requireNonNull(config, "config must not be null");
        if (config.useDora()) {
            throw new IllegalArgumentException("DoRA (useDora = true) is supported on LoraLinear only, not on a "
                    + host + "; expected useDora = false here (PEFT's DoRA for embeddings and convolutions is not "
                    + "implemented in lora4j)");
        }
    }
}
