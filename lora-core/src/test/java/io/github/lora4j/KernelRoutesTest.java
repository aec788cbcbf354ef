package io.github.lora4j;

import static io.github.lora4j.TestData.assertBitwiseEquals;
import static io.github.lora4j.TestData.gaussian;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.ArrayList;
import java.util.List;
import java.util.function.Supplier;
import net.jqwik.api.Arbitraries;
import net.jqwik.api.Arbitrary;
import net.jqwik.api.ForAll;
import net.jqwik.api.Property;
import net.jqwik.api.Provide;
import net.jqwik.api.constraints.IntRange;
import net.jqwik.api.lifecycle.AfterTry;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;
import org.nd4j.linalg.indexing.NDArrayIndex;

/**
 * The kernel seam's two routes, direct OpenBLAS and the ND4J fallback, compute the same results: gemm over every
 * operand layout BLAS can express (and some it cannot), and whole layer operations run once per route.
 */
class KernelRoutesTest {

    @AfterEach
    @AfterTry
    void backToTheDefaultRoute() {
        Kernels.forceFallback(false);
    }

    @Test
    void theDirectRouteIsDetectedOnTheCpuBackend() {
        assertTrue(Kernels.directAvailable(), "nd4j-native is on the test class path, so the direct route must load");
        assertTrue(Kernels.direct(), "and be taken by default");
        Kernels.forceFallback(true);
        assertEquals("ND4J fallback", Kernels.route());
    }

    @Provide
    Arbitrary<DataType> types() {
        return Arbitraries.of(DataType.FLOAT, DataType.DOUBLE);
    }

    /** An {@code [rows, cols]} operand holding {@code values}, laid out in one of five ways. */
    private static INDArray laidOut(INDArray values, int layout) {
        long rows = values.rows();
        long cols = values.columns();
        switch (layout) {
            case 0:
                return values.dup('c');
            case 1:
                return values.dup('f');
            case 2: // transposed view of a c-order [cols, rows]
                return values.transpose().dup('c').transpose();
            case 3: { // row-strided block view of a wider array
                INDArray wide = Nd4j.zeros(values.dataType(), rows + 2, cols + 3);
                INDArray view = wide.get(NDArrayIndex.interval(1, rows + 1), NDArrayIndex.interval(2, cols + 2));
                view.assign(values);
                return view;
            }
            default: { // every other column: neither stride is 1, BLAS cannot take it as it is
                INDArray wide = Nd4j.zeros(values.dataType(), rows, 2 * cols);
                INDArray view = wide.get(NDArrayIndex.all(), NDArrayIndex.interval(0, 2, 2 * cols));
                view.assign(values);
                return view;
            }
        }
    }

    @Property(tries = 150)
    void gemmAgreesOnBothRoutesForEveryOperandLayout(@ForAll("types") DataType type,
                                                     @ForAll @IntRange(min = 1, max = 9) int m,
                                                     @ForAll @IntRange(min = 1, max = 9) int n,
                                                     @ForAll @IntRange(min = 1, max = 9) int k,
                                                     @ForAll boolean transA, @ForAll boolean transB,
                                                     @ForAll @IntRange(min = 0, max = 4) int layoutA,
                                                     @ForAll @IntRange(min = 0, max = 4) int layoutB,
                                                     @ForAll @IntRange(min = 0, max = 3) int layoutC,
                                                     @ForAll @IntRange(min = 0, max = 1000) int seed) {
        checkGemm(type, m, n, k, transA, transB, layoutA, layoutB, layoutC, seed);
    }

    /**
     * A product with one output row or column takes gemv on the direct route (OpenBLAS 0.3.19's sgemm is 5–8× slower
     * there): the same results as the fallback's gemm for every operand layout, both flags, beta zero or not.
     */
    @Property(tries = 150)
    void vectorProductsAgreeOnBothRoutesForEveryOperandLayout(@ForAll("types") DataType type,
                                                              @ForAll boolean oneRow,
                                                              @ForAll @IntRange(min = 1, max = 70) int length,
                                                              @ForAll @IntRange(min = 1, max = 70) int k,
                                                              @ForAll boolean transA, @ForAll boolean transB,
                                                              @ForAll @IntRange(min = 0, max = 4) int layoutA,
                                                              @ForAll @IntRange(min = 0, max = 4) int layoutB,
                                                              @ForAll @IntRange(min = 0, max = 3) int layoutC,
                                                              @ForAll @IntRange(min = 0, max = 1000) int seed) {
        checkGemm(type, oneRow ? 1 : length, oneRow ? length : 1, k, transA, transB, layoutA, layoutB, layoutC, seed);
    }

    @Test
    void aVectorProductWithBetaZeroIgnoresWhatTheOutputHeld() {
        // beta = 0 must overwrite, not scale: an uninitialised output may hold NaN, and 0·NaN is NaN.
        for (DataType type : new DataType[] {DataType.FLOAT, DataType.DOUBLE}) {
            INDArray x = gaussian(type, 1, 1, 1, 33);
            INDArray w = gaussian(type, 2, 1, 17, 33);
            INDArray row = Nd4j.valueArrayOf(new long[] {1, 17}, Double.NaN, type);
            Kernels.gemm(x, w, row, false, true, 1.0, 0.0);
            INDArray column = Nd4j.valueArrayOf(new long[] {17, 1}, Double.NaN, type);
            Kernels.gemm(w, x, column, false, true, 1.0, 0.0);
            INDArray expected = w.mmul(x.transpose());
            double tol = type == DataType.FLOAT ? 1e-4 : 1e-12;
            assertTrue(expected.reshape(1, 17).equalsWithEps(row, tol), type + " row: " + row);
            assertTrue(expected.equalsWithEps(column, tol), type + " column: " + column);
        }
    }

    /** {@code c = alpha·op(a)·op(b) + beta·c0} on both routes against a plain double reference. */
    private static void checkGemm(DataType type, int m, int n, int k, boolean transA, boolean transB, int layoutA,
                                  int layoutB, int layoutC, int seed) {
        INDArray a = gaussian(type, seed, 1, transA ? k : m, transA ? m : k);
        INDArray b = gaussian(type, seed + 1, 1, transB ? n : k, transB ? k : n);
        INDArray c0 = gaussian(type, seed + 2, 1, m, n);
        double alpha = 0.75;
        double beta = seed % 2 == 0 ? 0.0 : -1.5;
        // Reference in plain doubles: c = alpha op(a) op(b) + beta c0.
        double[][] expected = new double[m][n];
        for (int i = 0; i < m; i++) {
            for (int j = 0; j < n; j++) {
                double sum = 0;
                for (int q = 0; q < k; q++) {
                    sum += (transA ? a.getDouble(q, i) : a.getDouble(i, q)) * (transB ? b.getDouble(j, q) : b.getDouble(q, j));
                }
                expected[i][j] = alpha * sum + beta * c0.getDouble(i, j);
            }
        }
        INDArray[] results = new INDArray[2];
        for (int route = 0; route < 2; route++) {
            Kernels.forceFallback(route == 1);
            // ND4J refuses strided output views: the fallback writes a c-order copy, the direct route any row-major.
            INDArray c = route == 1 ? c0.dup('c') : laidOut(c0, layoutC == 1 ? 0 : layoutC);
            Kernels.gemm(laidOut(a, layoutA), laidOut(b, layoutB), c, transA, transB, alpha, beta);
            results[route] = c.dup('c');
        }
        double tol = type == DataType.FLOAT ? 1e-5 : 1e-12;
        for (int route = 0; route < 2; route++) {
            for (int i = 0; i < m; i++) {
                for (int j = 0; j < n; j++) {
                    double e = expected[i][j];
                    assertEquals(e, results[route].getDouble(i, j), tol * (1 + Math.abs(e)) * k,
                            (route == 0 ? "direct" : "fallback") + " c(" + i + ", " + j + ")");
                }
            }
        }
    }

    /** Everything a layer computes in one scenario: outputs, gradients, merged and restored weights. */
    private static List<INDArray> scenario(DataType type, WeightLayout layout, double dropout, boolean bias) {
        int in = 12;
        int out = 10;
        LoraConfig cfg = LoraConfig.builder().rank(3).alpha(5).dropout(dropout).seed(4).build();
        INDArray w = layout == WeightLayout.OUT_IN ? gaussian(type, 1, 0.5, out, in) : gaussian(type, 1, 0.5, in, out);
        LoraLinear l = LoraLinear.wrap(w, bias ? gaussian(type, 2, 0.5, out) : null, cfg, layout);
        l.setAdapterWeights("default", gaussian(type, 3, 0.5, 3, in), gaussian(type, 4, 0.5, out, 3));
        l.addAdapter("other", LoraConfig.builder().rank(2).alpha(3).seed(9).build());
        l.setAdapterWeights("other", gaussian(type, 5, 0.5, 2, in), gaussian(type, 6, 0.5, out, 2));
        INDArray x = gaussian(type, 7, 1, 6, in);
        INDArray g = gaussian(type, 8, 1, 6, out);
        List<INDArray> seen = new ArrayList<>();
        seen.add(l.forward(x));
        INDArray into = Nd4j.create(type, 6, out);
        seen.add(l.forwardInto(x, into).dup());
        seen.add(l.forward(x, new String[] {"default", "other", null, "other", "default", LoraLinear.BASE_MODEL}));
        l.train();
        seen.add(l.forward(x));
        seen.add(l.backward(g));
        seen.add(l.forward(x.reshape(2, 3, in)));
        assertNull(l.backward(g.reshape(2, 3, out), false), "backward(g, false) returns no dL/dx");
        LoraAdapter ad = l.adapter("default");
        seen.add(ad.gradA().dup());
        seen.add(ad.gradB().dup());
        l.zeroGrad();
        seen.add(ad.gradA().dup());
        l.eval();
        INDArray before = w.dup();
        for (MergeMode mode : MergeMode.values()) {
            l.merge(mode);
            seen.add(w.dup());
            seen.add(l.forward(x));
            l.unmerge();
            if (mode == MergeMode.EXACT) {
                assertBitwiseEquals(before, w, "W after an exact merge and unmerge");
            }
            w.assign(before);
        }
        seen.add(l.mergedWeight());
        return seen;
    }

    private static void assertRoutesAgree(Supplier<List<INDArray>> run, double tol) {
        Kernels.forceFallback(false);
        List<INDArray> direct = run.get();
        Kernels.forceFallback(true);
        List<INDArray> fallback = run.get();
        assertEquals(direct.size(), fallback.size());
        for (int i = 0; i < direct.size(); i++) {
            double err = TestData.maxRelativeError(direct.get(i), fallback.get(i), 1);
            assertTrue(err <= tol, "result " + i + " differs between the routes by " + err + " (relative)");
        }
    }

    @Property(tries = 16)
    void layerOperationsAgreeOnBothRoutes(@ForAll("types") DataType type, @ForAll boolean inOut,
                                          @ForAll boolean withDropout, @ForAll boolean bias) {
        WeightLayout layout = inOut ? WeightLayout.IN_OUT : WeightLayout.OUT_IN;
        assertRoutesAgree(() -> scenario(type, layout, withDropout ? 0.3 : 0.0, bias),
                type == DataType.FLOAT ? 1e-5 : 1e-12);
    }

    @Test
    void exactMergeOfALargeWeightAgreesOnBothRoutesAndRestoresWBitwise() {
        // Several Δ blocks (ExactMerge.BLOCK_ELEMENTS) and a threaded element pass.
        assertRoutesAgree(() -> {
            LoraLinear l = TestData.trainedLayer(DataType.FLOAT, 31, 700, 900, LoraConfig.builder().rank(8).build(), true);
            INDArray before = l.weight().dup();
            l.merge();
            INDArray merged = l.weight().dup();
            l.unmerge();
            assertBitwiseEquals(before, l.weight(), "W after exact merge and unmerge");
            return List.of(merged);
        }, 1e-6);
    }
}
