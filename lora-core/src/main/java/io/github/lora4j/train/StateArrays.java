package io.github.lora4j.train;

import java.nio.DoubleBuffer;
import java.nio.FloatBuffer;
import java.util.Arrays;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.learning.config.IUpdater;

/**
 * The trainer's element loops over small contiguous arrays (gradients, steps, optimizer state: {@code r·(in + out)}
 * elements each), done in Java on the arrays' buffers. Each is one pass without an ND4J op: on a 2-core machine an
 * ND4J element-wise op wakes libnd4j's OpenMP threads, which then fight OpenBLAS's for the cores (docs/performance.md,
 * "One kernel seam, direct BLAS").
 */
final class StateArrays {

    private StateArrays() {
    }

    /** {@code dst ← src}: same data type (FLOAT or DOUBLE), same length, both c-order and contiguous. */
    static void copy(INDArray src, INDArray dst) {
        int n = Math.toIntExact(src.length());
        if (dst.length() != n || src.dataType() != dst.dataType()) {
            throw new IllegalArgumentException("copy: expected equal lengths and data types, got " + src.dataType()
                    + "[" + n + "] into " + dst.dataType() + "[" + dst.length() + "]");
        }
        if (src.dataType() == DataType.DOUBLE) {
            DoubleBuffer d = doubles(dst);
            d.put(doubles(src));
        } else {
            FloatBuffer d = floats(dst);
            d.put(floats(src));
        }
    }

    /**
     * Refuses a step whose result {@code param − step} would hold NaN or infinity, computed as the layer computes
     * it (in the arrays' own type), naming the element; {@code param} and {@code step} have the same shape. Both
     * are first copied in bulk into heap arrays of {@code scratch} (a loop over the direct buffers element by
     * element is several times slower); {@code (p − s)·0} is 0 for finite {@code p − s} and NaN otherwise, so one
     * branch-free pass finds whether any element fails.
     */
    static void requireFiniteDifference(String layer, String adapter, String what, INDArray param, INDArray step,
                                        IUpdater updater, Scratch scratch) {
        int n = Math.toIntExact(param.length());
        int bad = -1;
        double p = 0;
        double s = 0;
        if (param.dataType() == DataType.DOUBLE) {
            double[] pa = scratch.doubles(0, n);
            double[] sa = scratch.doubles(1, n);
            doubles(param).get(pa, 0, n);
            doubles(step).get(sa, 0, n);
            double acc = 0;
            for (int i = 0; i < n; i++) {
                acc += (pa[i] - sa[i]) * 0.0;
            }
            for (int i = 0; acc != 0.0 && i < n; i++) {
                if (!Double.isFinite(pa[i] - sa[i])) {
                    bad = i;
                    p = pa[i];
                    s = sa[i];
                    break;
                }
            }
        } else {
            float[] pa = scratch.floats(0, n);
            float[] sa = scratch.floats(1, n);
            floats(param).get(pa, 0, n);
            floats(step).get(sa, 0, n);
            float acc = 0;
            for (int i = 0; i < n; i++) {
                acc += (pa[i] - sa[i]) * 0.0f;
            }
            for (int i = 0; acc != 0.0f && i < n; i++) {
                if (!Float.isFinite(pa[i] - sa[i])) {
                    bad = i;
                    p = pa[i];
                    s = sa[i];
                    break;
                }
            }
        }
        if (bad >= 0) {
            long cols = param.rank() == 1 ? 0 : param.size(1);
            String element = cols == 0 ? "[" + bad + "]" : "[" + bad / cols + ", " + bad % cols + "]";
            throw new IllegalStateException(layer + ", adapter '" + adapter + "': the step would make " + what + element
                    + " = " + p + " − " + s + " non-finite in " + param.dataType() + " (updater " + updater
                    + "); expected finite new values of A and B (and of DoRA's magnitude). "
                    + "Step refused: A, B, gradients, optimizer state and the iteration count are unchanged");
        }
    }

    /** Two reusable heap arrays per type, grown to the largest parameter checked. */
    static final class Scratch {
        private final float[][] f = new float[2][0];
        private final double[][] d = new double[2][0];

        float[] floats(int which, int n) {
            if (f[which].length < n) {
                f[which] = new float[n];
            }
            return f[which];
        }

        double[] doubles(int which, int n) {
            if (d[which].length < n) {
                d[which] = new double[n];
            }
            return d[which];
        }
    }

    /** A buffer over exactly the array's elements (c-order, contiguous: the trainer's arrays always are). */
    private static FloatBuffer floats(INDArray a) {
        requireContiguous(a);
        FloatBuffer b = a.data().asNioFloat();
        int off = Math.toIntExact(a.offset());
        return b.position(off).limit(off + Math.toIntExact(a.length())).slice();
    }

    private static DoubleBuffer doubles(INDArray a) {
        requireContiguous(a);
        DoubleBuffer b = a.data().asNioDouble();
        int off = Math.toIntExact(a.offset());
        return b.position(off).limit(off + Math.toIntExact(a.length())).slice();
    }

    private static void requireContiguous(INDArray a) {
        if (a.ordering() != 'c' || (a.length() > 1 && a.elementWiseStride() != 1)) {
            throw new IllegalArgumentException("expected a c-order contiguous array, got order " + a.ordering()
                    + ", element-wise stride " + a.elementWiseStride() + ", shape " + Arrays.toString(a.shape()));
        }
    }
}
