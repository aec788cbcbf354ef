package io.github.lora4j;

import static io.github.lora4j.TestData.assertBitwiseEquals;
import static io.github.lora4j.TestData.gaussian;
import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;

import net.jqwik.api.Arbitraries;
import net.jqwik.api.Arbitrary;
import net.jqwik.api.ForAll;
import net.jqwik.api.Property;
import net.jqwik.api.Provide;
import net.jqwik.api.constraints.IntRange;
import org.junit.jupiter.api.Test;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;

/** {@link LoraConfig#initialWeights}: bitwise the A and B a wrapped layer draws, without building one. */
class LoraConfigInitialWeightsTest {

    @Provide
    Arbitrary<DataType> types() {
        return Arbitraries.of(DataType.FLOAT, DataType.DOUBLE);
    }

    @Property(tries = 40)
    void sameAsAWrappedLayer(@ForAll("types") DataType type, @ForAll LoraInit init,
            @ForAll @IntRange(min = 1, max = 9) int in, @ForAll @IntRange(min = 1, max = 9) int out,
            @ForAll @IntRange(min = 1, max = 12) int rank, @ForAll long seed, @ForAll boolean inOut) {
        // Ranks above min(in, out) too: legal, as in PEFT.
        LoraConfig config = LoraConfig.builder().rank(rank).alpha(2).init(init).seed(seed).build();
        WeightLayout layout = inOut ? WeightLayout.IN_OUT : WeightLayout.OUT_IN;
        INDArray w = inOut ? gaussian(type, 3, 1, in, out) : gaussian(type, 3, 1, out, in);
        LoraLinear layer = LoraLinear.wrap(w, null, config, layout);
        INDArray[] ab = config.initialWeights(in, out, type);
        assertBitwiseEquals(layer.loraA(LoraLinear.DEFAULT_ADAPTER), ab[0], "A");
        assertBitwiseEquals(layer.loraB(LoraLinear.DEFAULT_ADAPTER), ab[1], "B");
    }

    @Test
    void refusesWhatTheLayerRefuses() {
        LoraConfig r4 = LoraConfig.builder().rank(4).build();
        INDArray[] aboveMin = r4.initialWeights(3, 8, DataType.FLOAT);   // r = 4 > min(3, 8): accepted, as in PEFT
        assertArrayEquals(new long[] {4, 3}, aboveMin[0].shape(), "A [r, in]");
        assertArrayEquals(new long[] {8, 4}, aboveMin[1].shape(), "B [out, r]");
        LoraConfig huge = LoraConfig.builder().rank(1).alpha(1e39).build();
        assertThrows(IllegalArgumentException.class, () -> huge.initialWeights(3, 8, DataType.FLOAT), "s overflows");
        assertThrows(NullPointerException.class, () -> r4.initialWeights(8, 8, null));
    }
}
