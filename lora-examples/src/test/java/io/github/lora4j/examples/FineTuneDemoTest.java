package io.github.lora4j.examples;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.github.lora4j.examples.FineTuneDemo.Config;
import io.github.lora4j.examples.FineTuneDemo.MergeCheck;
import io.github.lora4j.examples.FineTuneDemo.Method;
import io.github.lora4j.examples.FineTuneDemo.Result;
import java.io.ByteArrayOutputStream;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.util.List;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;

/** Runs the fine-tuning demo small (deterministic seed, no progress bar) and checks what it reports. */
class FineTuneDemoTest {

    private static Result result;
    private static String printed;

    @BeforeAll
    static void runSmall() {
        ByteArrayOutputStream buf = new ByteArrayOutputStream();
        result = FineTuneDemo.run(Config.smoke(), new PrintStream(buf, true, StandardCharsets.UTF_8));
        printed = buf.toString(StandardCharsets.UTF_8);
    }

    @Test
    void pretrainedModelLearnsTaskA() {
        assertTrue(result.accuracyAPretrained() >= 0.85, "accuracy on A " + result.accuracyAPretrained());
    }

    @Test
    void shiftBreaksTheUnadaptedModelAndLoraRank8RepairsIt() {
        double none = result.method("no adaptation").accuracyB();
        double lora8 = result.method("LoRA r=8").accuracyB();
        assertTrue(lora8 - none >= 0.20, "LoRA r=8 " + lora8 + " vs no adaptation " + none);
        assertTrue(lora8 >= 0.80, "LoRA r=8 on B " + lora8);
    }

    @Test
    void loraRank8IsWithinAFewPointsOfFullFineTuning() {
        double full = result.method("full fine-tuning").accuracyB();
        double lora8 = result.method("LoRA r=8").accuracyB();
        assertTrue(Math.abs(full - lora8) <= 0.04, "full " + full + " vs LoRA r=8 " + lora8);
    }

    @Test
    void trainableParametersAreRankTimesInPlusOutSummedOverLayers() {
        long sumInOut = 0;
        long fullCount = 0;
        for (long[] s : result.layerShapes()) {
            sumInOut += s[0] + s[1];
            fullCount += s[0] * s[1] + s[1];
        }
        assertEquals(16 + 64 + 64 + 64 + 64 + 8, sumInOut);
        for (int r : Config.smoke().ranks()) {
            Method m = result.method("LoRA r=" + r);
            assertEquals(r * sumInOut, m.trainableParameters(), m.name());
            assertEquals(2 * r * sumInOut, m.optimizerState(), "Adam keeps two moments per trained parameter");
        }
        assertEquals(fullCount, result.method("full fine-tuning").trainableParameters());
        assertEquals(0, result.method("no adaptation").trainableParameters());
    }

    @Test
    void mergedModelPredictsExactlyWhatTheUnmergedOneDoes() {
        MergeCheck m = result.merge();
        assertEquals(8, m.rank());
        assertEquals(Config.smoke().test(), m.testPoints());
        assertEquals(0, m.argmaxMismatches());
        assertTrue(m.maxAbsLogitDiff() < 1e-4, "max |logit difference| " + m.maxAbsLogitDiff());
        assertTrue(m.weightsRestored(), "LoRA training and merge/unmerge cycles must leave every W bitwise the pre-trained one");
        assertEquals(Config.smoke().timingRepeats() + 1, m.mergeCycles());
    }

    @Test
    void printsTheComparison() {
        for (String s : List.of("no adaptation", "full fine-tuning", "LoRA r=1", "LoRA r=4", "LoRA r=8",
                "test predictions differ", "unmerged", "merged")) {
            assertTrue(printed.contains(s), "missing '" + s + "' in:\n" + printed);
        }
    }

    @Test
    void refusesARankTheLayersCannotHold() {
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> new Config(16, 64, 4, 2,
                10, 10, 10, 1, 1, 8, List.of(8), 90, 1, 1L, false));
        assertTrue(e.getMessage().contains("ranks") && e.getMessage().contains("1..4") && e.getMessage().contains("[8]"),
                e.getMessage());
    }
}
