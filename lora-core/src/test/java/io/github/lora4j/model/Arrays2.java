package io.github.lora4j.model;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;

import java.util.SplittableRandom;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;

/** Deterministic arrays and bitwise comparison for the model and SameDiff tests. */
final class Arrays2 {

    private Arrays2() {
    }

    /** A c-order array with N(0, scale²) entries drawn from {@code seed}. */
    static INDArray gaussian(DataType type, long seed, double scale, long... shape) {
        SplittableRandom rng = new SplittableRandom(seed);
        long n = 1;
        for (long d : shape) {
            n *= d;
        }
        double[] v = new double[Math.toIntExact(n)];
        for (int i = 0; i < v.length; i++) {
            v[i] = rng.nextGaussian() * scale;
        }
        return Nd4j.createFromArray(v).castTo(type).reshape('c', shape);
    }

    /** Raw bits of every element in c order (floats widened bit for bit). */
    static long[] bits(INDArray a) {
        INDArray c = a.dup('c');
        long[] out = new long[Math.toIntExact(c.length())];
        if (c.dataType() == DataType.DOUBLE) {
            double[] v = c.data().asDouble();
            for (int i = 0; i < v.length; i++) {
                out[i] = Double.doubleToRawLongBits(v[i]);
            }
        } else {
            float[] v = c.data().asFloat();
            for (int i = 0; i < v.length; i++) {
                out[i] = Float.floatToRawIntBits(v[i]);
            }
        }
        return out;
    }

    static void assertBitwiseEquals(INDArray expected, INDArray actual, String what) {
        assertArrayEquals(expected.shape(), actual.shape(), what + ": shape");
        assertArrayEquals(bits(expected), bits(actual), what + ": bits");
    }

    /** Largest |a − e| over all elements. */
    static double maxAbsDiff(INDArray actual, INDArray expected) {
        return actual.castTo(DataType.DOUBLE).sub(expected.castTo(DataType.DOUBLE)).amaxNumber().doubleValue();
    }
}
