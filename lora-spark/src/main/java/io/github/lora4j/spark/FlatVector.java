package io.github.lora4j.spark;

import java.io.Serializable;
import java.util.Arrays;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;

/**
 * Numbers on the Java heap in a network's data type ({@code float[]} for FLOAT, {@code double[]} for DOUBLE): what
 * travels between driver and workers (adapter values, gradient sums, parameters, rows of data). On the heap, not in
 * ND4J's off-heap memory, so Spark sees and accounts its size, and Java serialisation writes exactly
 * {@link #bytes()} bytes of payload plus a small header.
 */
final class FlatVector implements Serializable {

    private static final long serialVersionUID = 1L;

    /** Exactly one of the two is non-null. */
    private final float[] f;
    private final double[] d;

    private FlatVector(float[] f, double[] d) {
        this.f = f;
        this.d = d;
    }

    /**
     * Zeros.
     *
     * @param type   FLOAT or DOUBLE
     * @param length number of elements
     * @return a new vector of zeros
     */
    static FlatVector zeros(DataType type, int length) {
        return type == DataType.DOUBLE ? new FlatVector(null, new double[length]) : new FlatVector(new float[length], null);
    }

    /**
     * A copy of {@code arr}'s elements in c order, in {@code type}.
     *
     * @param arr  any array; not changed
     * @param type FLOAT or DOUBLE
     * @return a new vector of {@code arr.length()} elements
     */
    static FlatVector of(INDArray arr, DataType type) {
        FlatVector out = zeros(type, Math.toIntExact(arr.length()));
        out.copyFrom(arr, 0);
        return out;
    }

    /**
     * Element size in bytes of a supported network data type.
     *
     * @param type FLOAT or DOUBLE
     * @return 4 or 8
     */
    static int elementBytes(DataType type) {
        if (type != DataType.FLOAT && type != DataType.DOUBLE) {
            throw new IllegalArgumentException("expected data type FLOAT or DOUBLE, got " + type);
        }
        return type == DataType.DOUBLE ? 8 : 4;
    }

    DataType dataType() {
        return d != null ? DataType.DOUBLE : DataType.FLOAT;
    }

    int length() {
        return d != null ? d.length : f.length;
    }

    /** Payload bytes: {@code length × element size}. */
    long bytes() {
        return (long) length() * elementBytes(dataType());
    }

    /** Writes {@code arr} (c order, cast to this vector's type) into elements {@code [offset, offset + arr.length())}. */
    void copyFrom(INDArray arr, int offset) {
        INDArray c = arr.castTo(dataType()).dup('c');
        int n = Math.toIntExact(c.length());
        if (d != null) {
            System.arraycopy(c.data().asDouble(), 0, d, offset, n);
        } else {
            System.arraycopy(c.data().asFloat(), 0, f, offset, n);
        }
    }

    /** Assigns elements {@code [offset, offset + target.length())} to {@code target} (same data type), in c order. */
    void copyTo(INDArray target, int offset) {
        target.assign(slice(offset, target.shape()));
    }

    /**
     * A new ND4J array of elements {@code [offset, offset + Π shape)} in c order.
     *
     * @param offset first element
     * @param shape  the array's shape
     * @return a new array in this vector's data type
     */
    INDArray slice(int offset, long... shape) {
        int n = Math.toIntExact(Arrays.stream(shape).reduce(1, Math::multiplyExact));
        return d != null ? Nd4j.create(Arrays.copyOfRange(d, offset, offset + n), shape, 'c')
                : Nd4j.create(Arrays.copyOfRange(f, offset, offset + n), shape, 'c');
    }

    /**
     * The whole vector as an ND4J array.
     *
     * @param shape a shape of {@link #length()} elements
     * @return a new array
     */
    INDArray toArray(long... shape) {
        return slice(0, shape);
    }

    /**
     * {@code this += other}, element by element, in place.
     *
     * @param other a vector of the same type and length; not changed
     */
    void addInPlace(FlatVector other) {
        if (other.dataType() != dataType() || other.length() != length()) {
            throw new IllegalStateException("expected a " + dataType() + " vector of length " + length() + ", got a "
                    + other.dataType() + " vector of length " + other.length());
        }
        if (d != null) {
            for (int i = 0; i < d.length; i++) {
                d[i] += other.d[i];
            }
        } else {
            for (int i = 0; i < f.length; i++) {
                f[i] += other.f[i];
            }
        }
    }

    /** Index of the first NaN or infinite element, or -1. */
    int firstNonFinite() {
        int n = length();
        for (int i = 0; i < n; i++) {
            if (!Double.isFinite(get(i))) {
                return i;
            }
        }
        return -1;
    }

    /** Copies {@code n} elements of {@code src} from {@code srcOffset} to this vector's {@code dstOffset}. */
    void copyRange(FlatVector src, int srcOffset, int dstOffset, int n) {
        if (d != null) {
            System.arraycopy(src.d, srcOffset, d, dstOffset, n);
        } else {
            System.arraycopy(src.f, srcOffset, f, dstOffset, n);
        }
    }

    double get(int i) {
        return d != null ? d[i] : f[i];
    }
}
