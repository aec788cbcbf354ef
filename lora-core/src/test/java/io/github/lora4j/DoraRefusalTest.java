package io.github.lora4j;

import static io.github.lora4j.TestData.assertBitwiseEquals;
import static io.github.lora4j.TestData.gaussian;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.List;
import org.junit.jupiter.api.Test;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;

/** DoRA's refusals, each naming what was expected and what came, and leaving the layer as it was; and its counts. */
class DoraRefusalTest {

    private static final LoraConfig DORA = LoraConfig.builder().rank(2).alpha(2).useDora(true).build();

    private static LoraLinear trained(DataType type, long seed) {
        LoraLinear l = LoraLinear.wrap(gaussian(type, seed, 0.5, 6, 5), gaussian(type, seed + 1, 0.5, 6), DORA);
        l.setAdapterWeights("default", gaussian(type, seed + 2, 0.5, 2, 5), gaussian(type, seed + 3, 0.5, 6, 2));
        return l;
    }

    private static void assertMessage(Throwable e, String... parts) {
        for (String p : parts) {
            assertTrue(e.getMessage().contains(p), "message should contain '" + p + "': " + e.getMessage());
        }
    }

    @Test
    void zeroRowOfWeightIsRefusedWhenTheAdapterIsAdded() {
        INDArray w = gaussian(DataType.DOUBLE, 1, 1, 4, 3);
        w.getRow(2).assign(0);
        LoraLinear l = LoraLinear.base(w, null, WeightLayout.OUT_IN);
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> l.addAdapter("d", DORA));
        assertMessage(e, "row 2", "non-zero norm", "plain LoRA");
        assertEquals(List.of(), l.adapterNames(), "nothing added");
        l.addAdapter("lora", LoraConfig.builder().rank(2).build());   // plain LoRA is fine on that W
    }

    @Test
    void aRowWhoseUpdateCancelsWIsRefusedByForwardAndMerge() {
        // Row 0 of W + s·B·A is [1 − 1, 0] = [0, 0] exactly (s = 1); row 1 is [0, 2].
        INDArray w = Nd4j.createFromArray(new double[][] {{1, 0}, {0, 2}});
        LoraLinear l = LoraLinear.wrap(w, null, LoraConfig.builder().rank(1).alpha(1).useDora(true).build());
        l.setAdapterWeights("default", Nd4j.createFromArray(new double[][] {{1, 0}}),
                Nd4j.createFromArray(new double[][] {{-1}, {0}}));
        INDArray x = Nd4j.createFromArray(new double[][] {{1, 1}});
        IllegalStateException e = assertThrows(IllegalStateException.class, () -> l.forward(x));
        assertMessage(e, "output row 0", "is 0.0", "positive finite norm");
        INDArray before = w.dup();
        assertThrows(IllegalStateException.class, l::merge);
        assertFalse(l.isMerged());
        assertBitwiseEquals(before, w, "W after a refused merge");
    }

    @Test
    void mergeWhoseResultOverflowsIsRefusedWithWUnchanged() {
        LoraLinear l = trained(DataType.FLOAT, 7);
        LoraAdapter a = l.adapter("default");
        INDArray huge = Nd4j.valueArrayOf(new long[] {6}, 3e38f, DataType.FLOAT);
        l.setAdapterWeights("default", a.a().dup(), a.b().dup(), huge);
        INDArray before = l.weight().dup();
        IllegalStateException e = assertThrows(IllegalStateException.class, l::merge);
        assertMessage(e, "non-finite", "W left unchanged");
        assertFalse(l.isMerged());
        assertBitwiseEquals(before, l.weight(), "W after the refused merge");
        assertThrows(IllegalStateException.class, l::mergedWeight);
    }

    @Test
    void embeddingsAndConvolutionsRefuseDoraByName() {
        LoraEmbedding emb = LoraEmbedding.base(gaussian(DataType.FLOAT, 1, 1, 10, 4));
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> emb.addAdapter("d", DORA));
        assertMessage(e, "DoRA", "LoraEmbedding", "useDora = false");
        assertEquals(List.of(), emb.adapterNames());
        LoraConv2d conv = LoraConv2d.base(gaussian(DataType.FLOAT, 2, 1, 3, 2, 3, 3), null, new int[] {1, 1},
                new int[] {0, 0});
        e = assertThrows(IllegalArgumentException.class, () -> conv.addAdapter("d", DORA));
        assertMessage(e, "DoRA", "LoraConv2d");
        assertEquals(List.of(), conv.adapterNames());
    }

    @Test
    void weightedCombinationsRefuseDoraAdapters() {
        LoraLinear l = trained(DataType.DOUBLE, 3);
        l.addAdapter("plain", LoraConfig.builder().rank(2).build());
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> l.addWeightedAdapter("sum", List.of("plain", "default"), new double[] {1, 1}));
        assertMessage(e, "'default' is DoRA", "plain LoRA");
        assertThrows(IllegalArgumentException.class,
                () -> l.addWeightedAdapterSvd("svd", List.of("default"), new double[] {1}, 2));
        assertEquals(List.of("default", "plain"), l.adapterNames());
    }

    @Test
    void mixedBatchesRefuseDoraRowsAndAllowTheOthers() {
        LoraLinear l = trained(DataType.DOUBLE, 4);
        l.addAdapter("plain", LoraConfig.builder().rank(2).build());
        INDArray x = gaussian(DataType.DOUBLE, 9, 1, 3, 5);
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> l.forward(x, new String[] {"plain", null, "default"}));
        assertMessage(e, "adapterPerRow[2]", "'default' is DoRA", "PEFT refuses them too");
        INDArray y = l.forward(x, new String[] {"plain", LoraLinear.BASE_MODEL, null});
        assertArrayEquals3(y.shape());
    }

    private static void assertArrayEquals3(long[] shape) {
        assertEquals(3, shape[0]);
        assertEquals(6, shape[1]);
    }

    @Test
    void magnitudeIsCheckedBeforeAnythingIsCopied() {
        LoraLinear l = trained(DataType.FLOAT, 5);
        LoraAdapter a = l.adapter("default");
        INDArray aBefore = a.a().dup();
        INDArray mBefore = a.magnitude().dup();
        INDArray newA = gaussian(DataType.FLOAT, 50, 1, 2, 5);
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> l.setAdapterWeights("default", newA, a.b().dup(), Nd4j.zeros(DataType.FLOAT, 1, 6)));
        assertMessage(e, "magnitude of DoRA adapter 'default'", "[6]", "[1, 6]");
        INDArray nan = mBefore.dup();
        nan.putScalar(3, Float.NaN);
        e = assertThrows(IllegalArgumentException.class, () -> l.setAdapterWeights("default", newA, a.b().dup(), nan));
        assertMessage(e, "finite");
        assertThrows(IllegalArgumentException.class,
                () -> l.setAdapterWeights("default", newA, a.b().dup(), mBefore.castTo(DataType.DOUBLE)));
        assertBitwiseEquals(aBefore, a.a(), "A after refusals");
        assertBitwiseEquals(mBefore, a.magnitude(), "m after refusals");

        l.addAdapter("plain", LoraConfig.builder().rank(2).build());
        e = assertThrows(IllegalArgumentException.class, () -> l.setAdapterWeights("plain",
                gaussian(DataType.FLOAT, 1, 1, 2, 5), gaussian(DataType.FLOAT, 2, 1, 6, 2), mBefore));
        assertMessage(e, "plain LoRA", "no magnitude");
        assertNull(l.adapter("plain").magnitude());
    }

    @Test
    void addingDoraWhileMergedIsRefused() {
        LoraLinear l = trained(DataType.DOUBLE, 6);
        l.merge();
        IllegalStateException e = assertThrows(IllegalStateException.class, () -> l.addAdapter("second", DORA));
        assertMessage(e, "adding a DoRA adapter", "merged", "unmerge() first");
        assertEquals(List.of("default"), l.adapterNames());
    }

    @Test
    void countsAndGradientsIncludeTheMagnitude() {
        LoraLinear l = trained(DataType.DOUBLE, 8);
        LoraAdapter a = l.adapter("default");
        assertEquals(2L * (5 + 6) + 6, a.parameterCount());
        assertEquals(2L * (5 + 6) + 6, l.trainableParameterCount());
        assertTrue(a.isDora());
        l.train();
        l.forward(gaussian(DataType.DOUBLE, 9, 1, 4, 5));
        l.backward(gaussian(DataType.DOUBLE, 10, 1, 4, 6));
        assertTrue(a.gradMagnitude().amaxNumber().doubleValue() > 0, "backward fills dL/dm");
        l.zeroGrad();
        assertEquals(0.0, a.gradMagnitude().amaxNumber().doubleValue(), "zeroGrad clears dL/dm");
    }
}
