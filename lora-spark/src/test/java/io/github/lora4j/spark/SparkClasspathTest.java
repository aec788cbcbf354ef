package io.github.lora4j.spark;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;

import com.fasterxml.jackson.core.Version;
import io.github.lora4j.dl4j.LoraDl4j;
import java.nio.file.Path;
import org.apache.spark.api.java.JavaSparkContext;
import org.deeplearning4j.nn.multilayer.MultiLayerNetwork;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.learning.config.Adam;

/**
 * The class path a Spark application runs on: Spark's Jackson 2.15 (its jackson-module-scala refuses any other
 * minor version), on which lora-core's own JSON (PEFT adapter files) must work too.
 */
class SparkClasspathTest {

    private final JavaSparkContext sc = SparkTests.sc();

    @Test
    void jacksonIsSparksMinorVersion() {
        Version databind = com.fasterxml.jackson.databind.cfg.PackageVersion.VERSION;
        Version core = com.fasterxml.jackson.core.json.PackageVersion.VERSION;
        assertEquals("2.15", databind.getMajorVersion() + "." + databind.getMinorVersion(), databind.toString());
        assertEquals(databind.toString(), core.toString(), "jackson-core and jackson-databind aligned");
    }

    @Test
    void anAdapterTrainedOnSparkSavesAndLoadsAsPeftFilesOnSparksJackson(@TempDir Path dir) throws Exception {
        MultiLayerNetwork net = TestData.loraMln(DataType.DOUBLE, new Adam(0.05));
        LoraSpark.fit(sc, net, TestData.rdd(sc, TestData.partitions(DataType.DOUBLE, new int[][] {{5}, {4}})), 2, 2);
        LoraDl4j.saveAdapter(net, dir);

        MultiLayerNetwork fresh = TestData.loraMln(DataType.DOUBLE, new Adam(0.05));
        LoraDl4j.loadAdapter(fresh, dir);
        for (int i : new int[] {0, 2}) {
            for (String key : new String[] {"loraA", "loraB"}) {
                // a DOUBLE network's adapter is saved as F64: it reloads bit for bit
                double[] expected = Equivalence.bits(net.getLayer(i).getParam(key));
                assertArrayEquals(expected, Equivalence.bits(fresh.getLayer(i).getParam(key)), 0.0,
                        "layer " + i + " " + key);
            }
        }
    }
}
