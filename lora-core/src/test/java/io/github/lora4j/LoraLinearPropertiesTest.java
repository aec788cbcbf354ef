package io.github.lora4j;

import static io.github.lora4j.TestData.assertBitwiseEquals;
import static io.github.lora4j.TestData.gaussian;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import net.jqwik.api.Arbitraries;
import net.jqwik.api.Arbitrary;
import net.jqwik.api.ForAll;
import net.jqwik.api.Property;
import net.jqwik.api.Provide;
import net.jqwik.api.constraints.IntRange;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;

/** The algebraic laws of a LoRA layer, over random shapes, ranks, seeds and both floating types. */
class LoraLinearPropertiesTest {

    @Provide
    Arbitrary<DataType> types() {
        return Arbitraries.of(DataType.FLOAT, DataType.DOUBLE);
    }

    @Provide
    Arbitrary<WeightLayout> layouts() {
        return Arbitraries.of(WeightLayout.values());
    }

    private static LoraLinear layer(DataType type, long seed, int in, int out, int rank, boolean rsLora,
                                    WeightLayout layout, boolean randomAdapter) {
        int r = rank;   // also above min(in, out), as PEFT allows
        LoraConfig cfg = LoraConfig.builder().rank(r).alpha(1 + Math.floorMod(seed, 16)).rsLora(rsLora).seed(seed).build();
        INDArray w = layout == WeightLayout.OUT_IN ? gaussian(type, seed, 0.5, out, in) : gaussian(type, seed, 0.5, in, out);
        LoraLinear l = LoraLinear.wrap(w, gaussian(type, seed + 1, 0.5, out), cfg, layout);
        if (randomAdapter) {
            l.setAdapterWeights("default", gaussian(type, seed + 2, 0.5, r, in), gaussian(type, seed + 3, 0.5, out, r));
        }
        return l;
    }

    /** The base layer computed the plain way: x W^T + b (or x W + b). */
    private static INDArray baseOutput(LoraLinear l, INDArray x) {
        INDArray w = l.layout() == WeightLayout.OUT_IN ? l.weight().transpose() : l.weight();
        return x.mmul(w).addiRowVector(l.bias());
    }

    @Property(tries = 60)
    void freshAdapterChangesNothingBitwise(@ForAll("types") DataType type, @ForAll("layouts") WeightLayout layout,
                                           @ForAll @IntRange(min = 1, max = 40) int in, @ForAll @IntRange(min = 1, max = 40) int out,
                                           @ForAll @IntRange(min = 1, max = 16) int rank, @ForAll @IntRange(min = 1, max = 9) int n,
                                           @ForAll long seed) {
        LoraLinear l = layer(type, seed, in, out, rank, false, layout, false);
        INDArray x = gaussian(type, seed + 9, 1.0, n, in);
        INDArray withAdapter = l.forward(x);
        l.disableAdapters();
        assertBitwiseEquals(l.forward(x), withAdapter, "fresh adapter vs base");
    }

    @Property(tries = 60)
    void disabledAdaptersGiveTheBaseOutputExactly(@ForAll("types") DataType type, @ForAll("layouts") WeightLayout layout,
                                                  @ForAll @IntRange(min = 1, max = 40) int in, @ForAll @IntRange(min = 1, max = 40) int out,
                                                  @ForAll @IntRange(min = 1, max = 9) int n, @ForAll long seed) {
        LoraLinear trained = layer(type, seed, in, out, 4, false, layout, true);
        LoraLinear plain = LoraLinear.base(trained.weight(), trained.bias(), layout);
        INDArray x = gaussian(type, seed + 9, 1.0, n, in);
        trained.disableAdapters();
        assertBitwiseEquals(plain.forward(x), trained.forward(x), "disabled vs base-only layer");
        // and agrees with the formula computed another way
        double err = TestData.maxRelativeError(trained.forward(x), baseOutput(trained, x), 1.0);
        assertTrue(err < (type == DataType.FLOAT ? 1e-5 : 1e-12), "disabled vs x W^T + b: " + err);
    }

    @Property(tries = 60)
    void mergedAndUnmergedOutputsAgree(@ForAll("types") DataType type, @ForAll("layouts") WeightLayout layout,
                                       @ForAll @IntRange(min = 1, max = 48) int in, @ForAll @IntRange(min = 1, max = 48) int out,
                                       @ForAll @IntRange(min = 1, max = 16) int rank, @ForAll boolean rsLora,
                                       @ForAll @IntRange(min = 1, max = 9) int n, @ForAll boolean fast, @ForAll long seed) {
        LoraLinear l = layer(type, seed, in, out, rank, rsLora, layout, true);
        INDArray x = gaussian(type, seed + 9, 1.0, n, in);
        INDArray unmerged = l.forward(x);
        l.merge(fast ? MergeMode.FAST : MergeMode.EXACT);
        INDArray merged = l.forward(x);
        double err = TestData.normwiseRelativeError(merged, unmerged);
        assertTrue(err <= (type == DataType.FLOAT ? 1e-5 : 1e-12), "merged vs unmerged, normwise rel. error " + err);
    }

    @Property(tries = 60)
    void mergeThenUnmergeRestoresWeightBitwise(@ForAll("types") DataType type, @ForAll("layouts") WeightLayout layout,
                                               @ForAll @IntRange(min = 1, max = 64) int in, @ForAll @IntRange(min = 1, max = 64) int out,
                                               @ForAll @IntRange(min = 1, max = 16) int rank,
                                               @ForAll @IntRange(min = 1, max = 5) int cycles, @ForAll long seed) {
        LoraLinear l = layer(type, seed, in, out, rank, false, layout, true);
        INDArray original = l.weight().dup();
        for (int i = 0; i < cycles; i++) {
            l.merge();
            l.unmerge();
        }
        assertBitwiseEquals(original, l.weight(), "W after " + cycles + " exact merge/unmerge cycles");
    }

    @Property(tries = 60)
    void fastMergeThenUnmergeStaysWithinItsRoundingBound(@ForAll("layouts") WeightLayout layout,
                                                         @ForAll @IntRange(min = 1, max = 64) int in, @ForAll @IntRange(min = 1, max = 64) int out,
                                                         @ForAll @IntRange(min = 1, max = 16) int rank, @ForAll long seed) {
        LoraLinear l = layer(DataType.FLOAT, seed, in, out, rank, false, layout, true);
        INDArray original = l.weight().dup();
        LoraAdapter ad = l.adapter(LoraLinear.DEFAULT_ADAPTER);
        double s = ad.scaling();
        // M_ij = |W_ij| + s·Σ_k |B_ik|·|A_kj| bounds every partial sum either gemm can form. A BLAS may accumulate
        // the r products into W itself (OpenBLAS's small-matrix kernels do), so each pass rounds up to r + 1 times,
        // each by at most half an ulp of M: merge then unmerge moves W by at most (r + 1)·ulp(M).
        double[][] bound = new double[out][in];
        double[][] a = ad.a().castTo(DataType.DOUBLE).toDoubleMatrix();
        double[][] b = ad.b().castTo(DataType.DOUBLE).toDoubleMatrix();
        double[][] w0 = original.castTo(DataType.DOUBLE).toDoubleMatrix();
        for (int i = 0; i < out; i++) {
            for (int j = 0; j < in; j++) {
                double m = Math.abs(layout == WeightLayout.OUT_IN ? w0[i][j] : w0[j][i]);
                for (int k = 0; k < ad.rank(); k++) {
                    m += s * Math.abs(b[i][k]) * Math.abs(a[k][j]);
                }
                bound[i][j] = (ad.rank() + 1) * Math.ulp((float) m);
            }
        }
        l.merge(MergeMode.FAST);
        assertEquals(MergeMode.FAST, l.mergeMode());
        l.unmerge();
        for (int i = 0; i < out; i++) {
            for (int j = 0; j < in; j++) {
                long[] at = layout == WeightLayout.OUT_IN ? new long[] {i, j} : new long[] {j, i};
                float before = original.getFloat(at);
                float after = l.weight().getFloat(at);
                assertTrue(Math.abs(after - before) <= bound[i][j], "W[" + i + ", " + j + "] (out, in): " + before
                        + " became " + after + " (bound " + bound[i][j] + ")");
            }
        }
    }

    @Property(tries = 40)
    void trainingStepsNeverTouchTheWeightOrBias(@ForAll("types") DataType type, @ForAll("layouts") WeightLayout layout,
                                                @ForAll @IntRange(min = 1, max = 32) int in, @ForAll @IntRange(min = 1, max = 32) int out,
                                                @ForAll @IntRange(min = 1, max = 6) int steps, @ForAll long seed) {
        LoraLinear l = layer(type, seed, in, out, 4, false, layout, true);
        INDArray w = l.weight().dup();
        INDArray b = l.bias().dup();
        l.train();
        for (int i = 0; i < steps; i++) {
            INDArray x = gaussian(type, seed + i, 1.0, 5, in);
            l.forward(x);
            l.backward(gaussian(type, seed + 100 + i, 1.0, 5, out));
            l.updateTrainable(a -> {
                a.a().subi(a.gradA().mul(0.01));
                a.b().subi(a.gradB().mul(0.01));
            });
            l.zeroGrad();
        }
        assertBitwiseEquals(w, l.weight(), "W after " + steps + " training steps");
        assertBitwiseEquals(b, l.bias(), "bias after " + steps + " training steps");
    }

    @Property(tries = 30)
    void leadingDimensionsFoldIntoRows(@ForAll("types") DataType type, @ForAll @IntRange(min = 1, max = 4) int d0,
                                       @ForAll @IntRange(min = 1, max = 4) int d1, @ForAll long seed) {
        LoraLinear l = layer(type, seed, 6, 5, 3, false, WeightLayout.OUT_IN, true);
        INDArray x3 = gaussian(type, seed + 9, 1.0, d0, d1, 6);
        INDArray y3 = l.forward(x3);
        assertEquals(java.util.List.of((long) d0, (long) d1, 5L), java.util.Arrays.stream(y3.shape()).boxed().toList());
        assertBitwiseEquals(l.forward(x3.reshape('c', (long) d0 * d1, 6)), y3.reshape('c', (long) d0 * d1, 5), "3-D vs folded");
        INDArray v = gaussian(type, seed + 10, 1.0, 6);
        assertBitwiseEquals(l.forward(v.reshape(1, 6)).reshape(5), l.forward(v), "vector input");
    }

    @Property(tries = 30)
    void mergedWeightEqualsWPlusScaledBA(@ForAll("types") DataType type, @ForAll @IntRange(min = 1, max = 24) int in,
                                         @ForAll @IntRange(min = 1, max = 24) int out, @ForAll long seed) {
        LoraLinear l = layer(type, seed, in, out, 4, false, WeightLayout.OUT_IN, true);
        INDArray before = l.weight().dup();
        LoraAdapter a = l.adapter("default");
        INDArray expected = l.weight().add(a.b().mmul(a.a()).muli(a.scaling()));
        assertTrue(TestData.maxRelativeError(l.mergedWeight(), expected, 1.0) < (type == DataType.FLOAT ? 1e-5 : 1e-12));
        assertBitwiseEquals(before, l.weight(), "W after mergedWeight()");
        l.merge();
        assertBitwiseEquals(l.weight(), l.mergedWeight(), "mergedWeight() of a merged layer is W");
    }

    @Property(tries = 20)
    void exactUnmergeSurvivesAWeightViewWithOffsetAndStrides(@ForAll @IntRange(min = 2, max = 24) int in,
                                                             @ForAll @IntRange(min = 2, max = 24) int out, @ForAll long seed) {
        // W as a strided view into a larger parameter buffer, as DL4J hands them out.
        INDArray big = gaussian(DataType.FLOAT, seed, 0.5, out + 3, 2 * in + 1);
        INDArray w = big.get(org.nd4j.linalg.indexing.NDArrayIndex.interval(2, 2 + out),
                org.nd4j.linalg.indexing.NDArrayIndex.interval(1, 2, 1 + 2 * in));
        INDArray bigBefore = big.dup();
        LoraLinear l = LoraLinear.wrap(w, null, LoraConfig.builder().rank(2).build());
        l.setAdapterWeights("default", gaussian(DataType.FLOAT, seed + 1, 0.5, 2, in), gaussian(DataType.FLOAT, seed + 2, 0.5, out, 2));
        INDArray expected = l.mergedWeight();
        l.merge();
        double err = TestData.maxRelativeError(w, expected, 1.0);
        assertTrue(err < 1e-6, "merged view vs mergedWeight(): " + err);
        l.unmerge();
        assertBitwiseEquals(bigBefore, big, "the whole parameter buffer after merge/unmerge of a view");
    }
}
