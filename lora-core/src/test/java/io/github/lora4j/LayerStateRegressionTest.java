package io.github.lora4j;

import static io.github.lora4j.TestData.assertBitwiseEquals;
import static io.github.lora4j.TestData.gaussian;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.List;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.function.Executable;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;
import org.nd4j.linalg.indexing.NDArrayIndex;

/**
 * Regression tests for the layer-state defects found by attacking the library (issue 15: #3, #5, #6, #7, #8, #9,
 * #12), and for {@code backward(g, false)}. Each test is named for the behaviour that failed before the fix.
 */
class LayerStateRegressionTest {

    private static final DataType F = DataType.FLOAT;

    @AfterEach
    void backToTheDefaultRoute() {
        Kernels.forceFallback(false);
    }

    private static void assertRefused(Class<? extends Throwable> type, Executable call, String fragment) {
        Throwable e = assertThrows(type, call);
        assertTrue(e.getMessage().contains(fragment), "message '" + e.getMessage() + "' should contain '" + fragment + "'");
    }

    @Test
    void aTrainingForwardTakenWhileMergedDoesNotSurviveUnmerge() {
        LoraLinear l = TestData.trainedLayer(F, 1, 6, 5, LoraConfig.builder().rank(2).build(), true);
        l.merge();
        l.train();
        l.forward(gaussian(F, 2, 1, 3, 6));
        l.unmerge();
        assertRefused(IllegalStateException.class, () -> l.backward(gaussian(F, 3, 1, 3, 5)), "forward in training mode first");
        LoraAdapter ad = l.adapter("default");
        assertEquals(0.0, ad.gradA().amaxNumber().doubleValue(), "no gradient may have been added");
    }

    @Test
    void forwardIntoRefusesAnOutputThatAnOffsetViewInputLivesIn() {
        LoraLinear l = TestData.trainedLayer(F, 4, 4, 8, LoraConfig.builder().rank(2).build(), true);
        INDArray output = Nd4j.ones(F, 2, 8);
        INDArray input = output.reshape(4, 4).get(NDArrayIndex.interval(2, 4), NDArrayIndex.all());
        INDArray before = output.dup();
        assertRefused(IllegalArgumentException.class, () -> l.forwardInto(input, output), "share memory with the input");
        assertBitwiseEquals(before, output, "output after the refusal");
    }

    @Test
    void forwardIntoRefusesToOverwriteTheFrozenWeightTheBiasOrAnAdapter() {
        // W and B as plain (non-view) arrays, as a caller may hold them: exactly what forwardInto accepts as output.
        LoraLinear l = LoraLinear.wrap(gaussian(F, 5, 0.5, 4, 4).dup('c'), null, LoraConfig.builder().rank(4).build());
        l.setAdapterWeights("default", gaussian(F, 25, 0.5, 4, 4), gaussian(F, 26, 0.5, 4, 4));
        assertTrue(!l.weight().isView() && !l.loraB("default").isView(), "the attack needs non-view W and B");
        INDArray x = gaussian(F, 6, 1, 4, 4);
        INDArray w = l.weight().dup();
        INDArray b = l.loraB("default").dup();
        assertRefused(IllegalArgumentException.class, () -> l.forwardInto(x, l.weight()), "share memory with W");
        assertRefused(IllegalArgumentException.class, () -> l.forwardInto(x, l.loraB("default")),
                "B of adapter 'default'");
        INDArray biasOwner = Nd4j.zeros(F, 4, 4);
        LoraLinear withRowBias = LoraLinear.wrap(l.weight(), biasOwner.get(NDArrayIndex.point(3), NDArrayIndex.all()),
                LoraConfig.defaults().toBuilder().rank(2).build());
        assertRefused(IllegalArgumentException.class, () -> withRowBias.forwardInto(x, biasOwner), "the bias");
        assertBitwiseEquals(w, l.weight(), "W after the refusals");
        assertBitwiseEquals(b, l.loraB("default"), "B after the refusals");
        // A separate output of the same shape is fine.
        assertBitwiseEquals(l.forward(x), l.forwardInto(x, Nd4j.create(F, 4, 4)), "forwardInto into a fresh array");
    }

    @Test
    void aScalingThatOverflowsTheLayerTypeIsRefused() {
        LoraConfig huge = LoraConfig.builder().rank(2).alpha(1e39).build();
        assertRefused(IllegalArgumentException.class, () -> LoraLinear.wrap(Nd4j.zeros(F, 4, 4), null, huge),
                "not a finite FLOAT value");
        LoraLinear l = LoraLinear.wrap(Nd4j.zeros(F, 4, 4), null, LoraConfig.builder().rank(2).build());
        assertRefused(IllegalArgumentException.class, () -> l.addAdapter("huge", huge), "alpha = 1.0E39");
        assertEquals(List.of("default"), l.adapterNames());
        // In double the same scaling is finite, and a fresh adapter changes nothing.
        LoraLinear d = LoraLinear.wrap(Nd4j.zeros(DataType.DOUBLE, 4, 4), null, huge);
        assertEquals(0.0, d.forward(Nd4j.ones(DataType.DOUBLE, 1, 4)).amaxNumber().doubleValue());
    }

    @Test
    void aWeightedCombinationThatOverflowsTheLayerTypeIsRefusedAndAddsNothing() {
        LoraLinear l = TestData.trainedLayer(F, 7, 6, 5, LoraConfig.builder().rank(2).build(), false);
        assertRefused(IllegalArgumentException.class,
                () -> l.addWeightedAdapter("cat", List.of("default"), new double[] {1e77}), "not finite in FLOAT");
        assertRefused(IllegalArgumentException.class,
                () -> l.addWeightedAdapterSvd("svd", List.of("default"), new double[] {1e77}, 2), "not finite in FLOAT");
        assertEquals(List.of("default"), l.adapterNames());
    }

    @ParameterizedTest
    @ValueSource(booleans = {false, true})
    void fastMergeOfANonContiguousWeightViewMergesInsteadOfFailingInNd4j(boolean fallback) {
        Kernels.forceFallback(fallback);
        for (int step : new int[] {1, 2}) {
            // Columns [0, 2·6) of a wider array, every column or every other: W is a view with row stride 20.
            INDArray owner = gaussian(F, 8, 0.5, 5, 20);
            INDArray w = owner.get(NDArrayIndex.all(), NDArrayIndex.interval(0, step, 6 * step));
            INDArray ownerBefore = owner.dup();
            LoraLinear l = LoraLinear.wrap(w, null, LoraConfig.builder().rank(2).build());
            l.setAdapterWeights("default", gaussian(F, 9, 0.5, 2, 6), gaussian(F, 10, 0.5, 5, 2));
            INDArray x = gaussian(F, 11, 1, 3, 6);
            INDArray unmerged = l.forward(x);
            l.merge(MergeMode.FAST);
            MergeMode done = l.mergeMode();
            assertTrue(TestData.maxRelativeError(l.forward(x), unmerged, 1) < 1e-5, "merged forward, step " + step);
            l.unmerge();
            // The direct route's gemm writes a row-strided W in place; ND4J's does not, nor can any gemm write every
            // other column: there FAST falls back to EXACT, which restores W (and its owner) bitwise.
            assertEquals(step == 1 && !fallback ? MergeMode.FAST : MergeMode.EXACT, done, "mode, step " + step);
            if (done == MergeMode.EXACT) {
                assertBitwiseEquals(ownerBefore, owner, "W's owner after merge and unmerge, step " + step);
            }
            assertTrue(TestData.maxRelativeError(owner, ownerBefore, 1) < 1e-6, "W's owner restored, step " + step);
        }
    }

    @Test
    void anEmptyTrainingBatchDropsTheEarlierForwardSoBackwardIsRefused() {
        LoraLinear l = TestData.trainedLayer(F, 12, 6, 5, LoraConfig.builder().rank(2).build(), true).train();
        INDArray g = gaussian(F, 13, 1, 3, 5);
        l.forward(gaussian(F, 14, 1, 3, 6));
        assertEquals(0, l.forward(Nd4j.create(F, 0, 6)).rows());
        assertRefused(IllegalStateException.class, () -> l.backward(g), "forward in training mode first");
    }

    @Test
    void settingAnInactiveAdaptersWeightsKeepsTheActiveAdaptersForward() {
        LoraLinear l = TestData.trainedLayer(F, 15, 6, 5, LoraConfig.builder().rank(2).build(), true);
        l.addAdapter("other", LoraConfig.builder().rank(3).build());
        l.train();
        INDArray x = gaussian(F, 16, 1, 3, 6);
        INDArray g = gaussian(F, 17, 1, 3, 5);
        l.forward(x);
        l.setAdapterWeights("other", gaussian(F, 18, 1, 3, 6), gaussian(F, 19, 1, 5, 3));
        INDArray dx = l.backward(g);
        assertEquals(3, dx.rows());
        // Setting the active adapter's own weights does drop its forward.
        l.forward(x);
        l.setAdapterWeights("default", gaussian(F, 20, 1, 2, 6), gaussian(F, 21, 1, 5, 2));
        assertRefused(IllegalStateException.class, () -> l.backward(g), "forward in training mode first");
    }

    @Test
    void backwardWithoutInputGradientReturnsNullAndTheSameAdapterGradients() {
        LoraConfig cfg = LoraConfig.builder().rank(3).alpha(4).dropout(0.2).seed(3).build();
        LoraLinear with = TestData.trainedLayer(F, 22, 7, 6, cfg, true).train();
        LoraLinear without = TestData.trainedLayer(F, 22, 7, 6, cfg, true).train();
        INDArray x = gaussian(F, 23, 1, 4, 7);
        INDArray g = gaussian(F, 24, 1, 4, 6);
        with.forward(x);
        without.forward(x);
        assertEquals(4, with.backward(g, true).rows());
        assertNull(without.backward(g, false));
        assertBitwiseEquals(with.adapter("default").gradA(), without.adapter("default").gradA(), "dL/dA");
        assertBitwiseEquals(with.adapter("default").gradB(), without.adapter("default").gradB(), "dL/dB");
        assertRefused(IllegalStateException.class, () -> without.backward(g, false), "forward in training mode first");
    }
}
