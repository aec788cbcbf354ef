package io.github.lora4j.samediff;

import static io.github.lora4j.TestData.gaussian;
import static io.github.lora4j.samediff.Graphs.IN;
import static io.github.lora4j.samediff.LoraSameDiffApplyTest.CFG;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.github.lora4j.samediff.Graphs.Kind;
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
    void aRankAboveMinInOutDropoutATakenNameAndABadKeepTrainableAreRefused() {
        SameDiff sd = Graphs.build(Kind.MMUL, DataType.DOUBLE, 8);
        refused(sd, g -> LoraSameDiff.apply(g, CFG.toBuilder().rank(6).build(), "fc1"), "'fc1/weight'", "rank");
        refused(sd, g -> LoraSameDiff.apply(g, CFG.toBuilder().dropout(0.1).build(), "fc1"), "expected dropout 0");
        refused(sd, g -> LoraSameDiff.builder(CFG).targets("fc0").keepTrainable("fc0/weight").apply(g), "targeted weight");
        refused(sd, g -> LoraSameDiff.builder(CFG).targets("fc0").keepTrainable("nope").apply(g), "no such variable");
        LoraSameDiff.apply(sd, CFG, "fc0");
        refused(sd, g -> LoraSameDiff.apply(g, CFG, "fc0/weight"), "'fc0/lora_A'", "already exists");
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
