package io.github.lora4j;

import static org.junit.jupiter.api.Assertions.fail;

import java.util.SplittableRandom;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;

/** Deterministic test arrays and bitwise comparisons. */
public final class TestData {

    private TestData() {
    }

    /** A c-order array of the given shape with N(0, scale²) entries drawn from {@code seed}. */
    public static INDArray gaussian(DataType type, long seed, double scale, long... shape) {
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

    /**
     * An exact-merge case: W {@code [rows, cols]} in its layout (for {@code inOut} that is {@code [in, out]}, so
     * {@code in = rows}; otherwise {@code out = rows}), A {@code [r, in]} and B {@code [out, r]}, all Gaussian from
     * {@code seed}, {@code seed + 1}, {@code seed + 2}, with {@code r = min(rank, rows, cols)}.
     */
    public record MergeCase(INDArray w, INDArray a, INDArray b, int r) {

        /** The case for these sizes; A and B with standard deviations {@code scaleA}, {@code scaleB}. */
        public static MergeCase of(DataType type, boolean inOut, int rows, int cols, int rank, long seed,
                                   double scaleA, double scaleB) {
            int r = Math.min(rank, Math.min(rows, cols));
            long in = inOut ? rows : cols;
            long out = inOut ? cols : rows;
            return new MergeCase(gaussian(type, seed, 1.0, rows, cols), gaussian(type, seed + 1, scaleA, r, in),
                    gaussian(type, seed + 2, scaleB, out, r), r);
        }
    }

    /** A layer with random W and bias, whose default adapter has random (non-zero) A and B. */
    public static LoraLinear trainedLayer(DataType type, long seed, int in, int out, LoraConfig config, boolean bias) {
        INDArray w = gaussian(type, seed, 0.5, out, in);
        INDArray b = bias ? gaussian(type, seed + 1, 0.5, out) : null;
        LoraLinear layer = LoraLinear.wrap(w, b, config);
        layer.setAdapterWeights(LoraLinear.DEFAULT_ADAPTER, gaussian(type, seed + 2, 0.5, config.rank(), in),
                gaussian(type, seed + 3, 0.5, out, config.rank()));
        return layer;
    }

    /** The raw bits of every element, in c order, as longs (floats widened bit-for-bit). */
    public static long[] bits(INDArray a) {
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

    /** Fails unless {@code actual} has the same shape and the same bits as {@code expected}, naming the first difference. */
    public static void assertBitwiseEquals(INDArray expected, INDArray actual, String what) {
        if (expected.dataType() != actual.dataType() || !java.util.Arrays.equals(expected.shape(), actual.shape())) {
            fail(what + ": expected " + expected.dataType() + java.util.Arrays.toString(expected.shape()) + ", got "
                    + actual.dataType() + java.util.Arrays.toString(actual.shape()));
        }
        long[] e = bits(expected);
        long[] a = bits(actual);
        for (int i = 0; i < e.length; i++) {
            if (e[i] != a[i]) {
                fail(what + ": element " + i + " differs bitwise: expected " + expected.dup('c').getDouble(i)
                        + ", got " + actual.dup('c').getDouble(i) + " (" + count(e, a) + " of " + e.length + " differ)");
            }
        }
    }

    private static int count(long[] e, long[] a) {
        int n = 0;
        for (int i = 0; i < e.length; i++) {
            n += e[i] != a[i] ? 1 : 0;
        }
        return n;
    }

    /** Largest |a − b| / max(|b|, floor) over all elements. */
    public static double maxRelativeError(INDArray actual, INDArray expected, double floor) {
        double[] a = actual.dup('c').castTo(DataType.DOUBLE).data().asDouble();
        double[] e = expected.dup('c').castTo(DataType.DOUBLE).data().asDouble();
        double worst = 0;
        for (int i = 0; i < a.length; i++) {
            worst = Math.max(worst, Math.abs(a[i] - e[i]) / Math.max(Math.abs(e[i]), floor));
        }
        return worst;
    }

    /**
     * Normwise relative error {@code max|a − e| / max|e|}: the measure for results that sum the same terms in a
     * different order (merged vs unmerged), whose rounding scales with the terms rather than with one element.
     */
    public static double normwiseRelativeError(INDArray actual, INDArray expected) {
        double scale = expected.amaxNumber().doubleValue();
        double diff = actual.castTo(DataType.DOUBLE).sub(expected.castTo(DataType.DOUBLE)).amaxNumber().doubleValue();
        return scale == 0 ? diff : diff / scale;
    }

    /** Largest {@code |actual − expected|} over all elements, in double. */
    public static double maxAbsDiff(INDArray actual, INDArray expected) {
        return actual.castTo(DataType.DOUBLE).sub(expected.castTo(DataType.DOUBLE)).amaxNumber().doubleValue();
    }

    /**
     * Every file and folder below {@code dir}, lock files ({@code .lora4j.lock}) aside: relative path to the file's
     * bytes (Base64), folders with a trailing {@code /}; empty when {@code dir} does not exist. Two equal trees hold
     * the same files, byte for byte.
     */
    public static java.util.Map<String, String> fileTree(java.nio.file.Path dir) throws java.io.IOException {
        java.util.Map<String, String> out = new java.util.TreeMap<>();
        if (!java.nio.file.Files.exists(dir)) {
            return out;
        }
        try (java.util.stream.Stream<java.nio.file.Path> walk = java.nio.file.Files.walk(dir)) {
            for (java.nio.file.Path p : walk.toList()) {
                String rel = dir.relativize(p).toString();
                if (java.nio.file.Files.isDirectory(p)) {
                    out.put(rel + "/", "");
                } else if (!p.getFileName().toString().equals(".lora4j.lock")) {
                    out.put(rel, java.util.Base64.getEncoder().encodeToString(java.nio.file.Files.readAllBytes(p)));
                }
            }
        }
        return out;
    }
}
