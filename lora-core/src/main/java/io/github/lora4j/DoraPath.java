package io.github.lora4j;

import org.nd4j.linalg.api.ndarray.INDArray;

/**
 * One forward of a DoRA adapter and its gradients, as PEFT computes them ({@code DoraLinearVariant.forward},
 * {@code DoraLinearLayer.forward}): with {@code c = m / ‖W + s·B·A‖_row} (PEFT's {@code mag_norm_scale}, the norm a
 * constant in backward),
 * <pre>
 *   no dropout, or eval:     y = c ⊙ (x Wᵀ + s·(x Aᵀ) Bᵀ) + b
 *   dropout p, training:     y = x Wᵀ + b + (c − 1) ⊙ (x' Wᵀ) + c ⊙ s·(x' Aᵀ) Bᵀ,   x' = dropout(x)
 * </pre>
 * ({@code ⊙} scales each output column). PEFT recomputes the base product on the dropped-out input in the second
 * case, so the base layer sees {@code x} and the DoRA correction {@code x'}; lora4j does the same, at the same cost (a
 * second gemm of W's size, in training with dropout only). With {@code q} the bracket that {@code c} multiplies
 * ({@code x' Wᵀ + s·(x' Aᵀ) Bᵀ}, or the same without dropout):
 * <pre>
 *   dL/dm_j = Σ_i g_ij q_ij / ‖W_j + s(BA)_j‖       gc = g ⊙ c,  gB = gc B
 *   dB += s·gcᵀ u    dA += s·gBᵀ x'    (u = x' Aᵀ)
 *   dx  = gc W + s·gB A                                  (no dropout)
 *   dx  = g W + mask ⊙ ((g ⊙ (c − 1)) W + s·gB A) / (1 − p)   (dropout)
 * </pre>
 * Every numeric call goes through {@link Kernels}; the column scales are Java loops over host memory, {@code O(n·out)}.
 */
final class DoraPath extends LoraPath {

    private final INDArray weight;
    private final boolean inOut;
    private final double[] norms;
    private final double[] c;
    /** {@code q [n, out]} in the scratch (training only). */
    private final INDArray q;
    /** {@code g ⊙ c}, once {@link #gradientThroughW} computed it for this backward. */
    private INDArray gc;

    private DoraPath(LoraAdapter adapter, INDArray xLora, boolean[] kept, INDArray u, double xScale, Scratch scratch,
                     INDArray weight, boolean inOut, double[] norms, double[] c, INDArray q) {
        super(adapter, xLora, kept, u, xScale, scratch);
        this.weight = weight;
        this.inOut = inOut;
        this.norms = norms;
        this.c = c;
        this.q = q;
    }

    /**
     * The whole DoRA forward into {@code y [n, out]}, base product included (DoRA scales it, so the layer does not
     * write it first); returns what backward needs.
     */
    static DoraPath forward(LoraAdapter adapter, INDArray x, INDArray y, INDArray weight, WeightLayout layout,
                            INDArray bias, boolean train, Scratch scratch) {
        Dora dora = adapter.dora();
        double[] norms = dora.norms(weight, layout, adapter);
        double[] c = dora.factors(norms);                                            // c = m / ‖W + sBA‖    [out]
        double s = adapter.scaling();
        boolean inOut = layout == WeightLayout.IN_OUT;
        long n = x.rows();
        long out = y.columns();
        int r = adapter.rank();
        double p = adapter.config().dropout();
        if (train && p > 0) {
            Kernels.linear(x, weight, !inOut, bias, y);                              // y = x W^T + b        [n, out]
            boolean[] kept = Dropout.draw(adapter, x.length(), p);
            INDArray xLora = scratch.array(Scratch.DROPPED, x.dataType(), n, x.columns());
            Kernels.mask(x, kept, xLora);                                            // x ⊙ mask
            double xScale = Dropout.scale(p);                                        // 1/(1-p), into alpha
            INDArray u = scratch.array(Scratch.U, x.dataType(), n, r);
            Kernels.gemm(xLora, adapter.a(), u, false, true, xScale, 0.0);           // u = x' A^T           [n, r]
            INDArray t1 = scratch.array(Scratch.Q, x.dataType(), n, out);
            Kernels.gemm(xLora, weight, t1, false, !inOut, xScale, 0.0);             // t1 = x' W^T          [n, out]
            INDArray t2 = scratch.array(Scratch.OUT2, x.dataType(), n, out);
            Kernels.gemm(u, adapter.b(), t2, false, true, s, 0.0);                   // t2 = s u B^T         [n, out]
            Kernels.addDoraDropout(y, t1, t2, c);                                    // y += (c-1)⊙t1 + c⊙t2; t1 = q
            return new DoraPath(adapter, xLora, kept, u, xScale, scratch, weight, inOut, norms, c, t1);
        }
        INDArray u = scratch.array(Scratch.U, x.dataType(), n, r);
        Kernels.gemm(x, adapter.a(), u, false, true, 1.0, 0.0);                      // u = x A^T            [n, r]
        INDArray q = train ? scratch.array(Scratch.Q, x.dataType(), n, out) : y;
        Kernels.gemm(x, weight, q, false, !inOut, 1.0, 0.0);                         // q = x W^T            [n, out]
        Kernels.gemm(u, adapter.b(), q, false, true, s, 1.0);                        // q += s u B^T
        Kernels.scaleColumns(q, c, bias, y);                                         // y = c ⊙ q + b
        return new DoraPath(adapter, x, null, u, 1.0, scratch, weight, inOut, norms, c, train ? q : null);
    }

    /** {@code g ⊙ c} without dropout (all of dx's W part); {@code g} with dropout (the masked rest is added later). */
    @Override
    INDArray gradientThroughW(INDArray g) {
        if (kept != null) {
            return g;
        }
        gc = columnScaled(g, c);
        return gc;
    }

    @Override
    void backward(INDArray g, INDArray dx) {
        LoraAdapter a = adapter;
        double s = a.scaling();
        long n = g.rows();
        INDArray gcNow = gc != null ? gc : columnScaled(g, c);                       // gc = g ⊙ c           [n, out]
        Kernels.addColumnDots(g, q, norms, a.gradMagnitude());                        // dm += Σ_i g⊙q / ‖·‖  [out]
        INDArray gB = scratch.array(Scratch.GB, g.dataType(), n, a.rank());
        Kernels.gemm(gcNow, a.b(), gB, false, false, 1.0, 0.0);                      // gB = gc B            [n, r]
        Kernels.gemm(gcNow, u, a.gradB(), true, false, s, 1.0);                      // dB += s gc^T u       [out, r]
        Kernels.gemm(gB, xLora, a.gradA(), true, false, s * xScale, 1.0);            // dA += s gB^T x'      [r, in]
        if (dx == null) {
            return;
        }
        if (kept == null) {
            Kernels.gemm(gB, a.a(), dx, false, false, s, 1.0);                       // dx += s gB A         [n, in]
            return;
        }
        double[] cm1 = new double[c.length];
        for (int j = 0; j < cm1.length; j++) {
            cm1[j] = c[j] - 1;
        }
        INDArray gm = columnScaled(g, cm1);                                          // g ⊙ (c - 1)          [n, out]
        INDArray t = scratch.array(Scratch.DROPPED, g.dataType(), n, a.a().columns());
        Kernels.gemm(gm, weight, t, false, inOut, xScale, 0.0);                      // t = (g⊙(c-1)) W/(1-p) [n, in]
        Kernels.gemm(gB, a.a(), t, false, false, s * xScale, 1.0);                   // t += s gB A / (1-p)
        Kernels.addMasked(dx, t, kept);                                              // dx += t ⊙ mask
    }

    /** {@code g ⊙ f} (a column scale) into the scratch's second {@code [n, out]} slot. */
    private INDArray columnScaled(INDArray g, double[] f) {
        INDArray dst = scratch.array(Scratch.OUT2, g.dataType(), g.rows(), g.columns());
        Kernels.scaleColumns(g, f, null, dst);
        return dst;
    }
}
