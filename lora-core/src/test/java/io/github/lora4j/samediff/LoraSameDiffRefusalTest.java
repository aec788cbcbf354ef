package io.github.lora4j.samediff;

import static io.github.lora4j.TestData.gaussian;
import static io.github.lora4j.samediff.Graphs.IN;
import static io.github.lora4j.samediff.LoraSameDiffApplyTest.CFG;
import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.github.lora4j.samediff.Graphs.Kind;
import java.util.List;
import java.util.function.Consumer;
import java.util.regex.Pattern;
import org.junit.jupiter.api.Test;
import org.nd4j.autodiff.samediff.SDVariable;
import org.nd4j.autodiff.samediff.SameDiff;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.factory.Nd4j;

/** What {@link LoraSameDiff#apply} refuses: each refusal names the problem and leaves variables, ops and arrays as they were. */
class LoraSameDiffRefusalTest {

    /** Runs {@code apply} on {@code sd}, expects a refusal whose message holds {@code expected}, and an unchanged graph. */
    private static void refused(SameDiff sd, Consumer<SameDiff> apply, String... expected) {
        Graphs.Snapshot before = Graphs.snapshot(sd);
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> apply.accept(sd));
        for (String part : expected) {
            assertTrue(e.getMessage().contains(part), "expected '" + part + "' in: " + e.getMessage());
        }
        assertEquals(before, Graphs.snapshot(sd), "the graph changed although apply was refused");
    }

    @Test
    void aWeightAlsoReadByANonMatmulOpIsRefused() {
        SameDiff sd = Graphs.build(Kind.MMUL, DataType.DOUBLE, 1);
        sd.getVariable("fc0/weight").norm2("weightNorm");          // e.g. a regulariser reads W too
        refused(sd, g -> LoraSameDiff.apply(g, CFG, "fc0"), "'fc0/weight' is used by op", "norm2",
                "mmul / matmul and linear (xw_plus_b) only");
    }

    @Test
    void aWeightUsedAsTheBiasOfLinearIsRefused() {
        SameDiff sd = SameDiff.create();
        SDVariable x = sd.placeHolder("x", DataType.DOUBLE, -1, IN);
        SDVariable w = sd.var("w", gaussian(DataType.DOUBLE, 2, 1, IN, 3));
        SDVariable b = sd.var("b", gaussian(DataType.DOUBLE, 3, 1, 1, 3));
        sd.nn().linear("y", x, w, b);
        sd.nn().linear("z", x, w, b);
        refused(sd, g -> LoraSameDiff.apply(g, CFG, "b"), "'b' is used by op", "bias");
    }

    @Test
    void aWeightThatIsNotTwoDimensionalIsRefusedEvenBesideAGoodOne() {
        SameDiff sd = Graphs.build(Kind.LINEAR, DataType.DOUBLE, 4);
        refused(sd, g -> LoraSameDiff.apply(g, CFG, "fc0/bias"), "'fc0/bias'", "expected a 2-D matrix", "[7]");
        refused(sd, g -> LoraSameDiff.apply(g, CFG, Pattern.compile("fc0/.*")), "'fc0/bias'", "expected a 2-D matrix");
    }

    @Test
    void aDataTypeMismatchIsRefused() {
        SameDiff halves = SameDiff.create();
        SDVariable xi = halves.placeHolder("x", DataType.FLOAT16, -1, IN);
        halves.mmul("y", xi, halves.constant("w", Nd4j.ones(DataType.FLOAT16, IN, 3)));
        refused(halves, g -> LoraSameDiff.apply(g, CFG, "w"), "'w'", "expected FLOAT or DOUBLE, got HALF");

        SameDiff mixed = Graphs.build(Kind.MMUL, DataType.DOUBLE, 5);
        SDVariable xf = mixed.placeHolder("xf", DataType.FLOAT, -1, IN);
        SDVariable wf = mixed.var("wf", gaussian(DataType.FLOAT, 6, 1, IN, 3));
        mixed.mmul("yf", xf, wf);
        mixed.mmul("bad", mixed.getVariable("x"), wf);              // DOUBLE x times FLOAT W
        refused(mixed, g -> LoraSameDiff.apply(g, CFG, "wf"), "'wf' is FLOAT", "'x' of type DOUBLE");
    }

    @Test
    void aNameMatchingNothingIsRefusedListingTheWeights() {
        SameDiff sd = Graphs.build(Kind.LINEAR, DataType.DOUBLE, 7);
        refused(sd, g -> LoraSameDiff.apply(g, CFG, "q_proj"), "target names [q_proj] matched no weight",
                "[fc0/weight, fc1/weight]");
        refused(sd, g -> LoraSameDiff.apply(g, CFG, Pattern.compile("weight")), "matched no weight");
        refused(sd, g -> LoraSameDiff.apply(g, CFG, " "), "must not be blank");
        refused(sd, g -> LoraSameDiff.apply(g, CFG), "at least one target");
    }

    @Test
    void aTakenNameAndABadKeepTrainableAreRefusedAndARankAboveMinInOutIsNot() {
        SameDiff wide = Graphs.build(Kind.MMUL, DataType.DOUBLE, 8);
        // fc1 is 7 -> 5: r = 6 is above min(in, out), legal as in PEFT
        LoraSameDiffModel six = LoraSameDiff.apply(wide, CFG.toBuilder().rank(6).build(), "fc1");
        assertArrayEquals(new long[] {6, Graphs.HIDDEN}, six.adapter("fc1/weight").currentA().shape());
        SameDiff sd = Graphs.build(Kind.MMUL, DataType.DOUBLE, 8);
        refused(sd, g -> LoraSameDiff.builder(CFG).targets("fc0").keepTrainable("fc0/weight").apply(g), "targeted weight");
        refused(sd, g -> LoraSameDiff.builder(CFG).targets("fc0").keepTrainable("nope").apply(g), "no such variable");
        sd.var("fc1/lora_A", gaussian(DataType.DOUBLE, 1, 1, 2, 2));     // a user's variable named like lora4j's
        refused(sd, g -> LoraSameDiff.apply(g, CFG, "fc1/weight"), "'fc1/lora_A'", "already exists");
        SameDiff other = Graphs.build(Kind.MMUL, DataType.DOUBLE, 8);
        other.constant("fc1/lora_dropped", gaussian(DataType.DOUBLE, 1, 1, 1));      // taken by the user
        refused(other, g -> LoraSameDiff.apply(g, CFG.toBuilder().dropout(0.1).build(), "fc1"),
                "'fc1/lora_dropped'", "LoRA dropout", "already exists");
    }

    /** Runs {@code apply} on {@code sd}, expects the refusal of a graph with adapters, and an unchanged graph. */
    private static void refusedAsAdapted(SameDiff sd, Consumer<SameDiff> apply, String modules) {
        Graphs.Snapshot before = Graphs.snapshot(sd);
        IllegalStateException e = assertThrows(IllegalStateException.class, () -> apply.accept(sd));
        assertTrue(e.getMessage().contains("already has LoRA adapters on " + modules)
                && e.getMessage().contains("apply every target in one call"), e.getMessage());
        assertEquals(before, Graphs.snapshot(sd), "the graph changed although apply was refused");
    }

    /**
     * Issue 29 item 13: a second apply froze the first adapter (its A and B became constants) and broke its unload,
     * and LoRA on an adapter's own A or B was accepted.
     */
    @Test
    void aSecondApplyOnOneGraphIsRefusedAndTheFirstAdaptersStayTrainableAndUnloadable() {
        SameDiff sd = Graphs.build(Kind.MMUL, DataType.DOUBLE, 20);
        Graphs.Snapshot original = Graphs.snapshot(sd);
        LoraSameDiffModel first = LoraSameDiff.apply(sd, CFG, "fc0");
        refusedAsAdapted(sd, g -> LoraSameDiff.apply(g, CFG, "fc1"), "[fc0]");
        refusedAsAdapted(sd, g -> LoraSameDiff.apply(g, CFG, "fc0/lora_A"), "[fc0]");
        refusedAsAdapted(sd, g -> LoraSameDiff.apply(g, CFG, Pattern.compile(".*lora_B")), "[fc0]");
        refusedAsAdapted(sd, g -> LoraSameDiff.builder(CFG).targets("fc1").apply(g), "[fc0]");
        assertEquals(List.of("fc0/lora_A", "fc0/lora_B"), first.trainableVariables(), "the first adapter still trains");
        // saved with the graph, the adapters are still there
        SameDiff loaded = Graphs.roundTrip(sd);
        refusedAsAdapted(loaded, g -> LoraSameDiff.apply(g, CFG, "fc1"), "[fc0]");

        first.unload();
        assertEquals(original, Graphs.snapshot(sd), "unload gives the graph apply was given");
        LoraSameDiffModel second = LoraSameDiff.apply(sd, CFG, "fc1");      // a graph without adapters again
        assertEquals(List.of("fc1/lora_A", "fc1/lora_B"), second.trainableVariables());
    }

    @Test
    void applyAfterALoraLinearLayerIsRefusedSinceItWouldFreezeThatLayersAdapter() {
        SameDiff sd = SameDiff.create();
        SDVariable x = sd.placeHolder("x", DataType.DOUBLE, -1, IN);
        LoraSameDiff.linear(sd, "q_proj", x, gaussian(DataType.DOUBLE, 21, 0.4, 6, IN), null, CFG);
        sd.mmul("head", sd.getVariable("q_proj"), sd.var("head/weight", gaussian(DataType.DOUBLE, 22, 0.4, 6, 3)));
        refusedAsAdapted(sd, g -> LoraSameDiff.apply(g, CFG, "head"), "[q_proj]");
    }

    @Test
    void aWeightReadAsOutInByOneOpAndInOutByAnotherIsRefused() {
        SameDiff sd = SameDiff.create();
        SDVariable x = sd.placeHolder("x", DataType.DOUBLE, -1, IN);
        SDVariable w = sd.var("square", gaussian(DataType.DOUBLE, 9, 1, IN, IN));
        sd.mmul("p", x, w, false, true, false);
        sd.mmul("q", x, w, false, false, false);
        refused(sd, g -> LoraSameDiff.apply(g, CFG, "square"), "used as [out, in] by op", "but as [in, out]",
                "one adapter cannot serve both");
    }
}
