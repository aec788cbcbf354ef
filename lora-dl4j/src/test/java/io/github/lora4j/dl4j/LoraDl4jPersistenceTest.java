package io.github.lora4j.dl4j;

import static io.github.lora4j.dl4j.Bits.assertBitwise;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertInstanceOf;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.github.lora4j.LoraConfig;
import io.github.lora4j.io.PeftAdapter;
import io.github.lora4j.io.PeftAdapterConfig;
import io.github.lora4j.io.PeftAdapterFiles;
import java.io.File;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import org.deeplearning4j.nn.graph.ComputationGraph;
import org.deeplearning4j.nn.multilayer.MultiLayerNetwork;
import org.deeplearning4j.util.ModelSerializer;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.dataset.DataSet;
import org.nd4j.linalg.learning.config.Adam;

/** ModelSerializer round trips and PEFT adapter files of LoRA networks. */
class LoraDl4jPersistenceTest {

    private static final LoraConfig CONFIG = LoraConfig.builder().rank(2).alpha(4).build();

    @TempDir
    Path tmp;

    private static MultiLayerNetwork trainedLora() {
        MultiLayerNetwork lora = LoraDl4j.apply(Nets.mln(DataType.FLOAT, new Adam(0.01), 7), CONFIG, "layer0", "layer2");
        lora.fit(Nets.task(DataType.FLOAT, 5, 6, 64));
        return lora;
    }

    @Test
    void modelSerializerRoundTripsALoraNetworkWithItsUpdaterState() throws IOException {
        MultiLayerNetwork lora = trainedLora();
        File file = tmp.resolve("lora.zip").toFile();
        ModelSerializer.writeModel(lora, file, true);

        MultiLayerNetwork restored = ModelSerializer.restoreMultiLayerNetwork(file, true);

        assertEquals(lora.getLayerWiseConfigurations(), restored.getLayerWiseConfigurations(), "configuration");
        assertInstanceOf(LoraDenseLayerImpl.class, restored.getLayer(0));
        assertBitwise(lora.params(), restored.params(), "parameters");
        assertBitwise(lora.getUpdater().getStateViewArray(), restored.getUpdater().getStateViewArray(), "updater");
        DataSet data = Nets.task(DataType.FLOAT, 5, 7, 32);
        assertBitwise(lora.output(data.getFeatures()), restored.output(data.getFeatures()), "outputs");
        // Both continue training identically, and W stays frozen in the restored one too.
        INDArray w = restored.getLayer(0).paramTable().get("W").dup();
        lora.fit(data);
        restored.fit(data);
        assertBitwise(lora.params(), restored.params(), "parameters after one more step each");
        assertBitwise(w, restored.getLayer(0).paramTable().get("W"), "restored W after fit");
    }

    @Test
    void aMergedNetworkRestoresMergedAndUnmergesBySubtraction() throws IOException {
        MultiLayerNetwork lora = trainedLora();
        DataSet data = Nets.task(DataType.FLOAT, 5, 7, 32);
        INDArray unmergedOut = lora.output(data.getFeatures());
        INDArray w = lora.getLayer(0).paramTable().get("W").dup();
        LoraDl4j.merge(lora);
        File file = tmp.resolve("merged.zip").toFile();
        ModelSerializer.writeModel(lora, file, false);

        MultiLayerNetwork restored = ModelSerializer.restoreMultiLayerNetwork(file, false);

        assertTrue(LoraDl4j.isMerged(restored), "merged state is saved with the configuration");
        assertBitwise(lora.output(data.getFeatures()), restored.output(data.getFeatures()), "merged outputs");
        LoraDl4j.unmerge(restored);
        assertTrue(w.equalsWithEps(restored.getLayer(0).paramTable().get("W"), 1e-6), "W after unmerge");
        assertTrue(unmergedOut.equalsWithEps(restored.output(data.getFeatures()), 1e-5), "outputs after unmerge");
    }

    @Test
    void computationGraphRoundTripsThroughModelSerializer() throws IOException {
        ComputationGraph lora = LoraDl4j.apply(Nets.graph(DataType.FLOAT, new Adam(0.01), 3), CONFIG, "fc1", "out");
        DataSet data = Nets.task(DataType.FLOAT, 5, 6, 64);
        lora.fit(data);
        File file = tmp.resolve("graph.zip").toFile();
        ModelSerializer.writeModel(lora, file, true);

        ComputationGraph restored = ModelSerializer.restoreComputationGraph(file, true);

        assertBitwise(lora.params(), restored.params(), "parameters");
        assertBitwise(lora.getUpdater().getStateViewArray(), restored.getUpdater().getStateViewArray(), "updater");
        assertBitwise(lora.outputSingle(data.getFeatures()), restored.outputSingle(data.getFeatures()), "outputs");
    }

    @Test
    void saveAdapterWritesPeftFilesNamedByLayerAndLoadAdapterRestoresTheOutputs() throws IOException {
        MultiLayerNetwork lora = trainedLora();
        Path dir = tmp.resolve("adapter");
        LoraDl4j.saveAdapter(lora, dir);

        PeftAdapter file = PeftAdapterFiles.read(dir);
        assertEquals(List.of("layer0", "layer2"), file.modules());
        assertEquals(2, file.config().r());
        assertTrue(file.config().fanInFanOut(), "DL4J stores W [nIn, nOut]: fan_in_fan_out");
        assertBitwise(lora.getLayer(0).paramTable().get("loraA"), file.a("layer0"), "lora_A of layer0 [r, nIn]");
        assertBitwise(lora.getLayer(2).paramTable().get("loraB"), file.b("layer2"), "lora_B of layer2 [nOut, r]");

        MultiLayerNetwork fresh = LoraDl4j.apply(Nets.mln(DataType.FLOAT, new Adam(0.01), 7), CONFIG, "layer0", "layer2");
        PeftAdapterConfig cfg = LoraDl4j.loadAdapter(fresh, dir);

        assertEquals(4.0, cfg.loraAlpha());
        DataSet data = Nets.task(DataType.FLOAT, 5, 7, 32);
        assertBitwise(lora.output(data.getFeatures()), fresh.output(data.getFeatures()), "outputs after load");
    }

    @Test
    void loadAdapterRefusesAFileForOtherLayersOrRankAndChangesNothing() throws IOException {
        MultiLayerNetwork lora = trainedLora();
        Path dir = tmp.resolve("adapter");
        LoraDl4j.saveAdapter(lora, dir);

        MultiLayerNetwork otherLayers = LoraDl4j.apply(Nets.mln(DataType.FLOAT, new Adam(0.01), 7), CONFIG, "layer1");
        INDArray before = otherLayers.params().dup();
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> LoraDl4j.loadAdapter(otherLayers, dir));
        assertTrue(e.getMessage().contains("[layer1]") && e.getMessage().contains("[layer0, layer2]"), e.getMessage());
        assertBitwise(before, otherLayers.params(), "parameters after a refused load");

        MultiLayerNetwork otherRank = LoraDl4j.apply(Nets.mln(DataType.FLOAT, new Adam(0.01), 7),
                CONFIG.toBuilder().rank(3).build(), "layer0", "layer2");
        INDArray before3 = otherRank.params().dup();
        e = assertThrows(IllegalArgumentException.class, () -> LoraDl4j.loadAdapter(otherRank, dir));
        assertTrue(e.getMessage().contains("expected r 3") && e.getMessage().contains("got r 2"), e.getMessage());
        assertBitwise(before3, otherRank.params(), "parameters after a refused load");
        assertTrue(Files.exists(dir.resolve(PeftAdapterFiles.MODEL_FILE)));
    }
}
