package io.github.lora4j.samediff;

import static io.github.lora4j.TestData.assertBitwiseEquals;
import static io.github.lora4j.samediff.Graphs.weight;
import static io.github.lora4j.samediff.LoraSameDiffApplyTest.CFG;
import static io.github.lora4j.samediff.LoraSameDiffApplyTest.adaptBoth;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertSame;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.github.lora4j.samediff.Graphs.Kind;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.function.Supplier;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.EnumSource;
import org.nd4j.autodiff.samediff.SameDiff;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;

/**
 * State checks of the SameDiff adapters: after unload every accessor of the removed LoRA variables refuses with the
 * same clear {@link IllegalStateException}; a failed model-wide merge rethrows the adapter's own exception and keeps
 * any rollback failure as suppressed; unload refuses, changing nothing, while an op outside the LoRA path reads one of
 * the variables it would remove.
 */
class LoraSameDiffStateChecksTest {

    private static void refusedAfterUnload(String what, Supplier<?> call) {
        IllegalStateException e = assertThrows(IllegalStateException.class, call::get, what + " after unload");
        assertTrue(e.getMessage().contains("unloaded from the graph"), what + ": expected the unload refusal, got: "
                + e.getMessage());
    }

    @ParameterizedTest
    @EnumSource(Kind.class)
    void everyAccessorOfTheRemovedVariablesRefusesAfterUnload(Kind kind) {
        SameDiff sd = Graphs.build(kind, DataType.FLOAT, 3);
        LoraSameDiffModel lora = LoraSameDiff.apply(sd, CFG, "fc0", "fc1");
        assertEquals((long) CFG.rank() * (Graphs.IN + Graphs.HIDDEN) + CFG.rank() * (Graphs.HIDDEN + Graphs.OUT),
                lora.adapterParameterCount(), "r(in + out) per adapted weight");
        LoraSameDiff a = lora.adapter(weight(0));
        lora.unload();
        refusedAfterUnload("currentA", a::currentA);
        refusedAfterUnload("currentB", a::currentB);
        refusedAfterUnload("loraA", a::loraA);
        refusedAfterUnload("loraB", a::loraB);
        refusedAfterUnload("scalingVariable", a::scalingVariable);
        refusedAfterUnload("adaptedOps", a::adaptedOps);
        refusedAfterUnload("adapterParameterCount", lora::adapterParameterCount);
        // What the graph still holds stays reachable.
        assertEquals(weight(0), a.weightName());
        assertSame(sd, lora.sameDiff());
    }

    @ParameterizedTest
    @EnumSource(Kind.class)
    void aFailedMergeRethrowsTheAdaptersOwnExceptionAndLeavesEveryWeightAsItWas(Kind kind) {
        SameDiff sd = Graphs.build(kind, DataType.DOUBLE, 20);
        LoraSameDiffModel lora = adaptBoth(sd, 21);
        INDArray w0 = sd.getArrForVarName(weight(0)).dup();
        INDArray w1 = sd.getArrForVarName(weight(1)).dup();
        sd.getArrForVarName(lora.adapter(weight(1)).loraB().name()).putScalar(0, Double.NaN);
        // The same failure, raised by the adapter alone: the model must rethrow it unchanged, not wrapped.
        IllegalStateException alone = assertThrows(IllegalStateException.class, () -> lora.adapter(weight(1)).merge());

        IllegalStateException e = assertThrows(IllegalStateException.class, lora::merge);
        assertEquals(alone.getMessage(), e.getMessage(), "the adapter's own exception");
        assertEquals(0, e.getSuppressed().length, "the rollback succeeded");
        assertFalse(lora.adapter(weight(0)).isMerged());
        assertBitwiseEquals(w0, sd.getArrForVarName(weight(0)), "fc0's W after the rollback");
        assertBitwiseEquals(w1, sd.getArrForVarName(weight(1)), "fc1's W was never changed");
        assertThrows(IllegalStateException.class, lora::mergeAndUnload);
        assertFalse(lora.isUnloaded(), "a failed mergeAndUnload unloads nothing");
    }

    /** Which LoRA variable a user op reads in {@link #anOpReadingALoraVariableStopsUnloadBeforeAnythingChanges}. */
    enum Read { A, B, SCALING, INTERMEDIATE }

    private static String loraVariable(SameDiff sd, LoraSameDiff a, Read read) {
        return switch (read) {
            case A -> a.loraA().name();
            case B -> a.loraB().name();
            case SCALING -> a.scalingVariable().name();
            // u = x·Aᵀ (or A·x): the output of the op that reads A
            case INTERMEDIATE -> sd.getOps().get(sd.getVariables().get(a.loraA().name()).getInputsForOp().get(0))
                    .getOutputsOfOp().get(0);
        };
    }

    @ParameterizedTest
    @EnumSource(Read.class)
    void anOpReadingALoraVariableStopsUnloadBeforeAnythingChanges(Read read) {
        for (Kind kind : Kind.values()) {
            SameDiff sd = Graphs.build(kind, DataType.DOUBLE, 30);
            LoraSameDiffModel lora = adaptBoth(sd, 31);
            lora.adapter(weight(0)).merge();        // a merged adapter too: unload must not unmerge-and-fail halfway
            String v = loraVariable(sd, lora.adapter(weight(1)), read);
            sd.getVariable(v).mul("probe", 2.0);
            String op = sd.getVariables().get("probe").getOutputOfOp();
            Graphs.Snapshot before = Graphs.snapshot(sd);

            IllegalStateException e = assertThrows(IllegalStateException.class, lora::unload, kind + " " + read);
            assertTrue(e.getMessage().contains("op '" + op + "'") && e.getMessage().contains("'" + v + "'")
                    && e.getMessage().contains("nothing was changed"), e.getMessage());
            assertEquals(before, Graphs.snapshot(sd), kind + " " + read + ": unload changed the graph");
            assertFalse(lora.isUnloaded());

            IllegalStateException m = assertThrows(IllegalStateException.class, lora::mergeAndUnload);
            assertEquals(e.getMessage(), m.getMessage(), "mergeAndUnload checks before it merges");
            assertEquals(before, Graphs.snapshot(sd), kind + " " + read + ": mergeAndUnload changed the graph");
            assertFalse(lora.adapter(weight(1)).isMerged(), "fc1 was not merged");
            assertTrue(lora.adapter(weight(0)).isMerged(), "fc0 is still merged");

            // Once the user's op is gone, unload goes through.
            sd.getOps().remove(op);
            sd.getVariables().get(v).getInputsForOp().remove(op);
            sd.getVariables().remove("probe");
            lora.unload();
            assertTrue(lora.isUnloaded());
        }
    }

    @Test
    void aLoraVariableUsedAsALossStopsUnload() {
        SameDiff sd = Graphs.build(Kind.MMUL, DataType.DOUBLE, 32);
        LoraSameDiffModel lora = adaptBoth(sd, 33);
        String b = loraVariable(sd, lora.adapter(weight(0)), Read.INTERMEDIATE);
        sd.addLossVariable(b);
        Graphs.Snapshot before = Graphs.snapshot(sd);
        IllegalStateException e = assertThrows(IllegalStateException.class, lora::unload);
        assertTrue(e.getMessage().contains("'" + b + "' is a loss variable"), e.getMessage());
        assertEquals(before, Graphs.snapshot(sd));
        assertFalse(lora.isUnloaded());
    }

    /** A merge step that records what it did, failing for the names in {@code failMerge} / {@code failUnmerge}. */
    private static final class Steps {
        final List<String> log = new ArrayList<>();
        final Map<String, RuntimeException> failMerge = new LinkedHashMap<>();
        final Map<String, RuntimeException> failUnmerge = new LinkedHashMap<>();

        void merge(String w) {
            if (failMerge.containsKey(w)) {
                throw failMerge.get(w);
            }
            log.add("merge " + w);
        }

        void unmerge(String w) {
            if (failUnmerge.containsKey(w)) {
                throw failUnmerge.get(w);
            }
            log.add("unmerge " + w);
        }
    }

    @Test
    void aRollbackFailureIsSuppressedOnTheOriginalAndTheRollbackGoesOn() {
        Steps s = new Steps();
        RuntimeException original = new IllegalStateException("cannot merge 'c'");
        RuntimeException rollback = new IllegalStateException("unmerge of 'b' broke");
        s.failMerge.put("c", original);
        s.failUnmerge.put("b", rollback);

        RuntimeException thrown = assertThrows(RuntimeException.class,
                () -> LoraSameDiffModel.allOrNothing(List.of("a", "b", "c", "d"), s::merge, s::unmerge, w -> w,
                        "merging", "unmerging", "merged"));
        assertSame(original, thrown, "the merge failure itself is thrown");
        assertEquals(1, thrown.getSuppressed().length);
        Throwable suppressed = thrown.getSuppressed()[0];
        assertSame(rollback, suppressed.getCause(), "the rollback failure is kept");
        assertTrue(suppressed.getMessage().contains("'b'") && suppressed.getMessage().contains("stays merged"),
                suppressed.getMessage());
        assertEquals(List.of("merge a", "merge b", "unmerge a"), s.log, "b's failure does not stop a's unmerge; d untouched");
    }

    @Test
    void aSuccessfulRollbackUnmergesInReverseAndAddsNothing() {
        Steps s = new Steps();
        RuntimeException original = new IllegalArgumentException("bad");
        s.failMerge.put("c", original);
        RuntimeException thrown = assertThrows(RuntimeException.class,
                () -> LoraSameDiffModel.allOrNothing(List.of("a", "b", "c"), s::merge, s::unmerge, w -> w,
                        "merging", "unmerging", "merged"));
        assertSame(original, thrown);
        assertEquals(0, thrown.getSuppressed().length);
        assertEquals(List.of("merge a", "merge b", "unmerge b", "unmerge a"), s.log);
    }
}
