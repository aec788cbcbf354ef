package io.github.lora4j;

import static io.github.lora4j.TestData.assertBitwiseEquals;
import static io.github.lora4j.TestData.gaussian;
import static io.github.lora4j.TestData.normwiseRelativeError;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertSame;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.function.Function;
import java.util.stream.Stream;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.Arguments;
import org.junit.jupiter.params.provider.MethodSource;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;

/**
 * PEFT's {@code fan_in_fan_out}: a weight stored {@code [in, out]} (DL4J's DenseLayer keeps it f-order, GPT-2's
 * Conv1D c-order) behaves exactly like the {@code [out, in]} layer with {@code W^T}, and is used in place: merge
 * writes the caller's own array (no copy is ever made), and unmerge restores it bitwise.
 */
class FanInFanOutTest {

    private static final int IN = 12;
    private static final int OUT = 7;
    private static final LoraConfig CFG = LoraConfig.builder().rank(3).alpha(6).build();

    /** Ways an [in, out] weight arrives: c-order, f-order (DL4J's DenseLayer), a transposed view of an [out, in] array. */
    static Stream<Arguments> layouts() {
        return Stream.of(
                Arguments.of("c-order [in, out]", (Function<INDArray, INDArray>) w -> w.transpose().dup('c')),
                Arguments.of("f-order [in, out]", (Function<INDArray, INDArray>) w -> w.transpose().dup('f')),
                Arguments.of("transposed view", (Function<INDArray, INDArray>) w -> w.dup('c').transpose()));
    }

    private static LoraLinear adapted(INDArray w, INDArray b, WeightLayout layout, INDArray a, INDArray bb) {
        LoraLinear l = LoraLinear.wrap(w, b, CFG, layout);
        l.setAdapterWeights("default", a, bb);
        return l;
    }

    @ParameterizedTest(name = "{0}")
    @MethodSource("layouts")
    void inOutGivesTheSameOutputsAndGradientsAsOutInWithTheTranspose(String kind, Function<INDArray, INDArray> make) {
        INDArray wOutIn = gaussian(DataType.DOUBLE, 1, 0.5, OUT, IN);
        INDArray bias = gaussian(DataType.DOUBLE, 2, 0.5, OUT);
        INDArray a = gaussian(DataType.DOUBLE, 3, 0.5, 3, IN);
        INDArray bb = gaussian(DataType.DOUBLE, 4, 0.5, OUT, 3);
        INDArray wInOut = make.apply(wOutIn);
        assertEquals(IN, wInOut.rows(), kind);
        LoraLinear ref = adapted(wOutIn, bias.dup(), WeightLayout.OUT_IN, a, bb).train();
        LoraLinear fifo = adapted(wInOut, bias.dup(), WeightLayout.IN_OUT, a, bb).train();
        assertSame(wInOut, fifo.weight(), "the layer keeps the caller's array");
        assertEquals(IN, fifo.inFeatures());
        assertEquals(OUT, fifo.outFeatures());

        INDArray x = gaussian(DataType.DOUBLE, 5, 1, 2, 5, IN);
        INDArray g = gaussian(DataType.DOUBLE, 6, 1, 2, 5, OUT);
        INDArray yRef = ref.forward(x);
        INDArray yFifo = fifo.forward(x);
        assertTrue(normwiseRelativeError(yFifo, yRef) < 1e-14, kind + ": outputs");
        INDArray dxRef = ref.backward(g);
        INDArray dxFifo = fifo.backward(g);
        assertTrue(normwiseRelativeError(dxFifo, dxRef) < 1e-14, kind + ": dL/dx");
        assertTrue(normwiseRelativeError(fifo.adapter("default").gradA(), ref.adapter("default").gradA()) < 1e-14, kind + ": dA");
        assertTrue(normwiseRelativeError(fifo.adapter("default").gradB(), ref.adapter("default").gradB()) < 1e-14, kind + ": dB");
    }

    @ParameterizedTest(name = "{0}")
    @MethodSource("layouts")
    void mergeWritesTheCallersInOutArrayInPlaceAndUnmergeRestoresItBitwise(String kind, Function<INDArray, INDArray> make) {
        INDArray wOutIn = gaussian(DataType.FLOAT, 11, 0.5, OUT, IN);
        INDArray a = gaussian(DataType.FLOAT, 13, 0.5, 3, IN);
        INDArray bb = gaussian(DataType.FLOAT, 14, 0.5, OUT, 3);
        INDArray wInOut = make.apply(wOutIn);
        INDArray original = wInOut.dup();
        LoraLinear ref = adapted(wOutIn.dup(), null, WeightLayout.OUT_IN, a, bb);
        LoraLinear fifo = adapted(wInOut, null, WeightLayout.IN_OUT, a, bb);
        INDArray x = gaussian(DataType.FLOAT, 15, 1, 4, IN);
        INDArray before = fifo.forward(x);

        fifo.merge();
        assertSame(wInOut, fifo.weight(), kind + ": still the caller's array");
        assertFalse(java.util.Arrays.equals(TestData.bits(original), TestData.bits(wInOut)),
                kind + ": merge changed the caller's array itself, so no copy was merged");
        // the merged [in, out] array is the transpose of the [out, in] layer's merged weight
        assertTrue(normwiseRelativeError(wInOut, ref.mergedWeight().transpose()) < 1e-6, kind + ": W^T + s·(BA)^T");
        assertTrue(normwiseRelativeError(fifo.forward(x), before) < 1e-5, kind + ": merged output");

        for (int i = 0; i < 50; i++) {
            fifo.unmerge();
            fifo.merge();
        }
        fifo.unmerge();
        assertBitwiseEquals(original, wInOut, kind + ": W after 51 exact merge/unmerge cycles");
    }

    @org.junit.jupiter.api.Test
    void aTransposedViewIsMergedThroughToTheArrayItViews() {
        INDArray wOutIn = gaussian(DataType.FLOAT, 21, 0.5, OUT, IN);
        INDArray original = wOutIn.dup();
        LoraLinear fifo = adapted(wOutIn.transpose(), null, WeightLayout.IN_OUT,
                gaussian(DataType.FLOAT, 22, 0.5, 3, IN), gaussian(DataType.FLOAT, 23, 0.5, OUT, 3));
        fifo.merge();
        // the view shares W's buffer: the [out, in] original now holds the merged weight
        assertTrue(normwiseRelativeError(wOutIn, fifo.weight().transpose()) == 0.0);
        assertFalse(java.util.Arrays.equals(TestData.bits(original), TestData.bits(wOutIn)));
        fifo.unmerge();
        assertBitwiseEquals(original, wOutIn, "the viewed array after unmerge");
    }
}
