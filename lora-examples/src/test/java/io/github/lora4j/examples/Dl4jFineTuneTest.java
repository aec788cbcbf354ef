package io.github.lora4j.examples;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.github.lora4j.examples.Dl4jFineTune.Config;
import io.github.lora4j.examples.Dl4jFineTune.Result;
import java.io.ByteArrayOutputStream;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.util.Locale;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;

/** Runs the DL4J example small and checks the numbers it reports. */
class Dl4jFineTuneTest {

    private static Result result;
    private static String printed;

    @BeforeAll
    static void runSmall() {
        ByteArrayOutputStream buf = new ByteArrayOutputStream();
        result = Dl4jFineTune.run(Config.smoke(), new PrintStream(buf, true, StandardCharsets.UTF_8));
        printed = buf.toString(StandardCharsets.UTF_8);
    }

    @Test
    void fitLearnsTaskAAndTheShiftBreaksIt() {
        assertTrue(result.accuracyA() >= 0.85, "accuracy on A " + result.accuracyA());
        assertTrue(result.accuracyBBefore() <= result.accuracyA() - 0.3,
                "B before adaptation " + result.accuracyBBefore() + " vs A " + result.accuracyA());
    }

    @Test
    void loraFitOnBRepairsTheShift() {
        assertTrue(result.accuracyBAfter() >= 0.80, "accuracy on B after LoRA " + result.accuracyBAfter());
        assertTrue(result.accuracyBAfter() - result.accuracyBBefore() >= 0.3,
                "B after " + result.accuracyBAfter() + " vs before " + result.accuracyBBefore());
    }

    @Test
    void parameterCountsAreRankTimesInPlusOutAndTheUpdaterHoldsTwoMomentsOfThose() {
        int r = Config.smoke().rank();
        long sumInOut = 0;
        long base = 0;
        for (long[] s : result.layerShapes()) {
            sumInOut += s[0] + s[1];
            base += s[0] * s[1] + s[1];
        }
        assertEquals(16 + 64 + 64 + 64 + 64 + 8, sumInOut, "layer shapes 16 → 64 → 64 → 8");
        assertEquals(r * sumInOut, result.trainableParameters(), "Σ r·(in + out)");
        assertEquals(base, result.baseParameters(), "base parameters: Σ in·out + out");
        assertEquals(base + r * sumInOut, result.totalParameters(), "LoRA network: base + adapters");
        assertEquals(2 * result.trainableParameters(), result.updaterState(), "Adam: m and v per trainable parameter");
    }

    @Test
    void frozenWeightsStayAndTheUnloadedNetworkPredictsTheSame() {
        assertTrue(result.frozenUnchanged(), "W and b bitwise unchanged by fit()");
        assertEquals(0, result.predictionMismatches(), "predicted classes of the plain network vs the LoRA one");
        assertTrue(result.maxProbabilityDiff() < 1e-4, "max |Δp| " + result.maxProbabilityDiff());
    }

    @Test
    void printsTheFigures() {
        assertTrue(printed.contains(String.format(Locale.ROOT, "accuracy on B: %.3f", result.accuracyBAfter())), printed);
        assertTrue(printed.contains(String.format(Locale.ROOT, "trainable params: %,d of %,d",
                result.trainableParameters(), result.totalParameters())), printed);
        assertTrue(printed.contains("0 of 1000 predictions differ"), printed);
    }
}
