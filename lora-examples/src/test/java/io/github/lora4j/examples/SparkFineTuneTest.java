package io.github.lora4j.examples;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.github.lora4j.examples.SparkFineTune.Config;
import io.github.lora4j.examples.SparkFineTune.Result;
import io.github.lora4j.spark.SparkFitReport;
import java.io.ByteArrayOutputStream;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.util.Locale;
import org.apache.spark.SparkConf;
import org.apache.spark.api.java.JavaSparkContext;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;

/** Runs the Spark example small, on local[2], with --verify, and checks what it reports. */
class SparkFineTuneTest {

    private static JavaSparkContext sc;
    private static Result result;
    private static String printed;

    @BeforeAll
    static void runSmall() {
        sc = new JavaSparkContext(new SparkConf().setMaster("local[2]").setAppName("SparkFineTuneTest")
                .set("spark.ui.enabled", "false").set("spark.driver.host", "127.0.0.1"));
        ByteArrayOutputStream buf = new ByteArrayOutputStream();
        result = SparkFineTune.run(Config.smoke().verified(), sc, new PrintStream(buf, true, StandardCharsets.UTF_8));
        printed = buf.toString(StandardCharsets.UTF_8);
    }

    @AfterAll
    static void stop() {
        sc.stop();
    }

    @Test
    void sparkFitRepairsTheShiftLikeFitDoes() {
        assertTrue(result.accuracyA() >= 0.85, "accuracy on A " + result.accuracyA());
        assertTrue(result.accuracyBBefore() <= result.accuracyA() - 0.3, "B before " + result.accuracyBBefore());
        assertTrue(result.accuracyBAfter() >= 0.80, "B after LoraSpark.fit " + result.accuracyBAfter());
    }

    @Test
    void verifyAgreesWithFitOnTheGlobalBatches() {
        assertTrue(result.verifyError() <= SparkFineTune.VERIFY_TOLERANCE, "relative error " + result.verifyError());
        assertTrue(result.frozenUnchanged(), "W and b bitwise unchanged");
    }

    @Test
    void stepsAndBytesFollowTheArithmetic() {
        SparkFitReport r = result.report();
        Config c = Config.smoke();
        int rows = c.model().data().trainB();
        int perPartition = rows / c.partitions();   // parallelize splits 100 DataSets of 10 rows evenly
        int steps = (perPartition + c.batchPerWorker() - 1) / c.batchPerWorker();
        assertEquals(steps * c.model().data().epochsB(), r.stepCount());
        assertEquals((long) rows * c.model().data().epochsB(), r.examples());
        long adapter = (long) c.model().rank() * ((16 + 64) + (64 + 64) + (64 + 8));  // r·(in + out), 3 layers
        assertEquals(adapter, r.trainableParameters());
        assertEquals(8 * adapter, r.bytesBroadcastPerStep(), "DOUBLE under --verify");
        assertEquals(8L * (16 * 64 + 64 + 64 * 64 + 64 + 64 * 8 + 8), r.fullFineTuneBytesPerStep());
    }

    @Test
    void printsTheFigures() {
        SparkFitReport r = result.report();
        assertTrue(printed.contains("Spark master local[2]: 2 partitions"), printed);
        assertTrue(printed.contains(String.format(Locale.ROOT, "%d steps, %,d examples", r.stepCount(),
                r.examples())), printed);
        assertTrue(printed.contains(String.format(Locale.ROOT, "A and B broadcast, %,d bytes",
                r.bytesBroadcastPerStep())), printed);
        assertTrue(printed.contains(String.format(Locale.ROOT, "full fine-tuning: %,d bytes each way",
                r.fullFineTuneBytesPerStep())), printed);
        assertTrue(printed.contains(String.format(Locale.ROOT, "Accuracy on B after LoraSpark.fit: %.3f",
                result.accuracyBAfter())), printed);
        assertTrue(printed.contains("PASS"), printed);
    }
}
