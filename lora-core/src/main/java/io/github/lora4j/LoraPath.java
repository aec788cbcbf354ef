package io.github.lora4j;

import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.memory.MemoryWorkspace;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;

/**
 * The LoRA path {@code y += s·(dropout(x) A^T) B^T} of one forward, and its gradients: what backward needs from that
 * forward (the dropped-out input, its mask, {@code u = x A^T} and the dropout factor), with {@code W} never involved.
 *
 * <p>Backward (W frozen): {@code gB = g B}, {@code dB = s·g^T u}, {@code dA = s·gB^T x}, {@code dx += s·gB A}.
 * The intermediates live in a {@link Scratch} reused from call to call. A DoRA adapter's path is a {@link DoraPath}.
 */
class LoraPath {

    final LoraAdapter adapter;
    final INDArray xLora;
    final boolean[] kept;
    final INDArray u;
    final double xScale;
    final Scratch scratch;

    LoraPath(LoraAdapter adapter, INDArray xLora, boolean[] kept, INDArray u, double xScale, Scratch scratch) {
        this.adapter = adapter;
        this.xLora = xLora;
        this.kept = kept;
        this.u = u;
        this.xScale = xScale;
        this.scratch = scratch;
    }

    /** The adapter this path ran. */
    LoraAdapter adapter() {
        return adapter;
    }

    /** {@code y += s·(dropout(x) A^T) B^T}, fused into two gemms (dropout in training only); returns what backward needs. */
    static LoraPath forward(LoraAdapter adapter, INDArray x, INDArray y, boolean train, Scratch scratch) {
        long n = x.rows();
        INDArray xLora = x;
        boolean[] kept = null;
        double xScale = 1.0;
        double p = adapter.config().dropout();
        if (train && p > 0) {
            kept = Dropout.draw(adapter, x.length(), p);
            xLora = scratch.array(Scratch.DROPPED, x.dataType(), n, x.columns());
            Kernels.mask(x, kept, xLora);                                              // x ⊙ m
            xScale = Dropout.scale(p);                                                 // 1/(1-p), into alpha
        }
        INDArray u = scratch.array(Scratch.U, x.dataType(), n, adapter.rank());
        Kernels.gemm(xLora, adapter.a(), u, false, true, xScale, 0.0);                 // u = x A^T           [n, r]
        Kernels.gemm(u, adapter.b(), y, false, true, adapter.scaling(), 1.0);          // y += s u B^T        [n, out]
        return new LoraPath(adapter, xLora, kept, u, xScale, scratch);
    }

    /**
     * The gradient that reaches the input through {@code W}'s gemm, {@code dx = (this) W}, before {@link #backward}
     * adds the adapter's part: {@code g} itself for LoRA.
     */
    INDArray gradientThroughW(INDArray g) {
        return g;
    }

    /** Adds {@code dL/dA}, {@code dL/dB} into the adapter's gradients and, when {@code dx} is given, {@code s·gB A} into it. */
    void backward(INDArray g, INDArray dx) {
        double s = adapter.scaling();
        long n = g.rows();
        INDArray gB = scratch.array(Scratch.GB, g.dataType(), n, adapter.rank());
        Kernels.gemm(g, adapter.b(), gB, false, false, 1.0, 0.0);                      // gB = g B            [n, r]
        Kernels.gemm(g, u, adapter.gradB(), true, false, s, 1.0);                      // dB += s g^T u       [out, r]
        Kernels.gemm(gB, xLora, adapter.gradA(), true, false, s * xScale, 1.0);        // dA += s gB^T x      [r, in]
        if (dx == null) {
            return;
        }
        if (kept == null) {
            Kernels.gemm(gB, adapter.a(), dx, false, false, s, 1.0);                   // dx += s gB A        [n, in]
        } else {
            INDArray t = scratch.array(Scratch.DROPPED, g.dataType(), n, adapter.a().columns());
            Kernels.gemm(gB, adapter.a(), t, false, false, s * xScale, 0.0);           // t = s/(1-p) gB A    [n, in]
            Kernels.addMasked(dx, t, kept);                                            // dx += t ⊙ m
        }
    }

    /**
     * Per-layer intermediates ({@code u}, {@code gB}, the dropped-out input), reused while the batch shape stays:
     * allocating them per call costs more than the thin gemms that fill them. Created outside any ND4J workspace so
     * they outlive the caller's workspace cycles. One scratch serves one call at a time: the layer lends it out
     * (see {@code LoraLinear}), so concurrent inference gets its own.
     */
    static final class Scratch {
        static final int U = 0;
        static final int GB = 1;
        static final int DROPPED = 2;
        /** Mixed batches: every run's or segment's {@code u}, packed. */
        static final int MIXED_U = 3;
        /** Mixed batches: the rows of the adapted rows, gathered by adapter. */
        static final int GATHERED_X = 4;
        /** Mixed batches: the LoRA update of the gathered rows. */
        static final int GATHERED_Y = 5;

        /** DoRA: {@code q [n, out]}, the output before its column scale (kept for {@code dL/dm}). */
        static final int Q = 6;
        /** DoRA: {@code [n, out]}, the LoRA term with dropout, then {@code g ⊙ c}. */
        static final int OUT2 = 7;

        private final INDArray[] arrays = new INDArray[8];

        /** The {@code [rows, cols]} c-order array of {@code slot}; contents undefined. */
        INDArray array(int slot, DataType type, long rows, long cols) {
            INDArray a = arrays[slot];
            if (a == null || a.dataType() != type || a.rows() != rows || a.columns() != cols) {
                try (MemoryWorkspace ignored = Nd4j.getWorkspaceManager().scopeOutOfWorkspaces()) {
                    a = Nd4j.createUninitialized(type, rows, cols);
                }
                arrays[slot] = a;
            }
            return a;
        }

        /**
         * A c-order {@code [1, capacity]} array of {@code slot} holding at least {@code length} elements; contents
         * undefined. It grows by half again when too small and never shrinks, so batches of changing composition
         * reuse it.
         */
        INDArray flat(int slot, DataType type, long length) {
            INDArray a = arrays[slot];
            if (a == null || a.dataType() != type || a.length() < length) {
                long capacity = Math.max(Math.max(1, length), a == null || a.dataType() != type ? 0 : a.length() * 3 / 2);
                try (MemoryWorkspace ignored = Nd4j.getWorkspaceManager().scopeOutOfWorkspaces()) {
                    a = Nd4j.createUninitialized(type, 1, capacity);
                }
                arrays[slot] = a;
            }
            return a;
        }
    }
}
