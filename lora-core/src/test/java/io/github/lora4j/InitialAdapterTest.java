package io.github.lora4j;

import static io.github.lora4j.TestData.assertBitwiseEquals;
import static io.github.lora4j.TestData.gaussian;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;

import java.util.SplittableRandom;
import java.util.function.Supplier;
import net.jqwik.api.ForAll;
import net.jqwik.api.Property;
import org.junit.jupiter.api.Test;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;

/**
 * {@link InitialAdapter#of} is the adapter {@link LoraLinear#wrap} starts with, bit for bit, and refuses what wrap
 * refuses with wrap's message: the hosts (SameDiff, lora-dl4j) that draw their adapters through it start where an
 * eager layer over the same W starts, without building one.
 */
class InitialAdapterTest {

    @Property(tries = 60)
    void theInitialAdapterIsBitForBitTheOneWrapStartsWith(@ForAll long seed) {
        SplittableRandom rng = new SplittableRandom(seed);
        DataType type = rng.nextBoolean() ? DataType.FLOAT : DataType.DOUBLE;
        WeightLayout layout = rng.nextBoolean() ? WeightLayout.OUT_IN : WeightLayout.IN_OUT;
        long in = 1 + rng.nextInt(9);
        long out = 1 + rng.nextInt(9);
        INDArray w = layout == WeightLayout.OUT_IN ? gaussian(type, seed, 1, out, in) : gaussian(type, seed, 1, in, out);
        INDArray w0 = w.dup();
        INDArray bias = rng.nextBoolean() ? null : gaussian(type, seed + 1, 1, out);
        LoraConfig config = LoraConfig.builder().rank(1 + rng.nextInt(12)).alpha(1 + rng.nextInt(32))
                .rsLora(rng.nextBoolean()).useDora(rng.nextBoolean())
                .init(LoraInit.values()[rng.nextInt(LoraInit.values().length)]).seed(rng.nextLong()).build();

        InitialAdapter init = InitialAdapter.of(w, bias, layout, config);
        LoraAdapter expected = LoraLinear.wrap(w, bias, config, layout).adapter(LoraLinear.DEFAULT_ADAPTER);
        assertBitwiseEquals(expected.a(), init.a(), "A");
        assertBitwiseEquals(expected.b(), init.b(), "B");
        if (config.useDora()) {
            assertBitwiseEquals(expected.magnitude(), init.magnitude(), "DoRA magnitude");
        } else {
            assertNull(init.magnitude(), "plain LoRA has no magnitude");
        }
        assertBitwiseEquals(w0, w, "W only read");
    }

    @Test
    void refusesWhatWrapRefusesWithWrapsMessage() {
        LoraConfig lora = LoraConfig.builder().rank(2).build();
        LoraConfig dora = lora.toBuilder().useDora(true).build();
        INDArray w = gaussian(DataType.FLOAT, 1, 1, 3, 4);
        INDArray nan = w.dup().putScalar(1, Float.NaN);
        INDArray zeroRow = w.dup();
        zeroRow.getRow(2).assign(0);
        assertSameRefusal(() -> InitialAdapter.of(nan, null, WeightLayout.OUT_IN, lora),
                () -> LoraLinear.wrap(nan, null, lora, WeightLayout.OUT_IN));
        assertSameRefusal(() -> InitialAdapter.of(w.castTo(DataType.INT), null, WeightLayout.OUT_IN, lora),
                () -> LoraLinear.wrap(w.castTo(DataType.INT), null, lora, WeightLayout.OUT_IN));
        assertSameRefusal(() -> InitialAdapter.of(Nd4j.ones(DataType.FLOAT, 4), null, WeightLayout.OUT_IN, lora),
                () -> LoraLinear.wrap(Nd4j.ones(DataType.FLOAT, 4), null, lora, WeightLayout.OUT_IN));
        INDArray badBias = Nd4j.ones(DataType.FLOAT, 4);
        assertSameRefusal(() -> InitialAdapter.of(w, badBias, WeightLayout.OUT_IN, lora),
                () -> LoraLinear.wrap(w, badBias, lora, WeightLayout.OUT_IN));
        INDArray doubleBias = Nd4j.ones(DataType.DOUBLE, 3);
        assertSameRefusal(() -> InitialAdapter.of(w, doubleBias, WeightLayout.OUT_IN, lora),
                () -> LoraLinear.wrap(w, doubleBias, lora, WeightLayout.OUT_IN));
        assertSameRefusal(() -> InitialAdapter.of(zeroRow, null, WeightLayout.OUT_IN, dora),
                () -> LoraLinear.wrap(zeroRow, null, dora, WeightLayout.OUT_IN));
        // Row 2 of [out, in] is column 2 of [in, out].
        INDArray zeroCol = zeroRow.transpose().dup('c');
        assertSameRefusal(() -> InitialAdapter.of(zeroCol, null, WeightLayout.IN_OUT, dora),
                () -> LoraLinear.wrap(zeroCol, null, dora, WeightLayout.IN_OUT));
        LoraConfig huge = LoraConfig.builder().rank(1).alpha(1e300).build();
        assertSameRefusal(() -> InitialAdapter.of(w, null, WeightLayout.OUT_IN, huge),
                () -> LoraLinear.wrap(w, null, huge, WeightLayout.OUT_IN));
    }

    private static void assertSameRefusal(Supplier<?> actual, Supplier<?> expected) {
        RuntimeException want = assertThrows(RuntimeException.class, expected::get, "wrap refuses this");
        RuntimeException got = assertThrows(RuntimeException.class, actual::get, "so must InitialAdapter.of");
        assertEquals(want.getClass(), got.getClass(), "exception type");
        assertEquals(want.getMessage(), got.getMessage(), "message");
    }
}
