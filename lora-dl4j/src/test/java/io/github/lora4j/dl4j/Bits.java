package io.github.lora4j.dl4j;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;

import java.util.Arrays;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;

/** Bitwise comparison of arrays (ND4J's equals has a tolerance). */
final class Bits {

    private Bits() {
    }

    static long[] of(INDArray a) {
        INDArray c = a.dup('c');
        long[] out = new long[(int) c.length()];
        if (c.dataType() == DataType.DOUBLE) {
            double[] d = c.data().asDouble();
            for (int i = 0; i < out.length; i++) {
                out[i] = Double.doubleToRawLongBits(d[i]);
            }
        } else {
            float[] f = c.data().asFloat();
            for (int i = 0; i < out.length; i++) {
                out[i] = Float.floatToRawIntBits(f[i]);
            }
        }
        return out;
    }

    static void assertBitwise(INDArray expected, INDArray actual, String what) {
        assertEquals(expected.dataType(), actual.dataType(), what + ": data type");
        assertArrayEquals(expected.shape(), actual.shape(), what + ": shape " + Arrays.toString(actual.shape()));
        assertArrayEquals(of(expected), of(actual), what + ": expected bitwise equal arrays");
    }
}
