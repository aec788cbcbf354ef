package io.github.lora4j.samediff;

import static io.github.lora4j.TestData.assertBitwiseEquals;
import static io.github.lora4j.TestData.gaussian;
import static io.github.lora4j.samediff.Graphs.IN;
import static io.github.lora4j.samediff.Graphs.weight;
import static org.junit.jupiter.api.Assertions.assertEquals;

import io.github.lora4j.LoraConfig;
import io.github.lora4j.samediff.Graphs.Kind;
import java.util.Map;
import net.jqwik.api.Arbitraries;
import net.jqwik.api.Arbitrary;
import net.jqwik.api.ForAll;
import net.jqwik.api.Property;
import net.jqwik.api.Provide;
import net.jqwik.api.constraints.IntRange;
import org.nd4j.autodiff.samediff.SameDiff;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;

/** Laws of {@link LoraSameDiff#apply} over graph kinds, data types, ranks and seeds. */
class LoraSameDiffPropertiesTest {

    @Provide
    Arbitrary<DataType> types() {
        return Arbitraries.of(DataType.FLOAT, DataType.DOUBLE);
    }

    private static LoraConfig config(int rank, long seed, boolean rsLora) {
        return LoraConfig.builder().rank(rank).alpha(2.0 * rank + 1).rsLora(rsLora).seed(seed).build();
    }

    @Property(tries = 24)
    void aFreshAdapterLeavesEveryOutputOfTheGraphBitForBit(@ForAll Kind kind, @ForAll("types") DataType type,
                                                           @ForAll @IntRange(min = 1, max = 5) int rank,
                                                           @ForAll @IntRange(min = 1, max = 9) int n,
                                                           @ForAll long seed, @ForAll boolean rsLora) {
        SameDiff sd = Graphs.build(kind, type, seed);
        INDArray x = gaussian(type, seed + 7, 1, n, IN);
        INDArray label = gaussian(type, seed + 8, 1, n, Graphs.OUT);
        Map<String, INDArray> feed = Map.of("x", x, "label", label);
        Map<String, INDArray> before = sd.output(feed, "fc0", "h", "fc1", "loss");
        LoraSameDiff.apply(sd, config(rank, seed, rsLora), "fc0", "fc1");
        Map<String, INDArray> after = sd.output(feed, "fc0", "h", "fc1", "loss");
        for (String out : before.keySet()) {
            assertBitwiseEquals(before.get(out), after.get(out), kind + " " + out);
        }
    }

    @Property(tries = 24)
    void mergeThenUnmergeRestoresEveryWeightBitwise(@ForAll Kind kind, @ForAll("types") DataType type,
                                                   @ForAll @IntRange(min = 1, max = 5) int rank,
                                                   @ForAll @IntRange(min = 1, max = 3) int cycles,
                                                   @ForAll long seed) {
        SameDiff sd = Graphs.build(kind, type, seed);
        LoraSameDiffModel lora = LoraSameDiff.apply(sd, config(rank, seed, false), "fc0", "fc1");
        Graphs.Snapshot applied = Graphs.snapshot(sd);
        for (int l = 0; l < 2; l++) {
            LoraSameDiffApplyTest.randomAdapter(sd, lora.adapter(weight(l)), seed + 10 * l);
        }
        INDArray w0 = sd.getArrForVarName(weight(0)).dup();
        INDArray w1 = sd.getArrForVarName(weight(1)).dup();
        for (int c = 0; c < cycles; c++) {
            lora.merge();
            lora.unmerge();
        }
        assertBitwiseEquals(w0, sd.getArrForVarName(weight(0)), "fc0 W");
        assertBitwiseEquals(w1, sd.getArrForVarName(weight(1)), "fc1 W");
        assertEquals(applied.variables(), Graphs.snapshot(sd).variables(), "A and B are trainable again");
        assertEquals(applied.ops(), Graphs.snapshot(sd).ops());
    }
}
