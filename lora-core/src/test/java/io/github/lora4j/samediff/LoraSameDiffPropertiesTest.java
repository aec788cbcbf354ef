package io.github.lora4j.samediff;

import static io.github.lora4j.TestData.assertBitwiseEquals;
import static io.github.lora4j.TestData.gaussian;
import static io.github.lora4j.samediff.Graphs.IN;
import static io.github.lora4j.samediff.Graphs.weight;
import static io.github.lora4j.TestData.maxAbsDiff;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.github.lora4j.LoraConfig;
import io.github.lora4j.LoraLinear;
import io.github.lora4j.samediff.Graphs.Kind;
import java.util.List;
import java.util.Map;
import net.jqwik.api.Arbitraries;
import net.jqwik.api.Arbitrary;
import net.jqwik.api.ForAll;
import net.jqwik.api.Property;
import net.jqwik.api.Provide;
import net.jqwik.api.constraints.IntRange;
import net.jqwik.api.constraints.Size;
import org.nd4j.autodiff.samediff.SameDiff;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.dataset.DataSet;
import org.nd4j.linalg.ops.transforms.Transforms;

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
                                                           @ForAll @IntRange(min = 1, max = 9) int rank,   // fc1 has min(in, out) = 5
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
                                                   @ForAll @IntRange(min = 1, max = 9) int rank,   // fc1 has min(in, out) = 5
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

    /** The steps of {@link #anyCallSequenceAppliesTheAdapterOnceAndKeepsWWheneverNothingIsMerged}. */
    enum Action { NEW_ADAPTER, FIT, MERGE_ALL, UNMERGE_ALL, MERGE_FC0, UNMERGE_FC0 }

    /**
     * Actions over a reference model: whatever the sequence, the graph computes fc1(tanh(fc0(x))) with each adapter
     * applied exactly once (against LoraLinear layers over copies of the original weights), every W is bitwise the
     * original whenever nothing is merged, and a call refused in the wrong state changes nothing.
     */
    @Property(tries = 20)
    void anyCallSequenceAppliesTheAdapterOnceAndKeepsWWheneverNothingIsMerged(
            @ForAll Kind kind, @ForAll @Size(max = 10) List<Action> actions,
            @ForAll long seed) {
        SameDiff sd = Graphs.build(kind, DataType.DOUBLE, seed);
        INDArray x = gaussian(DataType.DOUBLE, seed + 1, 1, 6, IN);
        INDArray label = gaussian(DataType.DOUBLE, seed + 2, 1, 6, Graphs.OUT);
        DataSet data = new DataSet(x, label);
        LoraSameDiffModel lora = LoraSameDiff.apply(sd, config(2, seed, false), "fc0", "fc1");
        LoraSameDiff fc0 = lora.adapter(weight(0));
        LoraSameDiff fc1 = lora.adapter(weight(1));
        INDArray[] original = {sd.getArrForVarName(weight(0)).dup(), sd.getArrForVarName(weight(1)).dup()};
        int step = 0;
        for (Action action : actions) {
            step++;
            boolean legal = switch (action) {
                case NEW_ADAPTER -> true;
                case FIT -> !(fc0.isMerged() && fc1.isMerged());    // something is left to train
                case MERGE_ALL -> !fc0.isMerged() && !fc1.isMerged();
                case UNMERGE_ALL -> fc0.isMerged() && fc1.isMerged();
                case MERGE_FC0 -> !fc0.isMerged();
                case UNMERGE_FC0 -> fc0.isMerged();
            };
            Graphs.Snapshot before = Graphs.snapshot(sd);
            long drawn = seed + 100L * step;
            Runnable call = switch (action) {
                case NEW_ADAPTER -> () -> {               // as training would: only where the adapter is trainable
                    for (LoraSameDiff a : List.of(fc0, fc1)) {
                        if (!a.isMerged()) {
                            LoraSameDiffApplyTest.randomAdapter(sd, a, drawn + a.name().hashCode());
                        }
                    }
                };
                case FIT -> () -> sd.fit(data);
                case MERGE_ALL -> lora::merge;
                case UNMERGE_ALL -> lora::unmerge;
                case MERGE_FC0 -> fc0::merge;
                case UNMERGE_FC0 -> fc0::unmerge;
            };
            if (legal) {
                call.run();
            } else if (action != Action.FIT) {
                assertThrows(IllegalStateException.class, call::run, action + " at step " + step);
                assertEquals(before, Graphs.snapshot(sd), action + " was refused but changed the graph");
            }
            if (!fc0.isMerged() && !fc1.isMerged()) {
                assertBitwiseEquals(original[0], sd.getArrForVarName(weight(0)), "fc0 W after " + actions.subList(0, step));
                assertBitwiseEquals(original[1], sd.getArrForVarName(weight(1)), "fc1 W after " + actions.subList(0, step));
            }
            INDArray h = Transforms.tanh(reference(sd, fc0, original[0], "fc0/bias").forward(x));
            INDArray expected = reference(sd, fc1, original[1], "fc1/bias").forward(h);
            double d = maxAbsDiff(expected, Graphs.output(sd, x, "fc1"));
            assertTrue(d < 1e-10, "after " + actions.subList(0, step) + ": " + d);
        }
    }

    /** A LoraLinear over a copy of the original W with the graph's current A and B. */
    private static LoraLinear reference(SameDiff sd, LoraSameDiff a, INDArray w, String bias) {
        LoraLinear l = LoraLinear.wrap(w.dup(), sd.getArrForVarName(bias).dup().reshape(-1),
                a.config(), a.layout());
        l.setAdapterWeights(LoraLinear.DEFAULT_ADAPTER, a.currentA(), a.currentB());
        return l;
    }
}
