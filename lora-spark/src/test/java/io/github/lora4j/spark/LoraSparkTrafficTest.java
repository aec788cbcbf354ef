package io.github.lora4j.spark;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.ByteBuffer;
import java.nio.charset.StandardCharsets;
import java.util.List;
import org.apache.spark.api.java.JavaSparkContext;
import org.apache.spark.serializer.JavaSerializer;
import org.apache.spark.serializer.SerializerInstance;
import org.deeplearning4j.nn.conf.layers.FeedForwardLayer;
import org.deeplearning4j.nn.multilayer.MultiLayerNetwork;
import org.junit.jupiter.api.Test;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.learning.config.Sgd;
import scala.reflect.ClassTag$;

/** What travels: the bytes the report gives follow r·(in + out), match what Spark serialises, and no more. */
class LoraSparkTrafficTest {

    private final JavaSparkContext sc = SparkTests.sc();

    /** Σ r·(nIn + nOut) over the targeted layers "fc1" and "out", read from the base layers' shapes. */
    private static long adapterParameters(MultiLayerNetwork net) {
        long n = 0;
        for (int i : new int[] {0, 2}) {
            FeedForwardLayer l = (FeedForwardLayer) net.getLayer(i).conf().getLayer();
            n += (long) TestData.LORA.rank() * (l.getNIn() + l.getNOut());
        }
        return n;
    }

    @Test
    void bytesPerStepFollowTheRankArithmetic() {
        for (DataType type : List.of(DataType.DOUBLE, DataType.FLOAT)) {
            MultiLayerNetwork net = TestData.loraMln(type, new Sgd(0.1));
            long adapter = adapterParameters(net);
            assertEquals(2 * (6 + 10) + 2 * (10 + 3), adapter);  // r = 2: fc1 6→10, out 10→3
            long all = net.numParams();
            int bytes = type == DataType.DOUBLE ? 8 : 4;
            // partitions of 8 and 4 rows, b = 3: steps of 2, 2 and 1 contributing partitions
            SparkFitReport r = LoraSpark.fit(sc, net,
                    TestData.rdd(sc, TestData.partitions(type, new int[][] {{8}, {4}})), 3, 2);

            assertEquals(adapter, r.trainableParameters());
            assertEquals(all, r.networkParameters());
            assertEquals(bytes, r.elementBytes());
            assertEquals(adapter * bytes, r.bytesBroadcastPerStep());
            assertEquals(adapter * bytes, r.bytesAggregatedPerTask());
            assertEquals((all - adapter) * bytes, r.fullFineTuneBytesPerStep());
            assertEquals((double) adapter / (all - adapter), r.trafficRatio(), 1e-15);
            assertEquals(all * bytes + net.getLayerWiseConfigurations().toJson().getBytes(StandardCharsets.UTF_8)
                    .length, r.networkBroadcastBytes());
            int[] tasks = {2, 2, 1, 2, 2, 1};
            assertEquals(tasks.length, r.stepCount());
            for (int i = 0; i < tasks.length; i++) {
                StepStats s = r.steps().get(i);
                assertEquals(tasks[i], s.tasks(), "tasks of step " + i);
                assertEquals(adapter * bytes, s.bytesBroadcast());
                assertEquals(tasks[i] * adapter * bytes, s.bytesAggregated());
                assertEquals(i < 3 ? 0 : 1, s.epoch());
                assertEquals(i, s.iteration());
                assertEquals(new long[] {6, 4, 2}[i % 3], s.rows());  // 3 + 3, 3 + 1, 2 + 0
                assertTrue(s.wallNanos() >= s.jobNanos() && s.jobNanos() >= 0 && s.computeNanos() > 0);
            }
        }
    }

    @Test
    void theIssuesExampleIsFourTenthsOfAPercent() {
        // One 4096 × 4096 layer with bias, r = 8: 65,536 adapter parameters against 16,781,312 base ones.
        long adapter = 8L * (4096 + 4096);
        long base = 4096L * 4096 + 4096;
        SparkFitReport r = new SparkFitReport(1, 2, 32, adapter, base + adapter, 4, 0, false, List.of());
        assertEquals(262_144, r.bytesBroadcastPerStep());
        assertEquals(67_125_248, r.fullFineTuneBytesPerStep());
        assertEquals(0.0039, r.trafficRatio(), 0.00005);
    }

    @Test
    void whatSparkSerialisesIsThePayloadPlusASmallHeader() {
        MultiLayerNetwork net = TestData.loraMln(DataType.DOUBLE, new Sgd(0.1));
        NetworkAccess access = NetworkAccess.of(net);
        AdapterLayout layout = AdapterLayout.of(access);
        SerializerInstance ser = new JavaSerializer(sc.getConf()).newInstance();

        StepInput in = new StepInput(3, 7, 1, layout.readParams());
        long payload = layout.bytes();
        long inBytes = size(ser.serialize(in, ClassTag$.MODULE$.apply(StepInput.class)));
        assertTrue(inBytes >= payload && inBytes <= payload + 400,
                "a step's broadcast: " + inBytes + " bytes for a payload of " + payload);

        StepResult result = new StepResult(5, 1.5, layout.readParams(), 1000);
        long outBytes = size(ser.serialize(result, ClassTag$.MODULE$.apply(StepResult.class)));
        assertTrue(outBytes >= payload && outBytes <= payload + 400,
                "a task's result: " + outBytes + " bytes for a payload of " + payload);

        NetworkPayload network = NetworkPayload.of(access);
        long netBytes = size(ser.serialize(network, ClassTag$.MODULE$.apply(NetworkPayload.class)));
        assertTrue(netBytes >= network.bytes() && netBytes <= network.bytes() + 600,
                "the network's broadcast: " + netBytes + " bytes for a payload of " + network.bytes());
    }

    private static long size(ByteBuffer b) {
        return b.remaining();
    }

    @Test
    void rowsOfAParallelisedCollectionAreShuffledInPlaceOnceNotShippedEveryStep() {
        // 2 partitions of 1,500 rows (108 KB each with labels): their partition objects carry the rows
        List<List<org.nd4j.linalg.dataset.DataSet>> big = TestData.partitions(DataType.DOUBLE,
                new int[][] {{700, 800}, {1500}});
        MultiLayerNetwork spark = TestData.loraMln(DataType.DOUBLE, LoraSparkEquivalenceTest.adamByIteration());
        MultiLayerNetwork local = TestData.loraMln(DataType.DOUBLE, LoraSparkEquivalenceTest.adamByIteration());
        SparkFitReport r = LoraSpark.fit(sc, spark, TestData.rdd(sc, big), 500, 1);
        assertTrue(r.inputReshuffled(), "a parallelised collection's rows would travel with every task");
        // the shuffle keeps every row in its partition: still fit on the same global batches
        local.fit(new org.deeplearning4j.datasets.iterator.ExistingDataSetIterator(TestData.globalBatches(big, 500)));
        for (int i : new int[] {0, 2}) {
            for (String key : new String[] {"loraA", "loraB"}) {
                double err = Equivalence.relativeError(Equivalence.bits(spark.getLayer(i).getParam(key)),
                        Equivalence.bits(local.getLayer(i).getParam(key)));
                assertTrue(err <= Equivalence.TOLERANCE, i + " " + key + ": " + err);
            }
        }

        // rows made on the executors (as read from files): partitions of a few bytes, nothing to shuffle
        MultiLayerNetwork other = TestData.loraMln(DataType.DOUBLE, new Sgd(0.1));
        SparkFitReport light = LoraSpark.fit(sc, other, sc.parallelize(List.of(0, 1), 2)
                .map(p -> TestData.rows(DataType.DOUBLE, p, 1500)), 500, 1);
        assertTrue(!light.inputReshuffled());
        assertEquals(3, light.stepCount());
    }

    @Test
    void workersKeepTheirNetworksAcrossSteps() {
        MultiLayerNetwork net = TestData.loraMln(DataType.DOUBLE, new Sgd(0.1));
        long before = WorkerCache.builds();
        // 2 partitions of 12 rows, b = 2: 6 steps per epoch, 3 epochs, 36 tasks
        SparkFitReport r = LoraSpark.fit(sc, net,
                TestData.rdd(sc, TestData.partitions(DataType.DOUBLE, new int[][] {{12}, {6, 6}})), 2, 3);
        long built = WorkerCache.builds() - before;
        assertEquals(18, r.stepCount());
        assertTrue(built >= 1 && built <= 2, "local[2] runs at most 2 tasks at once, so at most 2 networks are "
                + "built for 36 tasks; built " + built);
    }
}
