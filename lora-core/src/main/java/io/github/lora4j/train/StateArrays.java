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
 * ND4J element-wise op wakes libnd4j's OpenMP threads, which then fight OpenBLAS's for the cores (see DESIGN.md).
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
     * it (in the arrays' own type), naming the element; {@code param} and {@code step} have the same shape.
     */
    static void requireFiniteDifference(String layer, String adapter, String what, INDArray param, INDArray step,
                                        IUpdater updater) {
        int n = Math.toIntExact(param.length());
        int bad = -1;
        double p = 0;
        double s = 0;
        if (param.dataType() == DataType.DOUBLE) {
            DoubleBuffer pb = doubles(param);
            DoubleBuffer sb = doubles(step);
            for (int i = 0; i < n; i++) {
                if (!Double.isFinite(pb.get(i) - sb.get(i))) {
                    bad = i;
                    p = pb.get(i);
                    s = sb.get(i);
                    break;
                }
            }
        } else {
            FloatBuffer pb = floats(param);
            FloatBuffer sb = floats(step);
            for (int i = 0; i < n; i++) {
                if (!Float.isFinite(pb.get(i) - sb.get(i))) {
                    bad = i;
                    p = pb.get(i);
                    s = sb.get(i);
                    break;
                }
            }
        }
        if (bad >= 0) {
            long cols = param.size(1);
            throw new IllegalStateException(layer + ", adapter '" + adapter + "': the step would make " + what + "["
                    + bad / cols + ", " + bad % cols + "] = " + p + " − " + s + " non-finite in "
                    + param.dataType() + " (updater " + updater + "); expected finite new values of A and B. "
                    + "Step refused: A, B, gradients, optimizer state and the iteration count are unchanged");
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
