package io.github.lora4j;

import static io.github.lora4j.TestData.assertBitwiseEquals;
import static io.github.lora4j.TestData.gaussian;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import net.jqwik.api.Arbitraries;
import net.jqwik.api.Arbitrary;
import net.jqwik.api.ForAll;
import net.jqwik.api.Property;
import net.jqwik.api.Provide;
import net.jqwik.api.constraints.IntRange;
import org.junit.jupiter.api.Test;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;

/**
 * Ranks above {@code min(in, out)}, which PEFT accepts (its regression case {@code lora_emb_conv1d} has r = 8 on a
 * 5 → 1 layer): the laws of a LoRA layer hold there too. Every property draws {@code r = min(in, out) + extra}.
 */
class RanksAboveMinTest {

    @Provide
    Arbitrary<DataType> types() {
        return Arbitraries.of(DataType.FLOAT, DataType.DOUBLE);
    }

    /** A layer whose rank is {@code extra} above {@code min(in, out)}, with random A and B. */
    private static LoraLinear wide(DataType type, long seed, int in, int out, int extra, boolean inOut) {
        int r = Math.min(in, out) + extra;
        LoraConfig cfg = LoraConfig.builder().rank(r).alpha(1 + Math.floorMod(seed, 9)).seed(seed).build();
        WeightLayout layout = inOut ? WeightLayout.IN_OUT : WeightLayout.OUT_IN;
        INDArray w = inOut ? gaussian(type, seed, 0.5, in, out) : gaussian(type, seed, 0.5, out, in);
        LoraLinear l = LoraLinear.wrap(w, gaussian(type, seed + 1, 0.5, out), cfg, layout);
        l.setAdapterWeights("default", gaussian(type, seed + 2, 0.5, r, in), gaussian(type, seed + 3, 0.5, out, r));
        assertEquals(r, l.adapter("default").rank());
        return l;
    }

    @Property(tries = 50)
    void forwardEqualsTheDenseUpdatedWeight(@ForAll("types") DataType type, @ForAll @IntRange(min = 1, max = 12) int in,
                                            @ForAll @IntRange(min = 1, max = 12) int out,
                                            @ForAll @IntRange(min = 1, max = 8) int extra, @ForAll boolean inOut,
                                            @ForAll @IntRange(min = 1, max = 5) int n, @ForAll long seed) {
        LoraLinear l = wide(type, seed, in, out, extra, inOut);
        INDArray x = gaussian(type, seed + 4, 1.0, n, in);
        LoraAdapter a = l.adapter("default");
        // y = x (W + s·B·A)^T + b, all in double, W read as [out, in] whatever the layout
        INDArray w = (inOut ? l.weight().transpose() : l.weight()).castTo(DataType.DOUBLE);
        INDArray dense = w.add(a.b().castTo(DataType.DOUBLE).mmul(a.a().castTo(DataType.DOUBLE)).muli(a.scaling()));
        INDArray expected = x.castTo(DataType.DOUBLE).mmul(dense.transpose()).addiRowVector(l.bias().castTo(DataType.DOUBLE));
        double err = TestData.normwiseRelativeError(l.forward(x).castTo(DataType.DOUBLE), expected);
        assertTrue(err < (type == DataType.FLOAT ? 1e-5 : 1e-13), "forward vs x (W + s·B·A)^T + b: " + err);
    }

    @Property(tries = 50)
    void mergeThenUnmergeRestoresWeightBitwiseAndMergedAgrees(@ForAll("types") DataType type,
                                                              @ForAll @IntRange(min = 1, max = 16) int in,
                                                              @ForAll @IntRange(min = 1, max = 16) int out,
                                                              @ForAll @IntRange(min = 1, max = 8) int extra,
                                                              @ForAll boolean inOut, @ForAll long seed) {
        LoraLinear l = wide(type, seed, in, out, extra, inOut);
        INDArray original = l.weight().dup();
        INDArray x = gaussian(type, seed + 4, 1.0, 3, in);
        INDArray unmerged = l.forward(x);
        l.merge();
        double err = TestData.normwiseRelativeError(l.forward(x), unmerged);
        assertTrue(err <= (type == DataType.FLOAT ? 1e-5 : 1e-12), "merged vs unmerged: " + err);
        l.unmerge();
        assertBitwiseEquals(original, l.weight(), "W after an exact merge/unmerge at r = min(in, out) + " + extra);
    }

    @Property(tries = 20)
    void gradientsMatchCentralDifferences(@ForAll @IntRange(min = 1, max = 5) int in, @ForAll @IntRange(min = 1, max = 5) int out,
                                          @ForAll @IntRange(min = 1, max = 4) int extra, @ForAll boolean inOut,
                                          @ForAll long seed) {
        LoraLinear l = wide(DataType.DOUBLE, seed, in, out, extra, inOut);
        GradientCheckTest.checkLayer(l, gaussian(DataType.DOUBLE, seed + 4, 1, 2, in), gaussian(DataType.DOUBLE, seed + 5, 1, 2, out));
    }

    @Property(tries = 30)
    void embeddingLookupEqualsTheUpdatedTableAndMergeIsExact(@ForAll("types") DataType type,
                                                             @ForAll @IntRange(min = 1, max = 12) int num,
                                                             @ForAll @IntRange(min = 1, max = 6) int dim,
                                                             @ForAll @IntRange(min = 1, max = 8) int extra, @ForAll long seed) {
        int r = Math.min(num, dim) + extra;
        LoraEmbedding e = LoraEmbedding.wrap(gaussian(type, seed, 1, num, dim), LoraConfig.builder().rank(r).alpha(3).build());
        e.setAdapterWeights("default", gaussian(type, seed + 1, 1, r, num), gaussian(type, seed + 2, 1, dim, r));
        LoraAdapter a = e.adapter("default");
        // T + s·(B A)^T, row i for token i
        INDArray table = e.table().castTo(DataType.DOUBLE).add(
                a.b().castTo(DataType.DOUBLE).mmul(a.a().castTo(DataType.DOUBLE)).transpose().mul(a.scaling()));
        long[] ids = {0, num - 1, num / 2, 0};
        INDArray y = e.forward(ids).castTo(DataType.DOUBLE);
        for (int i = 0; i < ids.length; i++) {
            double err = TestData.normwiseRelativeError(y.getRow(i), table.getRow(ids[i]));
            assertTrue(err < (type == DataType.FLOAT ? 1e-5 : 1e-13), "token " + ids[i] + ": " + err);
        }
        INDArray before = e.table().dup();
        e.merge();
        e.unmerge();
        assertBitwiseEquals(before, e.table(), "table after an exact merge/unmerge");
    }

    @Test
    void ranksBelowOneAreStillRefusedByName() {
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> LoraConfig.builder().rank(0));
        assertEquals("rank must be >= 1, got 0", e.getMessage());
        e = assertThrows(IllegalArgumentException.class, () -> LoraConfig.builder().rank(-3));
        assertEquals("rank must be >= 1, got -3", e.getMessage());
    }

    @Test
    void savingsAreNegativeAboveTheBreakEvenRank() {
        // 5 -> 1 at r = 8 (the lora_emb_conv1d case): A [8, 5] and B [1, 8] hold 48 values for a 5-value weight.
        // docs/peft-parity.md: ranks
        INDArray w = Nd4j.rand(DataType.FLOAT, 1, 5);                    // W [out, in] = [1, 5]
        LoraLinear layer = LoraLinear.wrap(w, null, LoraConfig.builder().rank(8).alpha(8).build());  // r = 8 > 1
        long trained = layer.trainableParameterCount();                  // 8·(5 + 1) = 48, for a W of 5 values
        double savings = LoraMath.savings(1, 5, 8);                      // 1 − 48/5 = −8.6: negative, honestly
        // end
        assertEquals(48, trained);
        assertEquals(48, LoraMath.loraParameters(1, 5, 8));
        assertEquals(1 - 48.0 / 5, savings, 1e-15);
        assertEquals(0, LoraMath.maxRankForSavings(1, 5, 0.0), "no rank of a 5 -> 1 layer saves anything");
    }
}
