package io.github.lora4j;

import static io.github.lora4j.TestData.assertBitwiseEquals;
import static io.github.lora4j.TestData.gaussian;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import org.junit.jupiter.api.Test;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;

/**
 * Dropout on the LoRA input path: {@code y = x W^T + b + s·((x ⊙ m)/(1 − p) A^T) B^T} in training mode with a
 * Bernoulli(1 − p) mask {@code m} drawn from the adapter's seed, and no dropout in eval mode.
 */
class DropoutTest {

    private static final DataType D = DataType.DOUBLE;
    private static final double P = 0.25;

    /**
     * A probe whose output is exactly the LoRA path's input: {@code W = 0}, {@code A = B = I}, {@code s = 1}, so
     * {@code y = (x ⊙ m)/(1 − p)}; its first training forward reveals the first mask of the given seed.
     */
    private static LoraLinear probe(int in, long seed) {
        LoraLinear l = LoraLinear.wrap(Nd4j.zeros(D, in, in), null,
                LoraConfig.builder().rank(in).alpha(in).dropout(P).seed(seed).build());
        l.setAdapterWeights(LoraLinear.DEFAULT_ADAPTER, Nd4j.eye(in).castTo(D), Nd4j.eye(in).castTo(D));
        return l;
    }

    /** The first mask that an adapter seeded with {@code seed} draws for an {@code [n, in]} input. */
    private static double[][] firstMask(INDArray x, long seed) {
        int n = x.rows();
        int in = x.columns();
        INDArray y = probe(in, seed).train().forward(x);
        double[][] m = new double[n][in];
        for (int i = 0; i < n; i++) {
            for (int j = 0; j < in; j++) {
                m[i][j] = y.getDouble(i, j) == 0 ? 0 : 1;
            }
        }
        return m;
    }

    @Test
    void trainModeZeroesInputsWithProbabilityPAndScalesTheRestByOneOverOneMinusP() {
        INDArray x = gaussian(D, 1, 1, 400, 8);
        INDArray y = probe(8, 7).train().forward(x);
        int zeros = 0;
        for (int i = 0; i < 400; i++) {
            for (int j = 0; j < 8; j++) {
                double yij = y.getDouble(i, j);
                double kept = x.getDouble(i, j) / (1 - P);
                if (yij == 0) {
                    zeros++;
                } else {
                    assertEquals(kept, yij, 1e-15 * Math.abs(kept), "kept element (" + i + ", " + j + ") scaled by 1/(1-p)");
                }
            }
        }
        // 3,200 Bernoulli draws: the dropped fraction lies within 5 standard deviations (0.038) of p.
        double fraction = zeros / 3200.0;
        assertEquals(P, fraction, 0.04, "fraction of dropped inputs");
    }

    @Test
    void theSameSeedGivesTheSameMasksAndAnotherSeedOthers() {
        INDArray x = gaussian(D, 2, 1, 50, 6);
        LoraLinear a = TestData.trainedLayer(D, 3, 6, 4, LoraConfig.builder().rank(2).dropout(P).seed(11).build(), true);
        LoraLinear b = TestData.trainedLayer(D, 3, 6, 4, LoraConfig.builder().rank(2).dropout(P).seed(11).build(), true);
        LoraLinear c = TestData.trainedLayer(D, 3, 6, 4, LoraConfig.builder().rank(2).dropout(P).seed(12).build(), true);
        a.train();
        b.train();
        c.train();
        INDArray ya1 = a.forward(x);
        INDArray ya2 = a.forward(x);
        assertBitwiseEquals(ya1, b.forward(x), "first training forward, same seed");
        assertBitwiseEquals(ya2, b.forward(x), "second training forward, same seed");
        assertFalse(ya1.equalsWithEps(c.forward(x), 1e-9), "another seed must draw another mask");
        assertFalse(ya1.equalsWithEps(ya2, 1e-9), "successive forwards draw fresh masks");
    }

    /** The public rule other hosts (lora-dl4j) draw by is the one LoraLinear draws by: the same masks, in order. */
    @Test
    void dropoutStreamDrawsTheMasksLoraLinearDraws() {
        INDArray x = gaussian(D, 1, 3, 12, 5);
        LoraLinear layer = probe(5, 42).train();
        DropoutStream stream = DropoutStream.of(LoraConfig.builder().rank(5).alpha(5).dropout(P).seed(42).build());
        for (int round = 0; round < 3; round++) {
            INDArray y = layer.forward(x);
            boolean[] kept = stream.next(x.length());
            for (int i = 0; i < kept.length; i++) {
                assertEquals(kept[i], y.getDouble(i / 5, i % 5) != 0, "round " + round + ", element " + i);
            }
        }
        assertEquals(1 / (1 - P), stream.scale());
        boolean[] none = DropoutStream.of(LoraConfig.defaults()).next(50);
        for (boolean k : none) {
            assertTrue(k, "p = 0 keeps every element");
        }
    }

    @Test
    void evalModeHasNoDropout() {
        INDArray x = gaussian(D, 4, 1, 30, 6);
        LoraLinear l = TestData.trainedLayer(D, 5, 6, 4, LoraConfig.builder().rank(2).alpha(3).dropout(0.5).build(), true);
        LoraAdapter ad = l.adapter(LoraLinear.DEFAULT_ADAPTER);
        INDArray expected = x.mmul(l.weight().transpose()).addRowVector(l.bias())
                .add(x.mmul(ad.a().transpose()).mmul(ad.b().transpose()).mul(ad.scaling()));
        INDArray trained = l.train().forward(x);
        assertTrue(TestData.maxRelativeError(trained, expected, 1) > 1e-3, "training forward must show dropout");
        l.eval();
        INDArray y1 = l.forward(x);
        assertTrue(TestData.maxRelativeError(y1, expected, 1) < 1e-12, "eval forward is the plain LoRA formula");
        assertBitwiseEquals(y1, l.forward(x), "eval forward repeated");
    }

    @Test
    void trainingForwardAndBackwardWithDropoutMatchTheFormulaAndFiniteDifferencesForTheDrawnMask() {
        int n = 6;
        int in = 8;
        int out = 5;
        int r = 3;
        long seed = 99;
        INDArray xArr = gaussian(D, 20, 1, n, in);
        double[][] m = firstMask(xArr, seed);
        LoraLinear l = TestData.trainedLayer(D, 21, in, out,
                LoraConfig.builder().rank(r).alpha(2).dropout(P).seed(seed).build(), true);
        LoraAdapter ad = l.adapter(LoraLinear.DEFAULT_ADAPTER);
        double[][] x = toArray(xArr);
        double[][] w = toArray(l.weight());
        double[] bias = l.bias().dup().data().asDouble();
        double[][] a = toArray(ad.a());
        double[][] b = toArray(ad.b());
        double[][] g = toArray(gaussian(D, 22, 1, n, out));
        double s = ad.scaling();

        INDArray y = l.train().forward(xArr);
        double[][] expected = forward(x, m, w, bias, a, b, s);
        for (int i = 0; i < n; i++) {
            for (int k = 0; k < out; k++) {
                assertEquals(expected[i][k], y.getDouble(i, k), 1e-12, "y(" + i + ", " + k + ") with the drawn mask");
            }
        }
        INDArray dx = l.backward(Nd4j.createFromArray(g));

        java.util.function.DoubleSupplier lossNow = () -> loss(g, forward(x, m, w, bias, a, b, s));
        assertCentralDifferences(a, ad.gradA(), "dL/dA", lossNow);
        assertCentralDifferences(b, ad.gradB(), "dL/dB", lossNow);
        assertCentralDifferences(x, dx, "dL/dx", lossNow);
        boolean someDropped = false;
        for (double[] row : m) {
            for (double v : row) {
                someDropped |= v == 0;
            }
        }
        assertTrue(someDropped, "the mask must drop something, or this test checks no dropout");
    }

    /** {@code y = x W^T + b + s·((x ⊙ m)/(1 − p) A^T) B^T} in plain doubles. */
    private static double[][] forward(double[][] x, double[][] m, double[][] w, double[] bias, double[][] a,
                                      double[][] b, double s) {
        int n = x.length;
        int in = x[0].length;
        int out = w.length;
        int r = a.length;
        double[][] y = new double[n][out];
        for (int i = 0; i < n; i++) {
            double[] u = new double[r];
            for (int q = 0; q < r; q++) {
                for (int j = 0; j < in; j++) {
                    u[q] += x[i][j] * m[i][j] / (1 - P) * a[q][j];
                }
            }
            for (int k = 0; k < out; k++) {
                double v = bias[k];
                for (int j = 0; j < in; j++) {
                    v += x[i][j] * w[k][j];
                }
                for (int q = 0; q < r; q++) {
                    v += s * u[q] * b[k][q];
                }
                y[i][k] = v;
            }
        }
        return y;
    }

    private static double loss(double[][] g, double[][] y) {
        double sum = 0;
        for (int i = 0; i < g.length; i++) {
            for (int k = 0; k < g[0].length; k++) {
                sum += g[i][k] * y[i][k];
            }
        }
        return sum;
    }

    private static double[][] toArray(INDArray a) {
        return a.castTo(D).toDoubleMatrix();
    }

    /**
     * Perturbs each element of {@code p} (which {@code loss} reads) by ±h and compares the central difference with
     * {@code analytic}. L = Σ g ⊙ y is linear in each of A, B, x, so the difference has only rounding error.
     */
    private static void assertCentralDifferences(double[][] p, INDArray analytic, String name,
                                                 java.util.function.DoubleSupplier loss) {
        double h = 1e-6;
        for (int i = 0; i < p.length; i++) {
            for (int j = 0; j < p[i].length; j++) {
                double keep = p[i][j];
                p[i][j] = keep + h;
                double up = loss.getAsDouble();
                p[i][j] = keep - h;
                double down = loss.getAsDouble();
                p[i][j] = keep;
                assertEquals((up - down) / (2 * h), analytic.getDouble(i, j), 1e-6, name + "(" + i + ", " + j + ")");
            }
        }
    }
}
