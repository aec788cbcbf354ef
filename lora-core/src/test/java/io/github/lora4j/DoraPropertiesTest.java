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
import net.jqwik.api.constraints.DoubleRange;
import net.jqwik.api.constraints.IntRange;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;

/** The algebraic laws of a DoRA layer, over random shapes, ranks, layouts, seeds and both floating types. */
class DoraPropertiesTest {

    @Provide
    Arbitrary<DataType> types() {
        return Arbitraries.of(DataType.FLOAT, DataType.DOUBLE);
    }

    @Provide
    Arbitrary<WeightLayout> layouts() {
        return Arbitraries.of(WeightLayout.values());
    }

    /** A DoRA layer over a random W and bias; with {@code trained}, random A, B and a magnitude spread by {@code spread}. */
    static LoraLinear layer(DataType type, WeightLayout layout, long seed, int in, int out, int rank, boolean trained,
                            double spread) {
        int r = rank;   // also above min(in, out), as PEFT allows
        LoraConfig cfg = LoraConfig.builder().rank(r).alpha(1 + Math.floorMod(seed, 16)).rsLora(seed % 3 == 0)
                .seed(seed).useDora(true).build();
        INDArray w = layout == WeightLayout.OUT_IN ? gaussian(type, seed, 0.5, out, in) : gaussian(type, seed, 0.5, in, out);
        LoraLinear l = LoraLinear.wrap(w, gaussian(type, seed + 1, 0.5, out), cfg, layout);
        if (trained) {
            INDArray m = l.adapter("default").magnitude().dup();
            INDArray noise = gaussian(DataType.DOUBLE, seed + 4, spread, out).castTo(type);
            l.setAdapterWeights("default", gaussian(type, seed + 2, 0.5, r, in), gaussian(type, seed + 3, 0.2, out, r),
                    m.mul(noise.add(1.0)));
        }
        return l;
    }

    private static double tolerance(DataType type) {
        return type == DataType.DOUBLE ? 1e-12 : 2e-5;
    }

    @Property(tries = 60)
    void freshDoraAdapterGivesTheBaseOutput(@ForAll("types") DataType type, @ForAll("layouts") WeightLayout layout,
                                            @ForAll @IntRange(min = 1, max = 40) int in,
                                            @ForAll @IntRange(min = 1, max = 40) int out,
                                            @ForAll @IntRange(min = 1, max = 16) int rank,
                                            @ForAll @IntRange(min = 1, max = 9) int n, @ForAll long seed) {
        LoraLinear l = layer(type, layout, seed, in, out, rank, false, 0);
        INDArray x = gaussian(type, seed + 9, 1.0, n, in);
        INDArray dora = l.forward(x);
        l.disableAdapters();
        INDArray base = l.forward(x);
        double err = TestData.normwiseRelativeError(dora, base);
        assertTrue(err <= tolerance(type), "B = 0, m = ‖W‖_row: DoRA vs base, normwise relative error " + err);
    }

    @Property(tries = 40)
    void magnitudeEqualToTheNormsGivesPlainLora(@ForAll("types") DataType type, @ForAll("layouts") WeightLayout layout,
                                                @ForAll @IntRange(min = 1, max = 30) int in,
                                                @ForAll @IntRange(min = 1, max = 30) int out,
                                                @ForAll @IntRange(min = 1, max = 8) int rank,
                                                @ForAll @IntRange(min = 1, max = 6) int n, @ForAll long seed) {
        LoraLinear l = layer(type, layout, seed, in, out, rank, true, 0.3);
        LoraAdapter a = l.adapter("default");
        INDArray norms = Nd4j.createFromArray(a.dora().norms(l.weight(), layout, a)).castTo(type);
        l.setAdapterWeights("default", a.a().dup(), a.b().dup(), norms);
        LoraLinear lora = LoraLinear.wrap(l.weight(), l.bias(), a.config().toBuilder().useDora(false).build(), layout);
        lora.setAdapterWeights("default", a.a().dup(), a.b().dup());
        INDArray x = gaussian(type, seed + 9, 1.0, n, in);
        double err = TestData.normwiseRelativeError(l.forward(x), lora.forward(x));
        assertTrue(err <= tolerance(type), "m = ‖W + sBA‖: DoRA vs LoRA, normwise relative error " + err);
    }

    @Property(tries = 40)
    void scalingTheMagnitudeScalesTheOutputWithoutBias(@ForAll("layouts") WeightLayout layout,
                                                       @ForAll @IntRange(min = 1, max = 20) int in,
                                                       @ForAll @IntRange(min = 1, max = 20) int out,
                                                       @ForAll @IntRange(min = 1, max = 5) int n,
                                                       @ForAll @DoubleRange(min = -4, max = 4) double k,
                                                       @ForAll long seed) {
        LoraLinear l = layer(DataType.DOUBLE, layout, seed, in, out, 4, true, 0.3);
        LoraAdapter a = l.adapter("default");
        INDArray x = gaussian(DataType.DOUBLE, seed + 9, 1.0, n, in);
        INDArray y1 = l.forward(x).subRowVector(l.bias());
        l.setAdapterWeights("default", a.a().dup(), a.b().dup(), a.magnitude().mul(k));
        INDArray yk = l.forward(x).subRowVector(l.bias());
        double err = TestData.normwiseRelativeError(yk, y1.mul(k));
        assertTrue(err <= 1e-12 || y1.amaxNumber().doubleValue() * Math.abs(k) < 1e-300, "y(k·m) − b = k·(y(m) − b): " + err);
    }

    @Property(tries = 60)
    void mergeThenUnmergeRestoresWeightBitwise(@ForAll("types") DataType type, @ForAll("layouts") WeightLayout layout,
                                               @ForAll @IntRange(min = 1, max = 70) int in,
                                               @ForAll @IntRange(min = 1, max = 70) int out,
                                               @ForAll @IntRange(min = 1, max = 12) int rank,
                                               @ForAll @DoubleRange(min = 0, max = 2) double spread,
                                               @ForAll @IntRange(min = 1, max = 3) int cycles, @ForAll long seed) {
        LoraLinear l = layer(type, layout, seed, in, out, rank, true, spread);
        INDArray before = l.weight().dup();
        for (int i = 0; i < cycles; i++) {
            INDArray expected = l.mergedWeight();
            l.merge();
            assertBitwiseEquals(expected, l.weight(), "merge writes mergedWeight()");
            assertEquals(MergeMode.EXACT, l.mergeMode());
            l.unmerge();
            assertBitwiseEquals(before, l.weight(), "W after " + (i + 1) + " merge/unmerge cycles");
        }
    }

    @Property(tries = 40)
    void fastMergeOfDoraIsExact(@ForAll("types") DataType type, @ForAll @IntRange(min = 1, max = 30) int in,
                                @ForAll @IntRange(min = 1, max = 30) int out, @ForAll long seed) {
        LoraLinear l = layer(type, WeightLayout.OUT_IN, seed, in, out, 4, true, 0.5);
        INDArray before = l.weight().dup();
        l.merge(MergeMode.FAST);
        assertEquals(MergeMode.EXACT, l.mergeMode(), "DoRA merges the exact way");
        l.unmerge();
        assertBitwiseEquals(before, l.weight(), "W after a FAST-requested DoRA merge and unmerge");
    }

    @Property(tries = 60)
    void mergedForwardEqualsUnmergedForward(@ForAll("types") DataType type, @ForAll("layouts") WeightLayout layout,
                                            @ForAll @IntRange(min = 1, max = 40) int in,
                                            @ForAll @IntRange(min = 1, max = 40) int out,
                                            @ForAll @IntRange(min = 1, max = 8) int rank,
                                            @ForAll @IntRange(min = 1, max = 6) int n, @ForAll long seed) {
        LoraLinear l = layer(type, layout, seed, in, out, rank, true, 0.4);
        INDArray x = gaussian(type, seed + 9, 1.0, n, in);
        INDArray unmerged = l.forward(x);
        l.merge();
        INDArray merged = l.forward(x);
        double err = TestData.normwiseRelativeError(merged, unmerged);
        assertTrue(err <= (type == DataType.DOUBLE ? 1e-12 : 1e-4), "merged vs unmerged: " + err);
    }

    @Property(tries = 40)
    void cachedNormsFollowEveryChange(@ForAll("types") DataType type, @ForAll("layouts") WeightLayout layout,
                                      @ForAll @IntRange(min = 1, max = 20) int in,
                                      @ForAll @IntRange(min = 1, max = 20) int out,
                                      @ForAll @IntRange(min = 0, max = 2) int change, @ForAll long seed) {
        LoraLinear l = layer(type, layout, seed, in, out, 3, true, 0.3);
        INDArray x = gaussian(type, seed + 9, 1.0, 4, in);
        l.forward(x);                                     // computes and caches the norms
        INDArray a2 = gaussian(type, seed + 20, 0.5, l.adapter("default").rank(), in);
        switch (change) {
            case 0 -> l.updateTrainable(ad -> ad.b().addi(0.25));
            case 1 -> l.setAdapterWeights("default", a2, l.adapter("default").b().dup());
            default -> l.setAdapterScale("default", 1.75);
        }
        LoraAdapter a = l.adapter("default");
        LoraLinear fresh = LoraLinear.wrap(l.weight(), l.bias(), a.config(), layout);
        fresh.setAdapterWeights("default", a.a().dup(), a.b().dup(), a.magnitude().dup());
        fresh.setAdapterScale("default", a.scale());
        assertBitwiseEquals(fresh.forward(x), l.forward(x), "forward after change " + change + " vs a fresh layer");
    }

    @Property(tries = 30)
    void forwardIntoEqualsForward(@ForAll("types") DataType type, @ForAll("layouts") WeightLayout layout,
                                  @ForAll @IntRange(min = 1, max = 30) int in, @ForAll @IntRange(min = 1, max = 30) int out,
                                  @ForAll @IntRange(min = 1, max = 5) int n, @ForAll long seed) {
        LoraLinear l = layer(type, layout, seed, in, out, 4, true, 0.3);
        INDArray x = gaussian(type, seed + 9, 1.0, n, in);
        INDArray into = Nd4j.createUninitialized(type, n, out);
        assertBitwiseEquals(l.forward(x), l.forwardInto(x, into), "forwardInto vs forward");
    }

    @Property(tries = 20)
    void foldedInputsGiveTheRowsOfTheFlatOnes(@ForAll("types") DataType type, @ForAll @IntRange(min = 1, max = 12) int in,
                                              @ForAll @IntRange(min = 1, max = 12) int out, @ForAll long seed) {
        LoraLinear l = layer(type, WeightLayout.OUT_IN, seed, in, out, 3, true, 0.3);
        INDArray x3 = gaussian(type, seed + 9, 1.0, 2, 3, in);
        INDArray y3 = l.forward(x3);
        assertBitwiseEquals(l.forward(x3.reshape('c', 6, in)).reshape('c', 2, 3, out), y3, "[2, 3, in] vs [6, in]");
    }

    @Property(tries = 30)
    void trainingForwardWithoutDropoutEqualsEvalForward(@ForAll("types") DataType type,
                                                        @ForAll("layouts") WeightLayout layout,
                                                        @ForAll @IntRange(min = 1, max = 20) int in,
                                                        @ForAll @IntRange(min = 1, max = 20) int out, @ForAll long seed) {
        LoraLinear l = layer(type, layout, seed, in, out, 3, true, 0.3);
        INDArray x = gaussian(type, seed + 9, 1.0, 3, in);
        INDArray eval = l.forward(x);
        assertBitwiseEquals(eval, l.train().forward(x), "train vs eval forward, dropout 0");
    }

    @Property(tries = 30)
    void normsStayAccurateWhereTheUpdateAlmostCancelsW(@ForAll("layouts") WeightLayout layout,
                                                       @ForAll @IntRange(min = 2, max = 30) int in,
                                                       @ForAll @IntRange(min = 1, max = 20) int out,
                                                       @ForAll @IntRange(min = 3, max = 9) int digits,
                                                       @ForAll long seed) {
        double left = Math.pow(10, -digits);
        // W = −s·B·A + left·N: every row of W + s·B·A is left·N_j, far below ‖W_j‖, where the expansion
        // ‖W‖² + 2s·(…) + s²‖BA‖² cancels. The norms must still be those of the rows themselves.
        int r = Math.min(3, Math.min(in, out));
        double s = 1.5;
        INDArray a = gaussian(DataType.DOUBLE, seed, 1, r, in);
        INDArray b = gaussian(DataType.DOUBLE, seed + 1, 1, out, r);
        INDArray rest = gaussian(DataType.DOUBLE, seed + 2, left, out, in);
        INDArray wOutIn = b.mmul(a).muli(-s).addi(rest);
        INDArray w = layout == WeightLayout.OUT_IN ? wOutIn : wOutIn.transpose().dup('c');
        INDArray v = wOutIn.add(b.mmul(a).muli(s));          // W + s·B·A, [out, in], formed directly
        double[] norms = Dora.computeNorms(w, layout, a, b, s, Kernels.rowSquares(w, layout == WeightLayout.IN_OUT));
        for (int j = 0; j < out; j++) {
            // The row's elements carry the rounding of W's own ±s·B·A (an ulp of ‖W_j‖), so that is the accuracy to
            // ask for; the unguarded expansion misses by about sqrt(ulp)·‖W_j‖.
            double direct = v.getRow(j).norm2Number().doubleValue();
            double scale = wOutIn.getRow(j).norm2Number().doubleValue();
            assertEquals(direct, norms[j], 1e-13 * scale, "row " + j + " (cancelling to " + left + " of W)");
        }
    }

    @Property(tries = 20)
    void mergeAndUnloadKeepsTheDoraOutputInAPlainLayer(@ForAll("types") DataType type,
                                                       @ForAll("layouts") WeightLayout layout,
                                                       @ForAll @IntRange(min = 1, max = 20) int in,
                                                       @ForAll @IntRange(min = 1, max = 20) int out, @ForAll long seed) {
        LoraLinear l = layer(type, layout, seed, in, out, 3, true, 0.3);
        INDArray x = gaussian(type, seed + 9, 1.0, 3, in);
        INDArray expectedW = l.mergedWeight();
        INDArray dora = l.forward(x);
        l.mergeAndUnload();
        assertEquals(java.util.List.of(), l.adapterNames(), "the adapters are gone");
        assertBitwiseEquals(expectedW, l.weight(), "W keeps c ⊙ (W + s·B·A)");
        double err = TestData.normwiseRelativeError(l.forward(x), dora);
        assertTrue(err <= (type == DataType.DOUBLE ? 1e-12 : 1e-4), "plain layer vs DoRA output: " + err);
    }
}
